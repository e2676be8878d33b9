from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import SecretStr
from rich.table import Table

from cli._common import DataDir, console, fail, logged_in, print_json, settings
from cli.chain import admin_key_path, chain_dir, write_local_admin_key
from ledger.errors import ChainError

if TYPE_CHECKING:
    from api.context import ServiceContext
    from api.settings import Settings

participants = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
URL = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")
ADMIN_KEY = typer.Option(..., "--key", help="key file of an ADMIN account")


def prepare_chain(cfg: Settings) -> Settings:
    """Without QLEDGER_RPC_URL: start (or reuse) the data dir's anvil and use dev account 0 as
    admin/anchorer. Deploy the contracts if the data dir has no deployment yet. Returns the
    resolved settings (the environment is left as it is: callers hand the result on)."""
    from ledger.chain import ChainClient, Deployment
    from ledger.chain.local import dev_private_keys, start_anvil

    updates: dict[str, object] = {}
    local_chain = not cfg.rpc_url
    if local_chain:
        local = start_anvil(chain_dir(cfg.data_dir), port=cfg.chain_port or None)
        updates["rpc_url"] = local.rpc_url
        if not cfg.anchorer_key:
            updates["anchorer_key"] = SecretStr(dev_private_keys()[0])
            write_local_admin_key(cfg.data_dir, dev_private_keys()[0])
    cfg = cfg.model_copy(update=updates)
    assert cfg.rpc_url is not None
    if not cfg.deployment_path.exists():
        if not local_chain:
            # Never deploy fresh contracts onto a configured network by accident: a lost
            # deployment.json would otherwise silently fork the ledger.
            raise RuntimeError(
                f"no deployment at {cfg.deployment_path} for {cfg.rpc_url}: "
                "run `qledger deploy --rpc ... --key ...` or restore the file"
            )
        client = ChainClient.connect(cfg.rpc_url, private_key=cfg.anchorer_private_key())
        client.deploy().save(cfg.deployment_path)
        console.print(f"deployed contracts -> {cfg.deployment_path}", style="dim")
    else:
        ChainClient.connect(
            cfg.rpc_url,
            private_key=cfg.anchorer_private_key(),
            deployment=Deployment.load(cfg.deployment_path),
        )
    return cfg.model_copy(update={"data_dir": cfg.data_dir.resolve()})


def _die_with_parent() -> None:
    """In the anchorer child: get SIGTERM when serve exits, however it exits.

    uvicorn re-raises the signal that stopped it, so serve's own clean-up may never run;
    Linux's parent-death signal covers that and a SIGKILL of serve alike.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1  # from <linux/prctl.h>
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def serve(
    data_dir: Path | None = DataDir,
    host: str = typer.Option("127.0.0.1", envvar="QLEDGER_HOST"),
    port: int = typer.Option(8700, envvar="QLEDGER_PORT"),
    workers: int = typer.Option(
        1, envvar="QLEDGER_WORKERS", help="uvicorn worker processes (one of them anchors)"
    ),
    chain_port: int | None = typer.Option(
        None,
        "--chain-port",
        envvar="QLEDGER_CHAIN_PORT",
        help="port of the local chain serve starts (default: its last port, else a free one)",
    ),
) -> None:
    """Run the API and the anchorer. Without QLEDGER_RPC_URL: uses the data dir's local chain,
    starting it (and stopping it again on exit) if it is not running, deploys if there is no
    deployment, and writes the dev admin key to <data-dir>/keys/admin.json."""
    from ledger.chain.local import running_chain, stop_anvil

    requested = settings(data_dir, host=host, port=port, workers=workers, chain_port=chain_port)
    started_chain = not requested.rpc_url and running_chain(chain_dir(requested.data_dir)) is None
    try:
        cfg = prepare_chain(requested)
    except (ChainError, RuntimeError) as exc:
        if started_chain:
            stop_anvil(chain_dir(requested.data_dir))
        fail(str(exc))
    if workers > 1 and cfg.db_url.startswith("sqlite"):
        # Measured (docs/benchmarks.md): two processes contending for SQLite's one write
        # lock push single-record p99 from ~18 ms to ~80 ms; its busy handler sleeps in
        # coarse steps. More workers pay off on PostgreSQL.
        console.print(
            "[yellow]warning:[/] SQLite has one writer; extra workers contend "
            "for its lock. Use QLEDGER_DATABASE_URL=postgresql+psycopg://... "
            "for multi-worker intake."
        )
    console.print(f"qledger on http://{host}:{port}  (docs: /docs, chain {cfg.rpc_url})")
    if requested.rpc_url is None and requested.anchorer_key is None:
        console.print(
            f"admin key (local dev chain): {admin_key_path(cfg.data_dir)}",
            style="dim",
            soft_wrap=True,
        )
    # The anchorer runs in its own process (measured: inside an API process its batch work
    # raises single-record p99 from ~22 ms to ~38 ms). It stays in this process group, so
    # whatever stops serve stops it; the API workers stand in if it dies.
    inside = cfg.serve_anchorer == "inside"  # for comparisons only
    # The child resolves the same settings: the data dir by argument, the rest from the same
    # environment (and the data dir's running chain and deployment, which exist by now).
    anchorer = (
        None
        if inside
        else subprocess.Popen(
            [sys.executable, "-m", "cli", "anchorer", "--data-dir", str(cfg.data_dir)],
            preexec_fn=_die_with_parent,
        )
    )
    # uvicorn re-raises the signal that stopped it once it has shut down: with this handler a
    # SIGTERM then ends serve through the clean-up below instead of killing it outright.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        run_server(cfg)
    finally:
        if anchorer is not None:
            anchorer.terminate()
            anchorer.wait(20)
        if started_chain:  # a chain `qledger chain up` started stays up
            stop_anvil(chain_dir(cfg.data_dir))
            console.print("stopped the local chain serve started", style="dim")


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_server(cfg: Settings) -> None:
    """uvicorn with these settings handed to every worker as an object: the app factory is
    ``create_app`` bound to ``cfg`` (pickled into spawned workers), so nothing travels through
    the environment. ``uvicorn.run`` takes only import strings for several workers, hence its
    supervisor is driven here directly (as ``uvicorn.run`` itself does)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.app_factory import ServeAppFactory

    config = uvicorn.Config(
        ServeAppFactory(cfg),
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level="warning",
        # uvicorn's loggers propagate to the handler api.logs installs (text or JSON, secrets
        # masked) instead of uvicorn's own.
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    try:
        if cfg.workers > 1:
            Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        return
    if cfg.workers == 1 and not server.started:
        fail(f"the server did not start on {cfg.host}:{cfg.port} (see the log above)")


def anchorer(data_dir: Path | None = DataDir) -> None:
    """Run only the anchorer (when the API runs elsewhere against the same database)."""
    from api.anchorer import anchor_when_leader
    from api.context import ServiceContext
    from api.logs import configure_logging

    configure_logging(settings(data_dir))
    cfg = prepare_chain(settings(data_dir))
    configure_logging(cfg)  # the resolved settings: their anchorer key is masked too
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ctx = ServiceContext.create(cfg)
        if cfg.anchorer_metrics_port:
            _export_anchorer_metrics(ctx, cfg.anchorer_metrics_port)
        # Waits for the data dir's anchorer lock if another process holds it.
        anchor_when_leader(ctx, stop)
    except KeyboardInterrupt:
        stop.set()
    logging.getLogger("qledger.anchorer").info("anchorer stopped (pid %s)", os.getpid())


def _export_anchorer_metrics(ctx: ServiceContext, port: int) -> None:
    """This process's chain errors and the store's anchoring figures on 127.0.0.1:port."""
    from prometheus_client import start_http_server

    from api.metrics import registry_for

    start_http_server(port, addr="127.0.0.1", registry=registry_for(ctx))
    logging.getLogger("qledger.anchorer").info("metrics on http://127.0.0.1:%d/metrics", port)


def reconcile(
    data_dir: Path | None = DataDir,
    check_only: bool = typer.Option(
        False, "--check-only", help="report lost batches, change nothing (exit 1 if any)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Check every confirmed batch against the chain (root anchored under the same batch id,
    anchoring block still canonical) and re-anchor the ones the chain lost: new receipts,
    the old ones kept as superseded. The anchorer does the same at start and periodically."""
    from api.anchorer import Anchorer, Reconciler, anchorer_lock
    from api.context import ServiceContext

    cfg = settings(data_dir)
    if not cfg.deployment_path.exists():
        fail(f"no deployment at {cfg.deployment_path}: nothing to reconcile")
    try:
        ctx = ServiceContext.create(prepare_chain(cfg))
        if check_only:
            lost = Reconciler(ctx).check()
        else:
            with anchorer_lock(ctx.settings.data_dir) as held:
                if not held:
                    fail(
                        "another process anchors for this data dir (qledger serve or qledger "
                        "anchorer); it reconciles at start and every "
                        f"{cfg.reconcile_seconds:g} s. Stop it first, or use --check-only"
                    )
                lost = Anchorer(ctx).reconcile(reanchor=True)
    except ChainError as exc:
        fail(f"chain: {exc}")
    rows = [
        {
            "batch": b.batch_id,
            "root": b.root,
            "records": b.leaf_count,
            "reason": b.reason,
            "detail": b.detail,
            "reconciliation": b.reconciliation_id,
        }
        for b in lost
    ]
    if as_json:
        print_json({"lost": rows, "reanchored": not check_only})
    elif not rows:
        console.print("every confirmed batch is anchored as recorded")
    else:
        table = Table(title="batches the chain lost" + ("" if check_only else " (re-anchored)"))
        for column in ("batch", "records", "reason", "detail"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(str(row[c]) for c in ("batch", "records", "reason", "detail")))
        console.print(table)
    raise typer.Exit(1 if check_only and rows else 0)


@participants.command("add")
def add(
    address: str,
    role: str = typer.Option(..., help="SUPPLIER | OEM | AUDITOR"),
    org: str = typer.Option(..., help="organisation id"),
    name: str = "",
    key: Path = ADMIN_KEY,
    url: str = URL,
) -> None:
    """Register a key on chain with a role and organisation."""
    from client.service import ServiceError

    try:
        row = logged_in(url, key).register(address, role.upper(), org, name)
    except ServiceError as exc:
        fail(str(exc))
    console.print(
        f"registered {row['address']} as {row['role']} of {row['orgId']} (tx {row['txHash']})",
        soft_wrap=True,
    )


@participants.command("revoke")
def revoke(address: str, key: Path = ADMIN_KEY, url: str = URL) -> None:
    """Revoke a key's role on chain (what it signed before stays valid)."""
    from client.service import ServiceError

    try:
        row = logged_in(url, key).revoke(address)
    except ServiceError as exc:
        fail(str(exc))
    console.print(f"revoked {row['address']} (tx {row['txHash']})")


@participants.command("list")
def list_(
    key: Path = ADMIN_KEY,
    url: str = URL,
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Every registered key with its organisation, role and whether it is active."""
    from client.service import ServiceError

    try:
        rows = logged_in(url, key).participants()
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        print_json(rows)
        return
    table = Table("org", "role", "address", "active", "name")
    table.columns[2].no_wrap = True  # a full address, never folded or cut
    table.columns[2].min_width = 42
    for p in rows:
        table.add_row(
            p["orgId"], p["role"], p["address"], "yes" if p["active"] else "no", p["name"]
        )
    console.print(table)


def demo(
    data_dir: Path = typer.Option(
        Path(".qledger/demo"), "--data-dir", help="the demo's own directory (wiped at start)"
    ),
    quick: bool = typer.Option(False, help="4 suppliers, 3 months, 4 rounds (tests)"),
    suppliers: int | None = typer.Option(None, min=3, max=50),
) -> None:
    """The whole story end to end: chain, service, signed evidence through the API,
    anchoring, federated training, explained credit, gate, repair, incident, and an
    auditor's offline verification. Everything it starts, it stops."""
    from cli.demo import DemoConfig, run_demo
    from client.service import ServiceError

    cfg = DemoConfig.quick(data_dir) if quick else DemoConfig(data_dir=data_dir)
    if suppliers is not None:
        cfg.suppliers = suppliers
    try:
        run_demo(cfg, console)
    except (ServiceError, ChainError, RuntimeError) as exc:
        fail(f"demo failed: {exc}")
