"""``qledger trace``: sign as-built genealogy (aggregation, transformation) and ask the
service where a lot went, what a product contains, and the recall scope of suspect lots.

A lot is named ``MAKER,PART,LOT`` (commas: identifiers may hold ``/`` and ``:`` but not ``,``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from cli._common import console, fail, load_signer, logged_in, print_json
from client.errors import ServiceError
from ledger.errors import LedgerError
from ledger.records import Domain, SignedRecord, is_identifier
from traceability.genealogy import Node

if TYPE_CHECKING:  # a session loads httpx and eth-account: inside the commands
    from client.service import QledgerClient

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
URL = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")
KEY = typer.Option(..., "--key", help="key file")
SITE = typer.Option(None, "--site", help="site (EPCIS bizLocation)")
SINCE = typer.Option(None, "--since", min=0, help="event time from (Unix seconds)")
UNTIL = typer.Option(None, "--until", min=0, help="event time to (Unix seconds)")
LIMIT = typer.Option(1000, "--limit", min=1, max=10_000, help="nodes and records listed")
AS_JSON = typer.Option(False, "--json", help="print the service's answer as JSON")
SHOWN = 30  # rows of nodes/records a table shows (the JSON has them all)


def parse_node(text: str) -> Node:
    parts = text.split(",")
    if len(parts) != 3 or not all(is_identifier(p) for p in parts):
        fail(f"a lot is MAKER,PART,LOT of identifiers; got {text!r}")
    return (parts[0], parts[1], parts[2])


def _client(url: str, key: Path) -> QledgerClient:
    return logged_in(url, key)


def _domain(client: QledgerClient) -> Domain:
    try:
        cp = client.get("/v1/checkpoint")
    except ServiceError as exc:
        fail(f"cannot read the service's signing domain: {exc}")
    return Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])


def _submit(client: QledgerClient, signed: SignedRecord, dry_run: bool) -> None:
    body = signed.model_dump(mode="json")
    if dry_run:
        print_json(body)
        return
    try:
        print_json(client.submit(body))
    except ServiceError as exc:
        fail(str(exc))


def sign_aggregation_cmd(
    parent: str = typer.Argument(..., help="the assembly: MAKER,PART,LOT (MAKER is you)"),
    children: list[str] = typer.Argument(..., help="what went into it: MAKER,PART,LOT ..."),
    key: Path = KEY,
    site: str | None = SITE,
    event_time: int | None = typer.Option(None, "--event-time", help="default: now"),
    url: str = URL,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the signed record only"),
) -> None:
    """Sign that CHILDREN were assembled into PARENT and submit it (EPCIS AggregationEvent)."""
    from traceability.evidence import sign_aggregation

    client = _client(url, key)
    try:
        signed = sign_aggregation(
            load_signer(key),
            _domain(client),
            parent=parse_node(parent),
            children=[parse_node(c) for c in children],
            event_time=event_time or int(time.time()),
            nonce=time.time_ns() // 1000,
            site=site,
        )
    except LedgerError as exc:
        fail(str(exc))
    _submit(client, signed, dry_run)


def sign_transformation_cmd(
    inputs: list[str] = typer.Option(..., "--input", help="MAKER,PART,LOT consumed (repeat)"),
    outputs: list[str] = typer.Option(..., "--output", help="MAKER,PART,LOT made (repeat)"),
    key: Path = KEY,
    site: str | None = SITE,
    event_time: int | None = typer.Option(None, "--event-time", help="default: now"),
    url: str = URL,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the signed record only"),
) -> None:
    """Sign that INPUT lots were made into OUTPUT lots and submit it (TransformationEvent)."""
    from traceability.evidence import sign_transformation

    client = _client(url, key)
    try:
        signed = sign_transformation(
            load_signer(key),
            _domain(client),
            inputs=[parse_node(i) for i in inputs],
            outputs=[parse_node(o) for o in outputs],
            event_time=event_time or int(time.time()),
            nonce=time.time_ns() // 1000,
            site=site,
        )
    except LedgerError as exc:
        fail(str(exc))
    _submit(client, signed, dry_run)


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    roots = ", ".join(f"{r['maker']}/{r['partNumber']}/{r['lotId']}" for r in answer["roots"])
    console.print(f"[bold]{answer['direction']}[/] of {roots}: [bold]{answer['total']}[/] lots")
    levels = Table("level", "lots", "by part number")
    for lv in answer["levels"]:
        parts = ", ".join(f"{p} {n}" for p, n in lv["parts"].items())
        levels.add_row(str(lv["depth"]), str(lv["count"]), parts)
    console.print(levels)
    nodes = Table("level", "maker", "part", "lot", "records")
    for n in answer["nodes"][:SHOWN]:
        nodes.add_row(
            str(n["depth"]), n["maker"], n["partNumber"], n["lotId"], " ".join(n["via"])[:20]
        )
    console.print(nodes)
    anchoring: dict[str, int] = {}
    for r in answer["records"]:
        anchoring[r["anchoring"]] = anchoring.get(r["anchoring"], 0) + 1
    console.print(
        f"rests on {answer['recordCount']} signed records ("
        + ", ".join(f"{n} {s}" for s, n in sorted(anchoring.items()))
        + "); fetch each receipt and `qledger verify` it. --json lists them."
    )
    if answer["truncated"] or answer["depthLimited"]:
        console.print("[yellow]the answer was cut (--limit, or the depth bound)[/]")


def _query(client: QledgerClient, path: str, **params: Any) -> Any:
    try:
        return client.get(path, **{k: v for k, v in params.items() if v is not None})
    except ServiceError as exc:
        fail(str(exc))


def _walk(
    path: str,
    lot: str,
    key: Path,
    since: int | None,
    until: int | None,
    site: str | None,
    limit: int,
    url: str,
    as_json: bool,
) -> None:
    """One walk through the service (where-used or where-from), shown or printed as JSON."""
    maker, part, lot_id = parse_node(lot)
    answer = _query(
        _client(url, key),
        path,
        maker=maker,
        partNumber=part,
        lotId=lot_id,
        since=since,
        until=until,
        site=site,
        limit=limit,
    )
    _show(answer, as_json)


def where_used(
    lot: str = typer.Argument(..., help="MAKER,PART,LOT"),
    key: Path = KEY,
    since: int | None = SINCE,
    until: int | None = UNTIL,
    site: str | None = SITE,
    limit: int = LIMIT,
    url: str = URL,
    as_json: bool = AS_JSON,
) -> None:
    """Every product LOT went into, any depth."""
    _walk("/v1/trace/where-used", lot, key, since, until, site, limit, url, as_json)


def where_from(
    lot: str = typer.Argument(..., help="MAKER,PART,LOT"),
    key: Path = KEY,
    since: int | None = SINCE,
    until: int | None = UNTIL,
    site: str | None = SITE,
    limit: int = LIMIT,
    url: str = URL,
    as_json: bool = AS_JSON,
) -> None:
    """Every lot LOT is made of, any depth (its as-built part tree)."""
    _walk("/v1/trace/where-from", lot, key, since, until, site, limit, url, as_json)


def scope(
    lots: list[str] = typer.Argument(..., help="suspect lots: MAKER,PART,LOT ..."),
    key: Path = KEY,
    since: int | None = SINCE,
    until: int | None = UNTIL,
    site: str | None = SITE,
    limit: int = LIMIT,
    url: str = URL,
    as_json: bool = AS_JSON,
) -> None:
    """Recall scope of suspect lots: every product they went into, counted per level; only
    products assembled in the window (--since/--until) at --site when given."""
    body: dict[str, Any] = {
        "lots": [
            {"maker": m, "partNumber": p, "lotId": lot_id}
            for m, p, lot_id in (parse_node(x) for x in lots)
        ],
        "limit": limit,
    }
    body.update({k: v for k, v in (("since", since), ("until", until), ("site", site)) if v})
    client = _client(url, key)
    try:
        answer = client.post("/v1/trace/scope", body, ok=(200,))
    except ServiceError as exc:
        fail(str(exc))
    _show(answer, as_json)


app.command("sign-aggregation")(sign_aggregation_cmd)
app.command("sign-transformation")(sign_transformation_cmd)
app.command("where-used")(where_used)
app.command("where-from")(where_from)
app.command("scope")(scope)
