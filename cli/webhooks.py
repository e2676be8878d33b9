"""``qledger webhooks``: purchasing's subscriptions to supplier events (docs/webhooks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cli._common import console, fail, logged_in
from client.errors import ServiceError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
URL = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")
KEY = typer.Option(..., "--key", help="key file of an OEM (purchasing) or admin")
EVENTS = ("supplier.gate.changed", "supplier.score.moved")
EVENT = typer.Option(
    None, "--event", help="event type (repeatable; default both): " + ", ".join(EVENTS)
)


@app.command("add")
def add(
    target: str = typer.Option(..., "--target", help="the receiver's http(s) URL"),
    event: list[str] | None = EVENT,
    threshold: float = typer.Option(
        5.0, min=0.0, max=100.0, help="score move in points that is an event"
    ),
    key: Path = KEY,
    url: str = URL,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Subscribe a receiver URL; prints the signing secret, shown this once only."""
    client = logged_in(url, key)
    try:
        sub = client.post(
            "/v1/webhooks",
            {"url": target, "eventTypes": event or list(EVENTS), "scoreThreshold": threshold},
            ok=(201,),
        )
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(sub, indent=2))
        return
    console.print(f"subscription [bold]{sub['id']}[/] -> {sub['url']}")
    console.print(f"events {', '.join(sub['eventTypes'])}; score threshold {sub['scoreThreshold']}")
    # The secret goes to stdout for the operator to copy into the receiver; it is never shown
    # again (nor logged by the service).
    console.print(f"secret [bold]{sub['secret']}[/]  (shown once: store it with the receiver)")


@app.command("list")
def list_(key: Path = KEY, url: str = URL, as_json: bool = typer.Option(False, "--json")) -> None:
    """Your organisation's subscriptions (an admin: all); secrets are never listed."""
    try:
        subs = logged_in(url, key).get("/v1/webhooks")["webhooks"]
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(subs, indent=2))
        return
    table = Table("id", "organisation", "url", "events", "threshold")
    for s in subs:
        table.add_row(
            s["id"], s["ownerOrg"], s["url"], ", ".join(s["eventTypes"]), f"{s['scoreThreshold']:g}"
        )
    console.print(table)


@app.command("rm")
def rm(subscription: str, key: Path = KEY, url: str = URL) -> None:
    """Delete a subscription (its pending deliveries are cancelled, its log kept)."""
    client = logged_in(url, key)
    try:
        answer = client.delete(f"/v1/webhooks/{subscription}")
    except ServiceError as exc:
        fail(str(exc))
    console.print(
        f"deleted {subscription}; {answer['cancelledDeliveries']} pending deliveries cancelled"
    )


@app.command("deliveries")
def deliveries(
    subscription: str,
    key: Path = KEY,
    url: str = URL,
    limit: int = typer.Option(50, min=1, max=200),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The delivery log of a subscription, newest first."""
    try:
        rows = logged_in(url, key).get(f"/v1/webhooks/{subscription}/deliveries", limit=limit)[
            "deliveries"
        ]
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("message", "event", "supplier", "status", "attempts", "last", "next attempt")
    for d in rows:
        table.add_row(
            d["msgId"],
            d["eventType"],
            d["payload"]["data"]["supplierId"],
            d["status"],
            str(d["attempts"]),
            d["lastError"] or (str(d["lastStatus"]) if d["lastStatus"] else "-"),
            d["nextAttemptAt"] or "-",
        )
    console.print(table)
