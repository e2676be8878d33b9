"""`qledger trust init|show`: the auditor's pinned trust root (``ledger.trust``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli._common import console, fail, print_json
from ledger.errors import ChainError, LedgerError

if TYPE_CHECKING:
    from ledger.trust import TrustRoot

app = typer.Typer(no_args_is_help=True)

DEFAULT_TRUST_FILE = Path("qledger-trust.json")
HOW_TO_MAKE_ONE = (
    "make one from the deployment you were handed: `qledger trust init --deployment "
    "deployment.json --rpc URL --out trust.json` (or --ledger ADDRESS --chain-id N), "
    "keep it, and pass it with --trust"
)


def pinned_root(
    rpc: str, chain_id: int | None, ledger: str, block: int, timeout: float = 10
) -> TrustRoot:
    """A trust root for ``ledger`` on the chain behind ``rpc``, pinning block ``block``.

    The endpoint is asked once, now, for that block's hash: the auditor trusts it at this
    moment (ideally comparing it with a second source) and never again afterwards.
    """
    from ledger.chain import ChainClient
    from ledger.trust import BlockAnchor, TrustRoot

    client = ChainClient.connect_ledger(rpc, ledger, timeout=timeout)
    if chain_id is not None and client.chain_id != chain_id:
        raise ChainError(
            "the RPC endpoint serves another chain", expected=chain_id, got=client.chain_id
        )
    block_hash = client.block_hash(block)
    if block_hash is None:
        raise ChainError(f"block {block} is beyond the chain's tip", got=client.block_number())
    return TrustRoot(
        chain_id=client.chain_id, ledger=ledger, anchor=BlockAnchor(number=block, hash=block_hash)
    )


@app.command("init")
def init(
    out: Path = typer.Option(DEFAULT_TRUST_FILE, "--out", "-o", help="trust file to write"),
    deployment: Path | None = typer.Option(
        None, "--deployment", help="deployment.json you were handed (chain id + ledger)"
    ),
    rpc: str = typer.Option(..., "--rpc", envvar="QLEDGER_RPC_URL", help="JSON-RPC URL"),
    ledger: str | None = typer.Option(None, "--ledger", help="QualityLedger address"),
    chain_id: int | None = typer.Option(None, "--chain-id", help="expected chain id"),
    block: int = typer.Option(0, "--block", help="block to pin by hash (default genesis)"),
    log_key: str | None = typer.Option(None, "--log-key", help="checkpoint key (C2SP vkey)"),
    witness: list[str] = typer.Option([], "--witness", help="witness key (C2SP vkey), repeat"),
    quorum: int = typer.Option(0, "--quorum", help="cosignatures required"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing trust file"),
) -> None:
    """Write the trust file `qledger verify --trust` pins: chain id, ledger address and the
    hash of one block (genesis by default), read from the chain now."""
    from ledger.chain import Deployment
    from ledger.trust import TrustRoot

    if deployment is not None:
        try:
            handed = Deployment.load(deployment)
        except ChainError as exc:
            fail(str(exc))
        if ledger is not None and ledger.lower() != handed.ledger.lower():
            fail(f"--ledger {ledger} differs from the deployment's {handed.ledger}")
        if chain_id is not None and chain_id != handed.chain_id:
            fail(f"--chain-id {chain_id} differs from the deployment's {handed.chain_id}")
        ledger, chain_id = handed.ledger, handed.chain_id
    if ledger is None:
        fail("give --deployment FILE or --ledger ADDRESS (with --chain-id)")
    if out.exists() and not force:
        fail(f"{out} exists: a trust root is not replaced silently (--force to overwrite)")
    try:
        root = pinned_root(rpc, chain_id, ledger, block)
        root = TrustRoot(
            chain_id=root.chain_id,
            ledger=root.ledger,
            anchor=root.anchor,
            log_key=log_key,
            witnesses=tuple(witness),
            witness_quorum=quorum,
        )
        root.save(out)
    except LedgerError as exc:
        fail(str(exc))
    print_json(root.to_dict())
    console.print(f"trust root written to {out}", style="dim")


@app.command("show")
def show(path: Path = typer.Argument(DEFAULT_TRUST_FILE, help="trust file")) -> None:
    """Check a trust file's syntax and print it."""
    from ledger.trust import TrustRoot

    try:
        print_json(TrustRoot.load(path).to_dict())
    except LedgerError as exc:
        fail(str(exc))


def trust_from_options(
    trust: Path | None, chain_id: int | None, ledger: str | None, anchor: str | None
) -> TrustRoot:
    """The trust root of ``qledger verify``: a file, or flags; never the receipt's word."""
    from ledger.trust import BlockAnchor, TrustRoot

    try:
        if trust is not None:
            if chain_id is not None or ledger is not None or anchor is not None:
                fail("give --trust FILE or --chain-id/--ledger/--anchor, not both")
            return TrustRoot.load(trust)
        if chain_id is None or ledger is None:
            fail(
                "no trust root: verify never trusts the contract a receipt names; "
                + HOW_TO_MAKE_ONE
            )
        pinned = None
        if anchor is not None:
            number, _, block_hash = anchor.partition(":")
            if not number.isdigit():
                fail("--anchor is NUMBER:0xHASH")
            pinned = BlockAnchor(number=int(number), hash=block_hash)
        return TrustRoot(chain_id=chain_id, ledger=ledger, anchor=pinned)
    except LedgerError as exc:
        fail(str(exc))
