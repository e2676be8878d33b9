from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli._common import DataDir, console, err_console, fail, print_json, settings
from ledger.errors import ChainError

if TYPE_CHECKING:
    from ledger.chain import Deployment

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)


def chain_dir(data_dir: Path) -> Path:
    return data_dir / "chain"


def admin_key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "admin.json"


def write_local_admin_key(data_dir: Path, private_key: str) -> Path:
    """Local mode only: the dev chain's deployer (ADMIN and ANCHORER) as a plain key file, so
    that `qledger participants add --key <data-dir>/keys/admin.json` works. Its key is one of
    anvil's published dev keys: never use this on a real network (``deploy --key``)."""
    import json

    from ledger.keys import Signer

    path = admin_key_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        address = Signer.from_hex(private_key).address
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"address": address, "private_key": private_key}))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path


@app.command("up")
def up(
    data_dir: Path | None = DataDir,
    port: int | None = typer.Option(None, help="RPC port (default: last one, else free)"),
    block_time: float | None = typer.Option(None, help="seconds per block (default automine)"),
) -> None:
    """Start anvil on 127.0.0.1 with --prune-history and --state under the data dir (a restart
    keeps the chain). Prints the RPC URL."""
    from ledger.chain.local import start_anvil

    cfg = settings(data_dir)
    try:
        local = start_anvil(chain_dir(cfg.data_dir), port=port, block_time=block_time)
    except (ChainError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(local.rpc_url, highlight=False)


@app.command("down")
def down(data_dir: Path | None = DataDir) -> None:
    """Stop the data dir's anvil (its state file keeps the chain for the next `up`)."""
    from ledger.chain.local import stop_anvil

    stopped = stop_anvil(chain_dir(settings(data_dir).data_dir))
    console.print("stopped" if stopped else "no chain was running")


@app.command("status")
def status(data_dir: Path | None = DataDir) -> None:
    from ledger.chain.local import running_chain

    local = running_chain(chain_dir(settings(data_dir).data_dir))
    if local is None:
        fail("no local chain running (qledger chain up)")
    console.print(f"{local.rpc_url} (pid {local.pid})", highlight=False)


def local_rpc(data_dir: Path) -> str | None:
    from ledger.chain.local import running_chain

    local = running_chain(chain_dir(data_dir))
    return local.rpc_url if local else None


def deploy(
    data_dir: Path | None = DataDir,
    rpc: str | None = typer.Option(
        None, envvar="QLEDGER_RPC_URL", help="JSON-RPC URL (default: the local chain)"
    ),
    key: str | None = typer.Option(
        None,
        envvar="QLEDGER_ANCHORER_KEY",
        help="hex private key of the deployer (becomes ADMIN "
        "and ANCHORER); default: local dev account 0",
    ),
) -> None:
    """Deploy QualityLedger, ModelRegistry and CommitmentLog; write deployment.json."""
    from ledger.chain import ChainClient
    from ledger.chain.local import dev_private_keys

    cfg = settings(data_dir)
    rpc = rpc or local_rpc(cfg.data_dir)
    if rpc is None:
        fail("no RPC URL: pass --rpc or start the local chain with `qledger chain up`")
    try:
        client = ChainClient.connect(rpc, private_key=key or dev_private_keys()[0])
        deployment = client.deploy()
    except ChainError as exc:
        fail(str(exc))
    deployment.save(cfg.deployment_path)
    print_json(deployment.to_dict())
    console.print(f"deployment written to {cfg.deployment_path}", style="dim")
    if key is None:
        admin = write_local_admin_key(cfg.data_dir, dev_private_keys()[0])
        err_console.print(
            f"admin key (local dev chain's deployer, for `participants add --key`): {admin}",
            soft_wrap=True,
        )


def deployment_or_fail(data_dir: Path) -> Deployment:
    from ledger.chain import Deployment

    cfg = settings(data_dir)
    if not cfg.deployment_path.exists():
        fail(f"no deployment at {cfg.deployment_path} (run `qledger deploy`)")
    return Deployment.load(cfg.deployment_path)
