"""``qledger epcis import | export``: GS1 EPCIS 2.0 documents in and out (docs/epcis.md).

Import signs each event of a document from an EPCIS repository as a record with the user's key
and submits them in one batch; export fetches records as EPCIS 2.0 events through the service.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from cli._common import describe, fail, load_signer, print_error, print_json
from client.drafts import sign_draft
from ledger.errors import LedgerError
from ledger.records import HEX32_PATTERN, Domain, RecordKind, is_identifier

if TYPE_CHECKING:  # a session and a signer load httpx and eth-account: inside the commands
    from client.service import QledgerClient
    from ledger.keys import Signer
    from traceability.epcis import EpcisError

app = typer.Typer(no_args_is_help=True)

# A document of MAX_EVENTS events of the largest records fits (max_batch_bytes' default).
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
# What the ledger answers a signer's second record with a used nonce (api/intake.py).
REPLAYED = "nonce_replayed"
UrlOption = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")


def _read_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            fail(f"{path}: {what} of {size} bytes is larger than {MAX_DOCUMENT_BYTES}")
        return json.loads(path.read_bytes())
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        fail(f"{path} is not valid JSON: {exc}")


def _kind_map(pairs: list[str]) -> dict[str, RecordKind]:
    out: dict[str, RecordKind] = {}
    for pair in pairs:
        step, _, kind = pair.partition("=")
        try:
            out[step] = RecordKind(kind)
        except ValueError:
            fail(
                f"--kind-map {pair!r}: expected BIZSTEP=KIND, "
                f"KIND one of {[k.value for k in RecordKind]}"
            )
    return out


def _session(url: str, key: Path) -> tuple[QledgerClient, Signer, str, Domain]:
    from client.service import QledgerClient

    signer = load_signer(key)
    client = QledgerClient(url)
    token = client.login(signer)
    org = token.get("orgId")
    if not isinstance(org, str) or not is_identifier(org):
        fail(f"the key {signer.address} belongs to no organisation (register it first)")
    cp = client.checkpoint()
    return client, signer, org, Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])


@app.command("import")
def import_(
    doc: Path = typer.Argument(..., help="EPCIS 2.0 EPCISDocument (JSON or JSON-LD)"),
    key: Path = typer.Option(..., "--key", help="the signer's key file"),
    companies: Path | None = typer.Option(
        None,
        "--companies",
        help='GS1 company prefix table: {"prefixes": {"4012345": {"org": "SUP-01", "bpn": ...}}}',
    ),
    kind_map: list[str] = typer.Option(
        [], "--kind-map", help="BIZSTEP=KIND for ObjectEvents, repeatable (adds to the defaults)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="map and sign, submit nothing"),
    url: str = UrlOption,
) -> None:
    """Import an EPCIS 2.0 document: validate it against the GS1 schema, map each
    ObjectEvent / AggregationEvent / TransformationEvent to a record, sign them all with
    --key and submit them in one batch. Any event that cannot be mapped or signed stops the
    whole import before anything is submitted. Prints one line of JSON per event's outcome."""
    # The mapping and the GS1 schema validator load here, not for --help.
    from traceability.epcis import (
        Companies,
        EpcisError,
        check_document,
        draft_nonce,
        import_document,
    )

    data = _read_json(doc, "the document")
    table = Companies.model_validate(_read_json(companies, "--companies")) if companies else None
    steps = _kind_map(kind_map)
    try:  # the document's own problems first: no sign-in for a document that cannot import
        check_document(data)
    except EpcisError as exc:
        _refuse(exc)
    client, signer, org, domain = _session(url, key)
    with client:
        try:
            items = import_document(data, org=org, companies=table, kind_map=steps)
        except EpcisError as exc:
            _refuse(exc)
        signed: list[dict[str, Any]] = []
        seen: dict[int, int] = {}
        for item in items:
            if item.draft is None:
                continue
            nonce = draft_nonce(item.draft)
            if nonce in seen:  # the same evidence twice in one document
                item.error = f"repeats /epcisBody/eventList/{seen[nonce]} (the same record)"
                continue
            seen[nonce] = item.index
            try:
                draft = {**item.draft, "nonce": nonce}
                signed.append(sign_draft(signer, domain, draft).model_dump(mode="json"))
            except (LedgerError, ValidationError) as exc:
                item.error = describe(exc)
        report: list[dict[str, Any]] = [
            {
                "event": item.pointer,
                "eventID": item.event_id,
                "kind": item.kind,
                **({"error": item.error} if item.error else {}),
                **({"notCarried": item.ignored} if item.ignored else {}),
            }
            for item in items
        ]
        failed = [r for r in report if "error" in r]
        if failed:
            print_json({"submitted": 0, "events": report})
            fail(f"{len(failed)} of {len(items)} events cannot be imported; nothing submitted")
        if dry_run:
            for row, record in zip(report, signed, strict=True):
                row["record"] = record
            print_json({"submitted": 0, "dryRun": True, "events": report})
            return
        import httpx

        from client.service import error_of

        try:
            response = client.http.post("/v1/records:batch", json={"records": signed})
        except httpx.HTTPError as exc:
            fail(f"service unreachable at {url}: {exc}")
    if response.status_code not in (202, 207):
        fail(str(error_of(response)))
    results = response.json()["results"]
    for row, result in zip(report, results, strict=True):
        row["status"] = result["status"]
        row["structHash"] = result.get("structHash")
        err = result.get("error") or {}
        if err.get("code") == REPLAYED:
            # The nonce is the hash of what the event says: this signer signed it before.
            row["status"] = "already_imported"
        elif err:
            row["error"] = f"{err.get('code')}: {err.get('detail')}"
    accepted = sum(r["status"] == "accepted" for r in report)
    print_json({"submitted": accepted, "events": report})
    if any(r["status"] == "rejected" for r in report):
        raise typer.Exit(1)


def _refuse(exc: EpcisError) -> None:
    for where, message in exc.errors:
        print_error(f"{where or '/'}: {message}")
    fail(f"{exc}; nothing submitted")


@app.command("export")
def export(
    hashes: list[str] = typer.Argument(None, help="struct hashes of the records to export"),
    key: Path = typer.Option(..., "--key", help="key file to sign in with"),
    subject: str | None = typer.Option(None, "--subject", help="instead: records about ORG"),
    limit: int = typer.Option(100, "--limit", min=1, max=200, help="with --subject: how many"),
    out: Path | None = typer.Option(None, "--out", help="write here (default: stdout)"),
    url: str = UrlOption,
) -> None:
    """Export records as one EPCIS 2.0 document (validated against the GS1 schema)."""
    if bool(hashes) == (subject is not None):
        fail("give struct hashes or --subject ORG (one of them)")
    for h in hashes or []:
        if not re_hex(h):
            fail(f"{h!r} is not a struct hash (0x + 64 hex digits)")
    if subject is not None and not is_identifier(subject):
        fail(f"--subject {subject!r} is not an organisation id")
    from client.service import QledgerClient, error_of
    from traceability.epcis import document, schema_errors

    signer = load_signer(key)
    events: list[dict[str, Any]] = []
    with QledgerClient(url) as client:
        client.login(signer)
        auth = {"Authorization": f"Bearer {client.token}"}
        paths = [f"/v1/records/{h}/epcis" for h in hashes or []] or ["/v1/epcis/events"]
        for path in paths:
            params: dict[str, str | int] = (
                {"subject": subject, "limit": limit} if subject is not None else {}
            )
            response = client.http.get(path, params=params, headers=auth)
            if response.status_code != 200:
                fail(f"{path}: {error_of(response)}")
            events += response.json()["epcisBody"]["eventList"]
    doc = document(events)
    problems = schema_errors(doc)
    if problems:  # never write a document another system would refuse
        fail(f"the exported document fails the EPCIS schema: {problems[0]}")
    text = json.dumps(doc, indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)
        print(f"{len(events)} events written to {out}")


def re_hex(value: str) -> bool:
    return re.fullmatch(HEX32_PATTERN, value) is not None
