from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from cli._common import DataDir, console, fail, load_signer, print_json, read_json, settings
from cli.chain import deployment_or_fail
from cli.trust import trust_from_options
from ledger.chain import ChainClient
from ledger.eip712 import record_struct_hash, record_typed_data
from ledger.errors import ChainError, LedgerContractMissing, LedgerError
from ledger.keys import Signer
from ledger.records import Domain, SignedRecord, load_signed_record
from ledger.signing import sign_record
from ledger.trust import TrustRoot
from ledger.verify import verify_receipt

DRAFT_FIELDS = (
    "subject",
    "kind",
    "partNumber",
    "lotId",
    "eventTime",
    "quantity",
    "defects",
    "payload",
)
DRAFT_HELP = "draft JSON: " + ", ".join(DRAFT_FIELDS) + " (nonce optional)"


def sign_draft(signer: Signer, domain: Domain, draft: dict[str, Any]) -> SignedRecord:
    """Sign a draft: the record fields a person fills in (no signer, salt, hashes)."""
    missing = [f for f in DRAFT_FIELDS if f not in draft]
    if missing:
        raise LedgerError(f"draft lacks {missing}", expected=list(DRAFT_FIELDS), got=sorted(draft))
    return sign_record(
        signer,
        domain,
        subject=draft["subject"],
        kind=draft["kind"],
        part_number=draft["partNumber"],
        lot_id=draft["lotId"],
        event_time=draft["eventTime"],
        quantity=draft["quantity"],
        defects=draft["defects"],
        payload=draft["payload"],
        # Microseconds since the epoch: unique per signer without keeping a counter on disk.
        nonce=draft.get("nonce", time.time_ns() // 1000),
    )


def verifier_client(rpc: str, trust: TrustRoot) -> ChainClient:
    """A read-only client on the pinned ledger (never the contract a receipt names). Where
    the ledger has no code (a reset chain, another chain) the client stays detached, and
    verification names the failed check (``rpc_serves_pinned_chain``)."""
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


def verify(
    record: Path = typer.Argument(..., help="signed record JSON (envelope)"),
    receipt: Path = typer.Argument(..., help="receipt JSON"),
    rpc: str = typer.Option(..., "--rpc", envvar="QLEDGER_RPC_URL", help="JSON-RPC URL"),
    trust: Path | None = typer.Option(
        None, "--trust", envvar="QLEDGER_TRUST_FILE", help="trust file (qledger trust init)"
    ),
    chain_id: int | None = typer.Option(None, "--chain-id", help="pinned chain id (no file)"),
    ledger: str | None = typer.Option(None, "--ledger", help="pinned ledger (no file)"),
    anchor: str | None = typer.Option(None, "--anchor", help="pinned block NUMBER:0xHASH"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Verify a record and its receipt against the chain, trusting no service: the receipt
    names the pinned ledger and chain, the RPC serves that chain, signature, signer's role at
    signing time, kind rule, Merkle proof, anchoring block still canonical, root anchored in
    the pinned ledger. Exit 0 only if every check passes."""
    pinned = trust_from_options(trust, chain_id, ledger, anchor)
    record_data, receipt_data = read_json(record), read_json(receipt)
    if isinstance(record_data, dict) and "signed" in record_data:
        record_data = record_data["signed"]  # accept `qledger sign` output as well
    try:
        client = verifier_client(rpc, pinned)
        report = verify_receipt(record_data, receipt_data, client, pinned)
    except ChainError as exc:
        fail(f"chain: {exc}")
    if as_json:
        print_json(report.to_json())
    else:
        table = Table(title="verification", show_lines=False)
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for c in report.checks:
            table.add_row(c.check.value, "[green]pass[/]" if c.ok else "[red]FAIL[/]", c.detail)
        console.print(table)
        failure = report.first_failure
        console.print(
            "[bold green]VALID[/]"
            if report.ok
            else f"[bold red]INVALID[/]: {failure.check.value if failure else '?'}"
        )
    raise typer.Exit(0 if report.ok else 1)


def submit(
    record: Path = typer.Argument(..., help="draft or signed record JSON"),
    key: Path | None = typer.Option(None, "--key", help="key file (to sign a draft)"),
    url: str = typer.Option("http://127.0.0.1:8700", envvar="QLEDGER_URL"),
    data_dir: Path | None = DataDir,
) -> None:
    """Sign (if a draft) and submit a record to the service; prints its struct hash."""
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
    try:
        response = httpx.post(f"{url}/v1/records", json=data, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"service unreachable at {url}: {exc}")
    if response.status_code != 202:
        error = response.json().get("error", {})
        fail(f"{response.status_code} {error.get('code')}: {error.get('message')}")
    print_json(response.json())


def _service_domain(url: str) -> Domain:
    try:
        cp = httpx.get(f"{url}/v1/checkpoint", timeout=10).json()
    except httpx.HTTPError as exc:
        fail(f"service unreachable at {url}: {exc}")
    return Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
