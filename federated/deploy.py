"""A local Flower federation for the deployment engine: one SuperLink and one SuperNode per
supplier as separate processes on 127.0.0.1, with TLS and SuperNode authentication.

What it sets up (Flower 1.41):

- a throw-away CA and a server certificate for 127.0.0.1/localhost (``cryptography``); the
  SuperLink serves its Fleet, Control and Runtime APIs (all HTTPS in 1.41, one port) with it,
  and every SuperNode and the ``flwr`` CLI verify it (``--root-certificates``).
- an EC P-384 key pair per SuperNode in OpenSSH format; the SuperLink runs with
  ``--enable-supernode-auth`` and each public key is registered through the Control API
  (``flwr supernode register``), which also tells us the node id of each supplier.
- each SuperNode gets only its supplier's partition directory as node config ``data-path`` and
  its own ``--port`` for its local Runtime API (two on one host would collide otherwise).
- a FAB source directory holding ``pyproject.toml`` (with this run's settings as the app's run
  config, so no overrides are needed) and the modules the ServerApp/ClientApp import.
- ``--disable-runtime-dependency-installation``: otherwise the SuperLink's executor would try to
  ``uv sync`` the app's dependencies (and fetch a CUDA torch) before every app process.

Speed: a round took ~36 s with Flower's defaults on this project's 2-core machine, and it was
process churn and polling, not training. Every message to a SuperNode started a new
``flwr-clientapp`` program (python + flwr + torch imports, and torch.optim's lazy import of
torch._dynamo: ~5 CPU-s), SuperExec polls for tasks every 1 s, the ServerApp's HTTP grid sleeps
3 s between reply pulls, and an idle SuperNode pulls every 3 s (hard-coded in 1.41). What we do:

- each SuperNode runs with ``--isolation process`` beside its own long-lived SuperExec
  (:mod:`federated.superexec_main`: Flower's SuperExec with an executor that forks each
  ClientApp task from a process that imported flwr and torch once); the two share a
  ``--superexec-auth-secret-file`` so no other local process can take the node's tasks;
- ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.05``; replies pulled every 50 ms
  (:class:`federated.server_app.PollingGrid`); one message per round (no federated evaluation);
- the SuperNode's idle poll and its check for the ClientApp's reply, which have no setting in
  1.41, shortened by a thin wrapper around the stock entry point
  (:mod:`federated.supernode_main`, ``node_poll`` and ``reply_poll``);
- object pulls that arrive before the objects do (a task asking for its message, a SuperNode
  for the message's objects, the ServerApp for a reply) retry after 20 ms instead of 1 s
  (:mod:`federated.flower_tuning`).

A round with 3 SuperNodes now takes ~1.3-1.8 s (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Modules the Flower apps import; copied into the FAB (the launcher-only modules are not).
APP_MODULES = (
    "__init__.py",
    "config.py",
    "data.py",
    "model.py",
    "client_app.py",
    "shamir.py",
    "secagg_primitives.py",
    "server_app.py",
    "secagg.py",
    "secagg_ahead.py",
    "flower_tuning.py",
    "privacy.py",  # server_app: the reading of ε, sample-level ε
)
CONNECTION = "qledger-local"


class DeployError(RuntimeError):
    pass


def _bin(name: str) -> str:
    """A Flower executable of this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise DeployError(f"{name} not found beside {sys.executable}; is flwr installed here?")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_tls(directory: Path) -> dict[str, Path]:
    """A CA and a CA-signed server certificate for 127.0.0.1 / localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qledger local FL CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths["key"], key)
    return paths


def make_node_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format (what SuperNode authentication reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / f"{name}.key"
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def write_app(directory: Path, run_config: Mapping[str, Any]) -> Path:
    """The FAB source: pyproject.toml (components + this run's config) and the app modules."""
    package = Path(__file__).resolve().parent
    target = directory / "federated"
    target.mkdir(parents=True, exist_ok=True)
    for name in APP_MODULES:
        shutil.copy2(package / name, target / name)
    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "qledger-fl",
            "version": "0.1.0",
            "description": "qledger federated defect model (ServerApp = OEM, ClientApp = supplier)",
            "license": "Apache-2.0",
            # Informational: runtime dependency installation is disabled, the SuperLink's and
            # SuperNodes' environment provides these.
            "dependencies": ["flwr[simulation,dp]==1.41.0", "torch==2.13.0", "numpy", "eth-hash"],
        },
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["federated"]}}}},
            "flwr": {
                "app": {
                    "publisher": "qledger",
                    "components": {
                        "serverapp": "federated.server_app:app",
                        "clientapp": "federated.client_app:app",
                    },
                    "config": dict(run_config),
                }
            },
        },
    }
    (directory / "pyproject.toml").write_bytes(tomli_w.dumps(pyproject).encode())
    return directory


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class LocalFederation:
    """SuperLink + SuperNodes on 127.0.0.1; use as a context manager (stops and cleans up)."""

    workdir: Path
    data_dirs: Sequence[Path]
    supplier_ids: Sequence[str]
    log_dir: Path
    # Idle poll of each SuperNode (s); Flower's own is 3 s (see federated/supernode_main.py).
    node_poll: float = 0.2
    # How often a SuperNode checks for its ClientApp's reply (Flower: 0.5 s). A look into its
    # own memory, not a request, so it can be short: each message waited ~0.1 s on it at 0.2 s.
    reply_poll: float = 0.02
    superlink_port: int = 0
    node_ids: dict[str, int] = field(default_factory=dict)  # supplier id -> registered node id
    _procs: list[_Proc] = field(default_factory=list)
    _nodes: dict[str, list[_Proc]] = field(default_factory=dict)  # SuperNode, its SuperExec

    def __post_init__(self) -> None:
        self.home = self.workdir / "flwr-home"
        self.env = dict(os.environ)
        self.env.update(
            FLWR_HOME=str(self.home),
            FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.05",
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            QLEDGER_SUPERNODE_POLL=str(self.node_poll),
            QLEDGER_SUPERNODE_REPLY_POLL=str(self.reply_poll),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("wb")
        # Own session = own process group: stop() ends the SuperExec and app processes a
        # SuperLink/SuperNode started, and only those.
        popen = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
            start_new_session=True,
        )
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _flwr(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        return self._flwr_many([list(args)], timeout)[0]

    def _flwr_many(self, commands: list[list[str]], timeout: float = 120) -> list[dict[str, Any]]:
        """Run ``flwr`` CLI commands concurrently (each is a ~2-4 s Python start-up)."""
        procs = [
            subprocess.Popen(
                [_bin("flwr"), *args, "--format", "json"],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        results = []
        for args, proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            try:
                results.append(json.loads(out[out.index("{") :]))
            except ValueError:
                raise DeployError(
                    f"flwr {' '.join(args)} failed ({proc.returncode}): {out}{err}"
                ) from None
        return results

    def _wait_port(self, port: int, timeout: float, proc: _Proc) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise DeployError(
                    f"{proc.name} exited with {proc.popen.returncode}; see {self.log_dir}"
                )
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise DeployError(f"{proc.name} did not listen on {port} within {timeout:.0f} s")

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.tls = make_tls(self.workdir / "tls")
        self.superlink_port = free_port()
        superlink = self._spawn(
            "superlink",
            [
                _bin("flower-superlink"),
                "--ssl-ca-certfile",
                str(self.tls["ca"]),
                "--ssl-certfile",
                str(self.tls["cert"]),
                "--ssl-keyfile",
                str(self.tls["key"]),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.superlink_port),
            ],
        )
        (self.home / "config.toml").write_bytes(
            tomli_w.dumps(
                {
                    "superlink": {
                        "default": CONNECTION,
                        CONNECTION: {
                            "address": f"127.0.0.1:{self.superlink_port}",
                            "root-certificates": str(self.tls["ca"]),
                        },
                    }
                }
            ).encode()
        )
        self._wait_port(self.superlink_port, 60, superlink)
        keys = {sid: make_node_keys(self.workdir / "node-keys", sid) for sid in self.supplier_ids}
        registrations = self._flwr_many(
            [
                ["supernode", "register", str(public), CONNECTION, "--name", sid]
                for sid, (_, public) in keys.items()
            ]
        )
        for sid, reg in zip(self.supplier_ids, registrations, strict=True):
            if not reg.get("success"):
                raise DeployError(f"registering {sid}'s SuperNode failed: {reg}")
            self.node_ids[sid] = int(reg["node-id"])
        here = Path(__file__).resolve().parent
        for sid, data in zip(self.supplier_ids, self.data_dirs, strict=True):
            private = keys[sid][0]
            runtime_port = free_port()
            # The Runtime API is the SuperNode's local door for task executors; a shared secret
            # keeps any other local process from acquiring this supplier's tasks.
            secret = self.workdir / "node-keys" / f"{sid}.superexec-secret"
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
            node = self._spawn(
                f"supernode-{sid}",
                [
                    sys.executable,
                    str(here / "supernode_main.py"),
                    "--superlink",
                    f"127.0.0.1:{self.superlink_port}",
                    "--root-certificates",
                    str(self.tls["ca"]),
                    "--auth-supernode-private-key",
                    str(private),
                    "--node-config",
                    f'data-path="{Path(data).resolve()}"',
                    "--isolation",
                    "process",
                    "--superexec-auth-secret-file",
                    str(secret),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(runtime_port),
                ],
            )
            executor = self._spawn(
                f"superexec-{sid}",
                [
                    sys.executable,
                    str(here / "superexec_main.py"),
                    "--runtime-api-address",
                    f"127.0.0.1:{runtime_port}",
                    "--insecure",  # loopback only, and authenticated by the shared secret
                    "--superexec-auth-secret-file",
                    str(secret),
                    "--parent-pid",
                    str(node.popen.pid),
                ],
            )
            self._nodes[sid] = [node, executor]

    def submit(self, app_dir: Path) -> int:
        res = self._flwr("run", str(app_dir), CONNECTION, timeout=180)
        if not res.get("success"):
            raise DeployError(f"flwr run failed: {res}")
        return int(res["run-id"])

    def run_status(self, run_id: int) -> str:
        """The run's status as the SuperLink reports it (``running``, ``finished:completed``...)."""
        res = self._flwr("list", CONNECTION, "--run-id", str(run_id))
        runs = res.get("runs") or []
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def kill_node(self, supplier_id: str) -> None:
        """Hard-kill one supplier's SuperNode (and its app processes): a real dropout."""
        for proc in self._nodes[supplier_id]:
            _kill_group(proc.popen, signal.SIGKILL)

    def alive(self) -> dict[str, bool]:
        return {p.name: p.popen.poll() is None for p in self._procs}

    def stop(self) -> None:
        for proc in reversed(self._procs):
            _kill_group(proc.popen, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self._procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc.popen, signal.SIGKILL)
                proc.popen.wait(timeout=5)
            # Children (SuperExec, app processes) may outlive their parent; end the group.
            _kill_group(proc.popen, signal.SIGKILL)
            proc.log.close()
        self._procs.clear()


def _kill_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)  # the group we created with start_new_session
