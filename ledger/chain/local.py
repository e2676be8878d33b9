"""A local anvil chain for development, the demo and integration tests.

``start_anvil(data_dir)`` runs the anvil binary from the npm package
``@foundry-rs/anvil-linux-amd64`` bound to 127.0.0.1 with ``--prune-history`` (per-transaction cost
otherwise grows with stored history) and ``--state <data_dir>/anvil-state.json``, so stopping and
starting again keeps the chain.

Durability, as far as anvil allows: anvil keeps its chain in memory and writes the state file
every ``--state-interval`` seconds (1 here, the smallest it takes) and on exit. ``stop_anvil``
first asks for a dump over RPC (``anvil_dumpState``, written atomically), then sends SIGINT, on
which anvil dumps again. What remains possible: a SIGKILL, a crash or a power cut loses the
blocks mined since the last write (up to a second), and a kill during anvil's own write can
leave a state file it refuses to load. Batches confirmed in lost blocks are found and
re-anchored by reconciliation (``qledger reconcile``; the anchorer does it at start).

It writes ``anvil.pid`` / ``anvil.port`` under ``data_dir``, so
``stop_anvil(data_dir)`` works from another process (``make chain-stop``), and logs to
``anvil.log``.

``python -m ledger.chain.local start|stop|status DATA_DIR [--port N] [--block-time S]`` does the
same from the shell.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import ChainError, ChainUnavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
ANVIL_ENV = "QLEDGER_ANVIL"
CHAIN_ID = 31337
HOST = "127.0.0.1"
PID_FILE = "anvil.pid"
PORT_FILE = "anvil.port"
STATE_FILE = "anvil-state.json"
LOG_FILE = "anvil.log"
# Dump the state periodically too, so a killed anvil loses at most this many seconds of chain
# (anvil takes whole seconds; 1 is its smallest interval). Dumping a pruned chain's state is a
# few milliseconds of work.
STATE_INTERVAL_SECONDS = 1

# The well-known keys of anvil's default mnemonic
# ("test test test test test test test test test test test junk"), accounts 0..9. Public
# knowledge: for local chains and demos only, never for anything holding value.
_DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


def dev_private_keys() -> list[str]:
    """Private keys of anvil's 10 funded dev accounts (default mnemonic), as 0x-hex."""
    return list(_DEV_KEYS)


def anvil_binary() -> Path:
    """The anvil executable: ``$QLEDGER_ANVIL`` or the npm package's binary in node_modules."""
    override = os.environ.get(ANVIL_ENV)
    candidate = Path(override) if override else REPO_ROOT / ANVIL_RELATIVE
    if not candidate.is_file():
        raise ChainError(
            f"anvil binary not found at {candidate}: run `make install` "
            "(npm ci installs @foundry-rs/anvil-linux-amd64)"
        )
    if not os.access(candidate, os.X_OK):
        raise ChainError(f"anvil binary at {candidate} is not executable (chmod +x it)")
    return candidate


@dataclass
class LocalChain:
    """A running anvil: where to reach it and how to stop it."""

    rpc_url: str
    pid: int
    port: int
    data_dir: Path
    chain_id: int = CHAIN_ID
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def is_running(self) -> bool:
        return _is_anvil_pid(self.pid) and _rpc_answers(self.rpc_url)

    def dump_state(self) -> bool:
        """Write the chain's state file now (see :func:`dump_state`)."""
        return dump_state(self.rpc_url, self.state_file)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil (it dumps its state on the way out)."""
        stop_anvil(self.data_dir, timeout=timeout)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The class that owns a started anvil process; kept as a name for callers that expect it.
AnvilProcess = LocalChain


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # anvil (tokio) binds with SO_REUSEADDR: a port whose old connections linger in TIME_WAIT
        # is free for it, so test the same way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_anvil_pid(pid: int) -> bool:
    """Whether ``pid`` is alive and is an anvil process (guards against reused pids)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == "anvil"


def _rpc_answers(rpc_url: str, timeout: float = 1.0) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def dump_state(rpc_url: str, state_file: Path, timeout: float = 10.0) -> bool:
    """Ask anvil for its state (``anvil_dumpState``: gzipped JSON, hex) and write it to
    ``state_file`` atomically (temporary file, fsync, rename), in the format ``--state``
    loads. Returns False if anvil did not answer (nothing is written then)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "anvil_dumpState", "params": []})
    request = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            result = json.loads(response.read()).get("result")
        state = gzip.decompress(bytes.fromhex(str(result).removeprefix("0x")))
    except (OSError, ValueError, EOFError, urllib.error.URLError, gzip.BadGzipFile):
        return False
    tmp = state_file.with_name(state_file.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(state)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(state_file)
    return True


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_chain(data_dir: Path) -> LocalChain | None:
    """The anvil started for ``data_dir`` if it is still running and answering."""
    data_dir = Path(data_dir)
    pid = _read_int(data_dir / PID_FILE)
    port = _read_int(data_dir / PORT_FILE)
    if pid is None or port is None:
        return None
    chain = LocalChain(rpc_url=f"http://{HOST}:{port}", pid=pid, port=port, data_dir=data_dir)
    return chain if chain.is_running() else None


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_anvil(
    data_dir: Path,
    port: int | None = None,
    block_time: float | None = None,
    *,
    startup_timeout: float = 30.0,
    extra_args: list[str] | None = None,
    state_interval: int = STATE_INTERVAL_SECONDS,
) -> LocalChain:
    """Start anvil for ``data_dir`` (or return the one already running there).

    ``port`` None reuses the port of the previous run when free, else picks a free one.
    ``block_time`` None mines a block per transaction (automine); a number mines every that many
    seconds. The process is detached (own session), so it outlives the caller until
    :func:`stop_anvil`.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = running_chain(data_dir)
    if existing is not None:
        if port is not None and existing.port != port:
            raise ChainError(
                f"anvil for {data_dir} already runs on port {existing.port}", expected=port
            )
        return existing

    binary = anvil_binary()
    if port is None:
        previous = _read_int(data_dir / PORT_FILE)
        port = previous if previous and _port_is_free(previous) else _free_port()
    elif not _port_is_free(port):
        raise ChainError(f"port {port} on {HOST} is already in use")

    state_file = data_dir / STATE_FILE
    if state_file.exists() and state_file.stat().st_size == 0:
        state_file.unlink()  # an interrupted dump; anvil would refuse to load it
    command = [
        str(binary),
        "--host",
        HOST,
        "--port",
        str(port),
        "--chain-id",
        str(CHAIN_ID),
        "--state",
        str(state_file),
        "--state-interval",
        str(int(state_interval)),
        "--prune-history",
    ]
    if block_time is not None:
        command += ["--block-time", f"{block_time:g}"]
    command += list(extra_args or [])

    log_file = data_dir / LOG_FILE
    with log_file.open("ab") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=data_dir,
        )
    (data_dir / PID_FILE).write_text(f"{process.pid}\n")
    (data_dir / PORT_FILE).write_text(f"{port}\n")
    chain = LocalChain(
        rpc_url=f"http://{HOST}:{port}",
        pid=process.pid,
        port=port,
        data_dir=data_dir,
        process=process,
    )

    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (data_dir / PID_FILE).unlink(missing_ok=True)
            raise ChainError(
                f"anvil exited with code {process.returncode} during startup:\n"
                f"{_log_tail(log_file)}"
            )
        if _rpc_answers(chain.rpc_url, timeout=0.5):
            return chain
        time.sleep(0.05)
    stop_anvil(data_dir)
    raise ChainUnavailable(
        f"anvil did not answer on {chain.rpc_url} within {startup_timeout}s:\n{_log_tail(log_file)}"
    )


def stop_anvil(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the anvil started for ``data_dir``; returns whether one was running.

    Dumps the state over RPC first (atomically), then sends SIGINT (anvil dumps its state on
    Ctrl-C), then SIGTERM, then SIGKILL.
    """
    data_dir = Path(data_dir)
    pid_file = data_dir / PID_FILE
    pid = _read_int(pid_file)
    if pid is None or not _is_anvil_pid(pid):
        pid_file.unlink(missing_ok=True)
        return False
    port = _read_int(data_dir / PORT_FILE)
    if port is not None:
        dump_state(f"http://{HOST}:{port}", data_dir / STATE_FILE)
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if not _pid_alive(pid):
            break
    pid_file.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.chain.local", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--block-time", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            chain = start_anvil(args.data_dir, port=args.port, block_time=args.block_time)
            print(chain.rpc_url)
            return 0
        if args.action == "stop":
            stopped = stop_anvil(args.data_dir)
            print("stopped" if stopped else "not running")
            return 0
        running = running_chain(args.data_dir)
        print(running.rpc_url if running else "not running")
        return 0 if running else 1
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
