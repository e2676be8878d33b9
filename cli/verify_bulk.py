"""``qledger verify-receipts``: verify a directory or JSONL export of receipts in one go."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer

from cli._common import fail
from cli.records import (
    AnchorOption,
    ChainIdOption,
    LedgerOption,
    LogKeyOption,
    QuorumOption,
    RpcOption,
    TrustOption,
    WitnessOption,
    pinned_keys,
    verifier_client,
)
from cli.trust import trust_from_options
from ledger.errors import ChainError

if TYPE_CHECKING:  # verification loads eth-account and web3: inside the command, not --help
    from ledger.bulk_verify import CachingChain
    from ledger.verify import VerificationReport


def verify_receipts(
    path: Path = typer.Argument(
        ..., help="a directory of receipt files (*.json) or a JSONL file (one receipt per line)"
    ),
    rpc: RpcOption = None,
    trust: TrustOption = None,
    chain_id: ChainIdOption = None,
    ledger: LedgerOption = None,
    anchor: AnchorOption = None,
    log_key: LogKeyOption = None,
    witness: WitnessOption = [],  # noqa: B006 - typer reads the default, never mutated
    quorum: QuorumOption = None,
    failures_only: bool = typer.Option(
        False, "--failures-only", help="print only the receipts that fail, then the summary"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON verdict per line (JSONL)"),
) -> None:
    """Verify many receipts against the pinned trust root, each with every check of `qledger
    verify`: with --rpc the chain is asked once per distinct batch root and once per distinct
    signer (not once per receipt); offline (a log key, no --rpc) nothing is asked and each
    distinct checkpoint's signatures are checked once. Prints one line per receipt (OK, or FAIL
    with the first failed check) and a summary. Exit 0 only if every receipt passes."""
    from ledger.bulk_verify import (
        CachingChain,
        FastChainVerifier,
        FastLogVerifier,
        FastPath,
        read_receipts,
        verify_all,
        write_verdicts,
    )
    from ledger.chain._raw_reads import RawLedgerReads
    from ledger.tlog.verify import CheckpointCache, verify_receipt_offline
    from ledger.verify import verify_receipt

    pinned = trust_from_options(trust, chain_id, ledger, anchor)
    log, witnesses, quorum = pinned_keys(pinned, log_key, witness, quorum)
    if rpc is None and log is None:
        fail("give --rpc (check against the chain) or a log key (offline, with witnesses)")
    if not path.exists():
        fail(f"{path}: no such file or directory")

    cached: CachingChain | None = None
    checkpoints = CheckpointCache()
    if rpc is not None:
        try:
            # The client connects and checks the pinned ledger's code (as `qledger verify`);
            # the facts are then read with lean JSON-RPC reads (ledger.chain._raw_reads), not
            # web3's contract machinery, which cost ~2 ms of CPU per read.
            client = verifier_client(rpc, pinned)
            cached = CachingChain(RawLedgerReads(rpc, client.ledger_address))
        except ChainError as exc:
            fail(f"chain: {exc}")
        chain = cached
        fast: FastPath = FastChainVerifier(cached, pinned)

        def verify_one(receipt: dict[str, Any]) -> VerificationReport:
            return verify_receipt(None, receipt, chain, pinned)

    else:
        assert log is not None
        offline_key = log
        fast = FastLogVerifier(
            checkpoints, log_key=log, witnesses=witnesses, quorum=quorum, trust=pinned
        )

        def verify_one(receipt: dict[str, Any]) -> VerificationReport:
            return verify_receipt_offline(
                None,
                receipt,
                log_key=offline_key,
                witnesses=witnesses,
                quorum=quorum,
                trust=pinned,
                checkpoints=checkpoints,
            )

    out = sys.stdout
    try:
        total, failed = write_verdicts(
            verify_all(read_receipts(path), verify_one, fast),
            out,
            failures_only=failures_only,
            as_json=as_json,
        )
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except ChainError as exc:
        fail(f"chain: {exc}")
    if rpc is not None and cached is not None:
        asked = (
            f"{cached.calls} chain reads for {len(cached.roots)} distinct batch roots and "
            f"{len(cached.signers)} distinct signers"
        )
    else:
        asked = f"no RPC; {len(checkpoints)} distinct checkpoint checks"
    summary = f"{total} receipts: {total - failed} valid, {failed} invalid ({asked})"
    if as_json:
        out.write(orjson.dumps({"summary": summary, "total": total, "invalid": failed}).decode())
        out.write("\n")
    else:
        out.write(summary + "\n")
    if total == 0:
        fail(f"{path}: no receipts found")
    raise typer.Exit(0 if failed == 0 else 1)
