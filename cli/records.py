from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli._common import (
    DataDir,
    console,
    err_console,
    fail,
    load_signer,
    logged_in,
    print_json,
    read_json,
    settings,
)
from cli.chain import deployment_or_fail
from cli.trust import trust_from_options
from client.drafts import DRAFT_FIELDS, sign_draft
from ledger.errors import ChainError, LedgerContractMissing, LedgerError

if TYPE_CHECKING:
    # Signing and verification pull in eth-account and web3: imported by the commands that
    # run them, so `qledger --help` stays fast.
    import httpx

    from ledger.chain import ChainClient
    from ledger.records import Domain
    from ledger.tlog import Verifier
    from ledger.trust import TrustRoot
    from ledger.verify import VerificationReport

DRAFT_HELP = "draft JSON: " + ", ".join(DRAFT_FIELDS) + " (nonce optional)"


def verifier_client(rpc: str, trust: TrustRoot) -> ChainClient:
    """A read-only client on the pinned ledger (never the contract a receipt names). Where
    the ledger has no code (a reset chain, another chain) the client stays detached, and
    verification names the failed check (``rpc_serves_pinned_chain``)."""
    from ledger.chain import ChainClient

    try:
        return ChainClient.connect_ledger(rpc, trust.ledger)
    except LedgerContractMissing:
        return ChainClient.connect(rpc)


def sign(
    record: Path = typer.Argument(..., help=DRAFT_HELP),
    key: Path = typer.Option(..., "--key", help="key file"),
    chain_id: int | None = typer.Option(None, help="domain chainId (default: deployment)"),
    contract: str | None = typer.Option(None, help="domain verifyingContract"),
    data_dir: Path | None = DataDir,
) -> None:
    """Sign a record: prints the EIP-712 typed data, signature, struct hash and the signed
    envelope (what `qledger submit` or POST /v1/records takes) as JSON."""
    from ledger.eip712 import record_struct_hash, record_typed_data
    from ledger.records import Domain

    signer = load_signer(key)
    if chain_id is None or contract is None:
        deployment = deployment_or_fail(settings(data_dir).data_dir)
        chain_id, contract = chain_id or deployment.chain_id, contract or deployment.ledger
    try:
        signed = sign_draft(
            signer, Domain(chainId=chain_id, verifyingContract=contract), read_json(record)
        )
    except LedgerError as exc:
        fail(str(exc))
    print_json(
        {
            "typedData": record_typed_data(signed.domain, signed.record),
            "signature": signed.signature,
            "structHash": "0x" + record_struct_hash(signed.record).hex(),
            "signed": signed.model_dump(mode="json"),
        }
    )


# The pinned log and witness keys, for both verify commands: flags override the trust file.
# The trust root a verifier pins (`qledger verify`, `qledger verify-receipts`): a trust file,
# or chain id + ledger (+ anchor block) given directly; and where the chain is asked, if at all.
RpcOption = Annotated[
    str | None,
    typer.Option("--rpc", envvar="QLEDGER_RPC_URL", help="JSON-RPC URL (omit to verify offline)"),
]
TrustOption = Annotated[
    Path | None,
    typer.Option("--trust", envvar="QLEDGER_TRUST_FILE", help="trust file (qledger trust init)"),
]
ChainIdOption = Annotated[int | None, typer.Option("--chain-id", help="pinned chain id (no file)")]
LedgerOption = Annotated[str | None, typer.Option("--ledger", help="pinned ledger (no file)")]
AnchorOption = Annotated[str | None, typer.Option("--anchor", help="pinned block NUMBER:0xHASH")]
LogKeyOption = Annotated[
    str | None,
    typer.Option("--log-key", help="the log's vkey (default: the trust file's logKey)"),
]
WitnessOption = Annotated[
    list[str],
    typer.Option(
        "--witness", help="a witness vkey, repeatable (default: the trust file's witnesses)"
    ),
]
QuorumOption = Annotated[
    int | None,
    typer.Option("--quorum", min=0, help="cosignatures required (default: the trust file's)"),
]


def pinned_keys(
    pinned: TrustRoot | None, log_key: str | None, witness: list[str], quorum: int | None
) -> tuple[Verifier | None, list[Verifier], int]:
    """The log key, witness keys and quorum to verify with: the flags, else the trust file's."""
    from ledger.tlog import COSIGNATURE_V1, ED25519, LogError, Verifier

    if pinned is not None:
        log_key = log_key or pinned.log_key
        witness = witness or list(pinned.witnesses)
        quorum = pinned.witness_quorum if quorum is None else quorum
    quorum = quorum or 0
    if quorum > len(witness):
        fail(f"--quorum {quorum} needs at least {quorum} --witness keys")
    try:
        log = Verifier.parse(log_key, expect_type=ED25519) if log_key else None
        witnesses = [Verifier.parse(w, expect_type=COSIGNATURE_V1) for w in witness]
    except LogError as exc:
        fail(f"key: {exc}")
    return log, witnesses, quorum


def verify(
    record: Path = typer.Argument(
        ..., help="receipt JSON (it carries its record), or the signed record JSON"
    ),
    receipt: Path | None = typer.Argument(
        None, help="receipt JSON, when the first file is the signed record"
    ),
    rpc: RpcOption = None,
    trust: TrustOption = None,
    chain_id: ChainIdOption = None,
    ledger: LedgerOption = None,
    anchor: AnchorOption = None,
    log_key: LogKeyOption = None,
    witness: WitnessOption = [],  # noqa: B006 - typer reads the default, never mutated
    quorum: QuorumOption = None,
    against: Path | None = typer.Option(
        None, "--against", help="a newer checkpoint note: the receipt's must be extended by it"
    ),
    consistency: Path | None = typer.Option(
        None, "--consistency-proof", help="proof JSON ({proof: [0x..]}); default: from --url"
    ),
    url: str = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Verify a receipt (`qledger receipt -o FILE`: it carries its record), or a record and its
    receipt, trusting no service, against the auditor's pinned trust root (--trust FILE, or
    --chain-id/--ledger/--anchor): the receipt names the pinned chain and ledger, signature,
    Merkle proof, and either with --rpc the chain itself (it serves the pinned chain, the
    signer's role at signing time, the anchoring block still canonical, the root anchored in
    the pinned ledger) or offline the pinned log key and k-of-n witness keys (the receipt's log
    entry, its signed and cosigned checkpoint). --against checks the receipt's checkpoint is
    extended by a newer one. Exit 0 only if every check passes."""
    from ledger.tlog.verify import verify_receipt_offline
    from ledger.verify import verify_receipt

    pinned = trust_from_options(trust, chain_id, ledger, anchor)
    if receipt is None:
        # `qledger receipt -o FILE` writes the receipt with the record it proves.
        receipt_data = read_json(record)
        if not isinstance(receipt_data, dict) or not isinstance(receipt_data.get("record"), dict):
            fail(
                f"{record} is not a receipt that carries its record (`qledger receipt HASH "
                "-o receipt.json` writes one); or give the record and the receipt: "
                "verify RECORD RECEIPT"
            )
        record_data = receipt_data["record"]
    else:
        record_data, receipt_data = read_json(record), read_json(receipt)
    if isinstance(record_data, dict) and "signed" in record_data:
        record_data = record_data["signed"]  # accept `qledger sign` output as well
    if not isinstance(receipt_data, dict):
        fail("a receipt is a JSON object")
    log, witnesses, quorum = pinned_keys(pinned, log_key, witness, quorum)
    if rpc is None and log is None:
        fail("give --rpc (check against the chain) or a log key (offline, with witnesses)")
    if rpc is not None:
        try:
            report = verify_receipt(record_data, receipt_data, verifier_client(rpc, pinned), pinned)
        except ChainError as exc:
            fail(f"chain: {exc}")
        if log is not None:
            offline = verify_receipt_offline(
                record_data,
                receipt_data,
                log_key=log,
                witnesses=witnesses,
                quorum=quorum,
                trust=pinned,
            )
            known = {c.check for c in report.checks}
            report.checks.extend(c for c in offline.checks if c.check not in known)
    else:
        assert log is not None
        report = verify_receipt_offline(
            record_data, receipt_data, log_key=log, witnesses=witnesses, quorum=quorum, trust=pinned
        )
    if against is not None:
        if log is None:
            fail("--against needs a log key")
        _check_against(report, receipt_data, against, consistency, url, log)
    _print_report(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def _check_against(
    report: VerificationReport,
    receipt_data: dict[str, Any],
    against: Path,
    consistency: Path | None,
    url: str,
    log: Verifier,
) -> None:
    import httpx
    from pydantic import ValidationError

    from ledger.tlog import Checkpoint, LogError, LogProof, parse_note
    from ledger.tlog.verify import check_against
    from ledger.verify import Check

    try:
        newer = against.read_text()
        proof = LogProof.model_validate(receipt_data["log"]) if receipt_data.get("log") else None
    except OSError as exc:
        fail(f"cannot read {against}: {exc.strerror}")
    except ValidationError as exc:
        fail(f"receipt log proof: {exc.errors()[0]['msg']}")
    hashes: list[bytes] = []
    if proof is not None:
        try:
            old_size = proof.treeSize
            new_size = Checkpoint.parse(parse_note(newer).text).size
            if consistency is not None:
                body = read_json(consistency)
            else:
                body = httpx.get(
                    f"{url}/v1/log/consistency",
                    params={"from": old_size, "to": new_size},
                    timeout=30,
                ).json()
            hashes = [bytes.fromhex(h[2:]) for h in body["proof"]]
        except LogError as exc:
            report.add(Check.NOTE_FORMAT, False, f"--against: {exc}")
            return
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            report.add(Check.CONSISTENCY, False, f"no usable consistency proof: {exc}")
            return
    check_against(report, proof, newer, hashes, log)


def _print_report(report: VerificationReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
        return
    table = Table(title="verification", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        result = "[yellow]skip[/]" if c.skipped else "[green]pass[/]" if c.ok else "[red]FAIL[/]"
        table.add_row(c.check.value, result, c.detail)
    console.print(table)
    failure = report.first_failure
    console.print(
        "[bold green]VALID[/]"
        if report.ok
        else f"[bold red]INVALID[/]: {failure.check.value if failure else '?'}"
    )


def verify_score(
    certificate: Path = typer.Argument(..., help="score certificate (.qcert.json)"),
    trust: Path | None = typer.Option(
        None,
        "--trust",
        envvar="QLEDGER_TRUST_FILE",
        help="trust file with the log and witness keys",
    ),
    log_key: LogKeyOption = None,
    witness: WitnessOption = [],  # noqa: B006 - typer reads the default, never mutated
    quorum: QuorumOption = None,
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Verify a portable score certificate offline, byte for byte: the score hashes to the
    committed hash, its proof reaches the commitment root, the root is in the log at a
    checkpoint the pinned log key signed (its name is the pinned ledger) and k of the pinned
    witnesses cosigned. A bank, an insurer or another OEM needs only the file and its trust
    file."""
    from ledger.tlog import ledger_origin
    from ledger.tlog.verify import verify_certificate
    from ledger.trust import TrustRoot

    pinned = None
    if trust is not None:
        try:
            pinned = TrustRoot.load(trust)
        except LedgerError as exc:
            fail(str(exc))
    log, witnesses, quorum = pinned_keys(pinned, log_key, witness, quorum)
    if log is None:
        fail("no log key: give --trust FILE with a logKey, or --log-key")
    try:
        raw = certificate.read_bytes()
    except OSError as exc:
        fail(f"cannot read {certificate}: {exc.strerror}")
    if pinned is not None and log.name != ledger_origin(pinned.chain_id, pinned.ledger):
        fail(f"the log key names {log.name}, not the pinned ledger {pinned.ledger}")
    report = verify_certificate(raw, log_key=log, witnesses=witnesses, quorum=quorum)
    _print_report(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def submit(
    record: Path = typer.Argument(..., help="draft or signed record JSON"),
    key: Path | None = typer.Option(None, "--key", help="key file (to sign a draft)"),
    url: str = typer.Option("http://127.0.0.1:8700", envvar="QLEDGER_URL"),
    save: Path | None = typer.Option(
        None, "--save", help="also write the signed record here (what `verify` checks)"
    ),
    data_dir: Path | None = DataDir,
) -> None:
    """Sign (if a draft) and submit a record to the service; prints the answer (struct hash,
    status, warnings). Warnings (e.g. eventTime outside the scoring window) go to stderr."""
    import httpx

    from client.service import error_of
    from ledger.records import load_signed_record

    data = read_json(record)
    if isinstance(data, dict) and "signed" in data:
        data = data["signed"]
    if not (isinstance(data, dict) and "signature" in data):
        if key is None:
            fail("the record is a draft: pass --key to sign it")
        try:
            domain = _service_domain(url)
            data = sign_draft(load_signer(key), domain, data).model_dump(mode="json")
        except LedgerError as exc:
            fail(str(exc))
    else:
        try:
            load_signed_record(data)
        except LedgerError as exc:
            fail(str(exc))
    if save is not None:
        _write_json(save, data)
    try:
        response = httpx.post(f"{url}/v1/records", json=data, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"service unreachable at {url}: {exc}")
    if response.status_code != 202:
        fail(str(error_of(response)))
    answer = response.json()
    print_json(answer)
    for warning in answer.get("warnings", []):
        err_console.print(
            f"[yellow]warning:[/] {escape(str(warning.get('detail', warning)))}", soft_wrap=True
        )


def _write_json(path: Path, data: Any) -> None:
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


def receipt(
    record: str = typer.Argument(
        ..., help="struct hash (0x...), or a signed record file (`submit --save`)"
    ),
    key: Path = typer.Option(..., "--key", help="key file of a participant who may read it"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the receipt here"),
    wait: float = typer.Option(
        0, "--wait", min=0, max=3600, help="seconds to wait for anchoring (0: ask once)"
    ),
    url: str = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL"),
) -> None:
    """Fetch a record's receipt (Merkle proof, anchor, log proof), signed in with your key. The
    receipt carries the record, so `qledger verify receipt.json` needs nothing else. Exit 2
    while the record is still waiting for anchoring."""
    from client.service import ServiceError
    from ledger.records import HEX32_PATTERN

    struct_hash = record.lower()
    if not re.fullmatch(HEX32_PATTERN, struct_hash):
        path = Path(record)
        if not path.exists():
            fail(f"{record} is neither a struct hash (0x + 64 hex digits) nor a file")
        struct_hash = _struct_hash_of(read_json(path))
    client = logged_in(url, key)
    deadline = time.monotonic() + wait
    try:
        while (found := client.receipt(struct_hash)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
    except ServiceError as exc:
        fail(str(exc))
    if found is None:
        err_console.print(f"{struct_hash} is not anchored yet (try --wait 30)")
        raise typer.Exit(2)
    if out is not None:
        _write_json(out, found)
        err_console.print(f"receipt written to {out}", style="dim", highlight=False)
    else:
        print_json(found)


def _struct_hash_of(data: Any) -> str:
    from ledger.eip712 import record_struct_hash
    from ledger.records import load_signed_record

    if isinstance(data, dict) and "signed" in data:
        data = data["signed"]
    try:
        signed = load_signed_record(data)
    except LedgerError as exc:
        fail(f"not a signed record: {exc}")
    return "0x" + record_struct_hash(signed.record).hex()


def _refusal(response: httpx.Response) -> str:
    """``<status> <code>: <message>`` from an error body, whichever envelope the service uses
    (``{"error": {code, message}}`` or RFC 9457 problem+json with a top-level ``code``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"{response.status_code}: {response.text[:200]}"
    nested = body.get("error")
    error: dict[str, Any] = nested if isinstance(nested, dict) else body
    code = error.get("code", "http_error")
    message = error.get("message") or error.get("detail") or error.get("title") or ""
    return f"{response.status_code} {code}: {message}"


def _service_domain(url: str) -> Domain:
    import httpx

    from ledger.records import Domain

    try:
        response = httpx.get(f"{url}/v1/checkpoint", timeout=10)
    except httpx.HTTPError as exc:
        fail(f"service unreachable at {url}: {exc}")
    if response.status_code != 200:
        fail(f"cannot read the service's signing domain: {_refusal(response)}")
    cp = response.json()
    return Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
