"""``qledger notify``: quality notifications (issue 19) from the command line.

Each step is a record of kind ``notification`` signed with the user's key and submitted to the
service, which accepts it only from the party whose turn it is, in the state where it is next
(docs/notifications.md). ``inbox`` and ``show`` read the token organisation's notifications;
``show --out DIR`` writes every transition's record and receipt for ``qledger verify``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from cli._common import console, fail, load_signer, logged_in, print_json, read_json
from client.drafts import sign_draft
from client.errors import ServiceError
from ledger.errors import LedgerError
from ledger.records import Domain, LotRef, NotificationPayload
from traceability.notifications import affected_parts, draft

if TYPE_CHECKING:  # a signer loads eth-account: inside the commands
    from ledger.keys import Signer

app = typer.Typer(no_args_is_help=True, add_completion=False)

KeyOption = typer.Option(..., "--key", help="your key file (the party taking the step)")
UrlOption = typer.Option("http://127.0.0.1:8700", "--url", envvar="QLEDGER_URL")
JsonOption = typer.Option(False, "--json", help="print JSON")
DAY = 86_400


class _Session:
    """A signed-in client, its key, organisation and the service's signing domain."""

    def __init__(self, url: str, key: Path) -> None:
        from client.service import QledgerClient

        self.signer: Signer = load_signer(key)
        self.client = QledgerClient(url)
        try:
            token = self.client.login(self.signer)
        except ServiceError as exc:
            fail(str(exc))
        self.org: str = token.get("orgId") or ""
        if not self.org:
            fail(f"{self.signer.address} belongs to no organisation: it cannot notify")
        cp = self.client.checkpoint()
        self.domain = Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])

    def thread(self, notification_id: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = self.client.get(f"/v1/notifications/{notification_id}")
        except ServiceError as exc:
            fail(str(exc))
        return body

    def submit(self, payload: NotificationPayload) -> dict[str, Any]:
        """Sign the transition as this party and submit it; prints and answers the result."""
        try:
            signed = sign_draft(
                self.signer, self.domain, draft(payload, int(time.time()), self.org)
            )
            answer = dict(self.client.submit(signed.model_dump(mode="json")))
        except (LedgerError, ServiceError) as exc:
            fail(str(exc))
        out = {
            "notificationId": payload.notificationId,
            "transition": payload.transition,
            **answer,
        }
        print_json(out)
        return out


def open_notification(
    session: _Session,
    notification_id: str,
    *,
    type: str,
    recipient: str,
    severity: str,
    parts: Iterable[LotRef | dict[str, Any]] = (),
    scope_parts: Callable[[], Iterable[LotRef | dict[str, Any]]] | None = None,
    origin_id: str | None = None,
    deadline: int | None = None,
    scope: dict[str, Any] | None = None,
    description: str = "",
    incident_id: str | None = None,
    send: bool = True,
) -> None:
    """Create (and by default send) a notification. Its affected parts are ``parts`` plus
    whatever ``scope_parts`` answers: the hook for the genealogy's recall scope."""
    try:
        listed = affected_parts(parts, scope=scope_parts)
        terms: dict[str, Any] = {
            "notificationId": notification_id,
            "type": type,
            "sender": session.org,
            "recipient": recipient,
            "originId": origin_id,
            "affectedParts": [p.model_dump(mode="json", exclude_none=True) for p in listed],
            "deadline": deadline,
            "severity": severity,
            "scope": scope or None,
            "description": description,
            "links": {"incidentId": incident_id} if incident_id else None,
        }
        created = NotificationPayload.model_validate({**terms, "transition": "created"})
    except ValidationError as exc:
        fail(_first(exc))
    except LedgerError as exc:
        fail(str(exc))
    session.submit(created)
    if send:
        session.submit(_next(created, "sent"))


def _next(thread: NotificationPayload | dict[str, Any], transition: str, **extra: Any) -> Any:
    """The payload of the next step of a thread (as served, or the created payload)."""
    names = (
        thread.model_dump()
        if isinstance(thread, NotificationPayload)
        else {
            "notificationId": thread["notificationId"],
            "type": thread["type"],
            "sender": thread["sender"],
            "recipient": thread["recipient"],
        }
    )
    body = {k: names[k] for k in ("notificationId", "type", "sender", "recipient")}
    try:
        return NotificationPayload.model_validate(
            {**body, "transition": transition, **{k: v for k, v in extra.items() if v}}
        )
    except ValidationError as exc:
        fail(_first(exc))


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return str(err["msg"]).removeprefix("Value error, ")


def _parts_file(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    data = read_json(path)
    if isinstance(data, dict) and "affectedParts" in data:
        data = data["affectedParts"]
    if not isinstance(data, list):
        fail(f"{path}: a JSON list of parts ({{maker, partNumber, lotId}}) is expected")
    return data


def _deadline(deadline: int | None, due_days: float | None) -> int | None:
    if deadline is not None and due_days is not None:
        fail("give --deadline or --due-days, not both")
    if due_days is not None:
        return int(time.time() + due_days * DAY)
    return deadline


def _links(
    incident: str | None, complaints: list[str], actions: list[str]
) -> dict[str, Any] | None:
    links: dict[str, Any] = {}
    if incident:
        links["incidentId"] = incident
    if complaints:
        links["complaints"] = complaints
    if actions:
        links["correctiveActions"] = actions
    return links or None


# -- commands --------------------------------------------------------------------------------

PartsOption = typer.Option(None, "--parts", help="JSON file: a list of {maker, partNumber, lotId}")
DeadlineOption = typer.Option(None, "--deadline", min=0, help="answer due by (unix time)")
DueDaysOption = typer.Option(None, "--due-days", min=0, help="answer due in N days")


@app.command("create")
def create(
    notification_id: str = typer.Argument(..., help="a new notification id"),
    type: str = typer.Option(..., "--type", help="investigation (to a supplier) or alert"),
    to: str = typer.Option(..., "--to", help="the recipient organisation"),
    severity: str = typer.Option("major", "--severity", help="minor|major|critical|..."),
    parts: Path | None = PartsOption,
    deadline: int | None = DeadlineOption,
    due_days: float | None = DueDaysOption,
    site: str | None = typer.Option(None, "--site"),
    shift: str | None = typer.Option(None, "--shift"),
    made_from: int | None = typer.Option(None, "--made-from", help="scope start (unix time)"),
    made_to: int | None = typer.Option(None, "--made-to", help="scope end (unix time)"),
    incident: str | None = typer.Option(None, "--incident", help="the incident id it concerns"),
    description: str = typer.Option("", "--description"),
    send: bool = typer.Option(True, "--send/--no-send", help="send it at once"),
    key: Path = KeyOption,
    url: str = UrlOption,
) -> None:
    """Open an investigation (customer -> supplier) or an alert (supplier -> customer)."""
    scope = {
        k: v
        for k, v in (("site", site), ("shift", shift), ("fromTime", made_from), ("toTime", made_to))
        if v is not None
    }
    listed = _parts_file(parts)  # a bad file is said before anything is signed or sent
    open_notification(
        _Session(url, key),
        notification_id,
        type=type,
        recipient=to,
        severity=severity,
        parts=listed,
        deadline=_deadline(deadline, due_days),
        scope=scope,
        description=description,
        incident_id=incident,
        send=send,
    )


@app.command("forward")
def forward(
    origin_id: str = typer.Argument(..., help="the notification you received"),
    notification_id: str = typer.Argument(..., help="the new notification's id"),
    to: str = typer.Option(..., "--to", help="your supplier (or customer, for an alert)"),
    parts: Path | None = PartsOption,
    severity: str | None = typer.Option(None, "--severity", help="default: the origin's"),
    deadline: int | None = DeadlineOption,
    due_days: float | None = DueDaysOption,
    description: str = typer.Option("", "--description"),
    send: bool = typer.Option(True, "--send/--no-send"),
    key: Path = KeyOption,
    url: str = UrlOption,
) -> None:
    """Forward a notification you received to the next tier, linked to its origin: the answer
    there shows on the origin's thread to its sender."""
    session = _Session(url, key)
    origin = session.thread(origin_id)
    open_notification(
        session,
        notification_id,
        type=origin["type"],
        recipient=to,
        severity=severity or origin["severity"] or "major",
        parts=_parts_file(parts),
        origin_id=origin_id,
        deadline=_deadline(deadline, due_days),
        description=description or origin.get("description", ""),
        incident_id=origin["links"].get("incidentId"),
        send=send,
    )


def _step(transition: str, notification_id: str, key: Path, url: str, **extra: Any) -> None:
    session = _Session(url, key)
    session.submit(_next(session.thread(notification_id), transition, **extra))


@app.command("send")
def send_cmd(notification_id: str, key: Path = KeyOption, url: str = UrlOption) -> None:
    """Send a created notification (its sender)."""
    _step("sent", notification_id, key, url)


@app.command("receive")
def receive(notification_id: str, key: Path = KeyOption, url: str = UrlOption) -> None:
    """Confirm it arrived (its recipient)."""
    _step("received", notification_id, key, url)


@app.command("ack")
def ack(notification_id: str, key: Path = KeyOption, url: str = UrlOption) -> None:
    """Acknowledge it: you are working on it (its recipient)."""
    _step("acknowledged", notification_id, key, url)


ComplaintOption = typer.Option([], "--complaint", help="struct hash of a complaint, repeatable")
EightDOption = typer.Option([], "--8d", help="struct hash of an 8D record that answers it")


@app.command("accept")
def accept(
    notification_id: str,
    reason: str = typer.Option("", "--reason", help="what you found"),
    complaint: list[str] = ComplaintOption,
    eight_d: list[str] = EightDOption,
    key: Path = KeyOption,
    url: str = UrlOption,
) -> None:
    """Accept it: your parts are concerned (its recipient); link the 8D that answers it."""
    _step(
        "accepted",
        notification_id,
        key,
        url,
        reason=reason,
        links=_links(None, complaint, eight_d),
    )


@app.command("decline")
def decline(
    notification_id: str,
    reason: str = typer.Option(..., "--reason", help="why (required)"),
    key: Path = KeyOption,
    url: str = UrlOption,
) -> None:
    """Decline it, with a reason (its recipient)."""
    _step("declined", notification_id, key, url, reason=reason)


@app.command("close")
def close(
    notification_id: str,
    reason: str = typer.Option("", "--reason"),
    key: Path = KeyOption,
    url: str = UrlOption,
) -> None:
    """Close an answered notification (its sender only)."""
    _step("closed", notification_id, key, url, reason=reason)


@app.command("inbox")
def inbox(
    box: str = typer.Option("all", "--box", help="all | received | sent"),
    state: str | None = typer.Option(None, "--state"),
    key: Path = KeyOption,
    url: str = UrlOption,
    as_json: bool = JsonOption,
) -> None:
    """Your organisation's notifications, received and sent, with state and overdue flag."""
    client = logged_in(url, key)
    params = {"box": box, **({"state": state} if state else {})}
    try:
        body = client.get("/v1/notifications", **params)
    except ServiceError as exc:
        fail(str(exc))
    if as_json:
        print_json(body)
        return
    table = Table(title="notifications")
    for column in ("id", "type", "direction", "from", "to", "state", "deadline", "overdue"):
        table.add_column(column)
    for n in body["notifications"]:
        table.add_row(
            n["notificationId"],
            n["type"],
            n["direction"],
            n["sender"],
            n["recipient"],
            n["state"],
            str(n["deadline"] or "-"),
            "[red]yes[/]" if n["overdue"] else "no",
        )
    console.print(table)


@app.command("show")
def show(
    notification_id: str,
    out: Path | None = typer.Option(
        None, "--out", help="write each transition's record and receipt here (qledger verify)"
    ),
    key: Path = KeyOption,
    url: str = UrlOption,
    as_json: bool = JsonOption,
) -> None:
    """One notification: its history (who signed which step, chain time, anchoring) and its
    forwards to other tiers."""
    client = logged_in(url, key)
    try:
        body = client.get(f"/v1/notifications/{notification_id}")
    except ServiceError as exc:
        fail(str(exc))
    if out is not None:
        written = _write_evidence(body, out)
        console.print(f"wrote {written} record/receipt pairs to {out}")
    if as_json:
        print_json(body)
        return
    _print_thread(body, indent="")


def _write_evidence(thread: dict[str, Any], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for item in [thread, *_descendants(thread)]:
        for h in item["history"]:
            stem = out / f"{item['notificationId'].replace('/', '_')}.{h['seq']}-{h['transition']}"
            Path(f"{stem}.record.json").write_text(json.dumps(h["signed"], indent=2))
            if h["receipt"] is not None:
                Path(f"{stem}.receipt.json").write_text(json.dumps(h["receipt"], indent=2))
                count += 1
    return count


def _descendants(thread: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for child in thread.get("forwards", []):
        found += [child, *_descendants(child)]
    return found


def _print_thread(t: dict[str, Any], indent: str) -> None:
    console.print(
        f"{indent}[bold]{t['notificationId']}[/] {t['type']} {t['sender']} -> {t['recipient']}"
        f"  state [bold]{t['state']}[/]"
        + (f"  origin {t['originId']}" if t.get("originId") else "")
        + ("  [red]OVERDUE[/]" if t["overdue"] else "")
    )
    for h in t["history"]:
        when = h["anchoredAt"] if h["anchoredAt"] is not None else "pending"
        reason = f"  reason: {h['reason']}" if h.get("reason") else ""
        console.print(
            f"{indent}  {h['seq']}. {h['transition']:<12} by {h['signerOrg']:<12} "
            f"chain time {when}  {h['structHash'][:18]}...{reason}"
        )
    for child in t.get("forwards", []):
        _print_thread(child, indent + "    ")
