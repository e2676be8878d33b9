"""Webhooks: purchasing is told when a supplier crosses a gate or its score moves far.

Standard Webhooks (https://www.standardwebhooks.com, spec v1): each subscription has a
``whsec_``-prefixed base64 secret; every request carries ``webhook-id`` (the message id, the same
on every retry, so receivers can drop duplicates), ``webhook-timestamp`` (Unix seconds of this
attempt) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``).
The reference library ``standardwebhooks`` verifies them (tests/api/test_webhooks.py).

Events are written as ``webhook_deliveries`` rows in the transaction that stores the published
score (``enqueue_score_events``), so no event is lost between publishing and delivering. The
dispatcher (:class:`WebhookDispatcher`, a thread of each API process, started in the app's
lifespan) claims due rows with a compare-and-set on ``attempts`` (one process per attempt,
whatever the number of workers), posts the stored body and writes the outcome: delivered, a
retry with exponential backoff, or failed after ``webhook_max_attempts``. A process that dies
mid-attempt leaves the row claimed until its lease ends; then it is due again (at least once).

The secret is in the subscription row and in the signing call only: never logged, never in an
answer other than the one that created it, never in an error text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.store.models import Score, WebhookDelivery, WebhookSubscription, utcnow
from credit.gates import GateResult, gate_reasons

log = logging.getLogger("qledger.webhooks")

EventType = Literal["supplier.gate.changed", "supplier.score.moved"]
GATE_CHANGED: EventType = "supplier.gate.changed"
SCORE_MOVED: EventType = "supplier.score.moved"
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

SECRET_PREFIX = "whsec_"  # Standard Webhooks' symmetric-secret prefix
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes
MAX_URL_LENGTH = 2048  # what browsers and most proxies accept; the column's size
CLAIM_BATCH = 50  # deliveries attempted per dispatcher pass
# A claimed attempt that never reports back (its process died) is due again after this long;
# far above one request's timeout, so a live attempt is never run twice at once.
LEASE_EXTRA_SECONDS = 60.0

# Gate states an event compares: the gate's outcome, or no number at all (a thin file).
INSUFFICIENT = "insufficient_evidence"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value (spec v1: HMAC-SHA256 over ``id.timestamp.body``)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, body: str, timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "qledger-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


class UrlRefused(ValueError):
    """A subscription URL the service will not post to."""


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials and no fragment, bounded in size.

    Credentials in a URL would end up in logs and listings; a fragment is never sent. Private
    addresses are allowed on purpose (receivers usually sit inside the OEM's network): only an
    OEM or admin can subscribe, and the dispatcher never follows redirects nor shows bodies."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UrlRefused("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"the URL does not parse: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are accepted")
    if not parts.hostname:
        raise UrlRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are refused (they would be shown and logged)")
    if parts.fragment:
        raise UrlRefused("a fragment is never sent; leave it out")
    if port == 0:
        raise UrlRefused("port 0 is not a port")
    try:
        httpx.URL(url)  # the dispatcher's own parser (IDNA hosts, percent-encoding) agrees
    except httpx.InvalidURL as exc:
        raise UrlRefused(f"the URL does not parse: {exc}") from exc
    return url


def where(url: str) -> str:
    """What a log line may say about a receiver: scheme, host and port (no path or query,
    which may carry the receiver's own tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# -- events ---------------------------------------------------------------------------------


def gate_state(row: Score) -> str | None:
    """``pass``, ``fail`` or ``insufficient_evidence``; None without a gate."""
    if row.score is None:
        return INSUFFICIENT
    return row.gate_outcome


def _side(row: Score) -> dict[str, Any]:
    gate = row.response.get("gate")
    return {
        "score": row.score,
        "band": row.band,
        "gate": gate_state(row),
        "gateReasons": gate_reasons(GateResult.model_validate(gate)) if gate else [],
        "asOf": row.as_of,
        "responseHash": row.response_hash,
    }


def events_between(previous: Score, current: Score, threshold: float) -> list[EventType]:
    """Which events one subscription (with its score-move threshold) gets for this change."""
    events: list[EventType] = []
    if gate_state(previous) != gate_state(current):
        events.append(GATE_CHANGED)
    if (
        previous.score is not None
        and current.score is not None
        and abs(current.score - previous.score) > threshold
    ):
        events.append(SCORE_MOVED)
    return events


def event_body(event: str, previous: Score, current: Score) -> str:
    """The payload (Standard Webhooks' recommended ``type`` / ``timestamp`` / ``data``),
    serialised once: every attempt sends these exact bytes."""
    delta = (
        None
        if previous.score is None or current.score is None
        else round(current.score - previous.score, 6)
    )
    gate = current.response.get("gate") or {}
    return json.dumps(
        {
            "type": event,
            "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
            "data": {
                "supplierId": current.supplier_id,
                "policy": gate.get("policy"),
                "scoreDelta": delta,
                "previous": _side(previous),
                "current": _side(current),
            },
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def enqueue_score_events(session: Session, previous: Score | None, current: Score) -> int:
    """In the publishing transaction: one delivery per active subscription that wants an
    event for ``previous`` -> ``current``. The first score of a supplier changes nothing."""
    if previous is None:
        return 0
    count = 0
    for sub in session.scalars(select(WebhookSubscription).where(WebhookSubscription.active)):
        for event in events_between(previous, current, sub.score_threshold):
            if event not in sub.event_types:
                continue
            session.add(
                WebhookDelivery(
                    msg_id=new_id("msg_"),
                    subscription_id=sub.id,
                    event_type=event,
                    body=event_body(event, previous, current),
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                )
            )
            count += 1
    return count


# -- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    msg_id: str
    attempts: int  # including this one
    url: str
    secret: str
    body: str


class WebhookDispatcher:
    """Posts due deliveries; see the module docstring for the guarantees."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        # The transport, not a Client: it follows no redirect (a receiver cannot bounce the
        # signed body elsewhere) and logs no "HTTP Request: POST <url>" line (httpx's Client
        # does, at INFO, with the receiver's query string).
        self.transport = httpx.HTTPTransport()
        self.timeout = httpx.Timeout(self.settings.webhook_timeout_seconds).as_dict()

    def close(self) -> None:
        self.transport.close()

    def backoff(self, attempts: int) -> float:
        """Delay after the ``attempts``-th failed attempt: base x 2^(attempts-1), capped."""
        s = self.settings
        return min(s.webhook_backoff_seconds * 2 ** (attempts - 1), s.webhook_backoff_max_seconds)

    def run_once(self) -> int:
        """Attempt every due delivery once (up to CLAIM_BATCH); returns how many were tried."""
        tried = 0
        for attempt in self._claim():
            self._attempt(attempt)
            tried += 1
        return tried

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once() >= CLAIM_BATCH
            except DBAPIError as exc:
                log.error("webhook deliveries paused: database unavailable (%s)", exc.orig)
                busy = False
            if not busy:
                stop.wait(self.settings.webhook_poll_seconds)

    def _claim(self) -> list[Attempt]:
        now = utcnow()
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_EXTRA_SECONDS)
        with self.ctx.read_sessions() as s:  # the usual answer, none due: no write lock
            due = list(
                s.execute(
                    select(
                        WebhookDelivery.id,
                        WebhookDelivery.msg_id,
                        WebhookDelivery.attempts,
                        WebhookDelivery.body,
                        WebhookSubscription.url,
                        WebhookSubscription.secret,
                    )
                    .join(
                        WebhookSubscription,
                        WebhookSubscription.id == WebhookDelivery.subscription_id,
                    )
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(CLAIM_BATCH)
                )
            )
        claimed = []
        for delivery_id, msg_id, attempts, body, url, secret in due:
            # Compare-and-set on the attempt count: exactly one process gets each attempt.
            with self.ctx.sessions() as s, s.begin():
                won = s.scalar(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery_id,
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.attempts == attempts,
                    )
                    .values(attempts=attempts + 1, next_attempt_at=now + lease)
                    .returning(WebhookDelivery.id)
                )
            if won is not None:
                claimed.append(Attempt(delivery_id, msg_id, attempts + 1, url, secret, body))
        return claimed

    def _attempt(self, a: Attempt) -> None:
        status: int | None = None
        error: str | None = None
        try:
            request = httpx.Request(
                "POST",
                a.url,
                content=a.body.encode(),
                headers=signed_headers(a.secret, a.msg_id, a.body, int(time.time())),
                extensions={"timeout": self.timeout},
            )
            response = self.transport.handle_request(request)
            # Only the status counts; the body is never read (a receiver could send any size).
            response.close()
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            # ValueError: a URL stored before a parser change; it is retried, then fails,
            # and never stops the dispatcher (the other deliveries go on).
            # The exception's text can quote the URL (and its query): only its class is kept.
            error = f"{type(exc).__name__}: no answer"
        values: dict[str, Any] = {"last_status": status, "last_error": error}
        if error is None:
            values.update(status="delivered", delivered_at=utcnow())
            log.info("webhook %s delivered to %s", a.msg_id, where(a.url))
        elif a.attempts >= self.settings.webhook_max_attempts:
            values.update(status="failed")
            log.warning(
                "webhook %s to %s failed after %d attempts (%s)",
                a.msg_id,
                where(a.url),
                a.attempts,
                error,
            )
        else:
            delay = self.backoff(a.attempts)
            values.update(next_attempt_at=utcnow() + timedelta(seconds=delay))
            log.info(
                "webhook %s to %s: %s; retry %d in %.1f s",
                a.msg_id,
                where(a.url),
                error,
                a.attempts + 1,
                delay,
            )
        with self.ctx.sessions() as s, s.begin():
            s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == a.delivery_id, WebhookDelivery.status == "pending")
                .values(**values)
            )


def dispatch_until(ctx: ServiceContext, stop: threading.Event) -> None:
    """The app lifespan's webhook thread."""
    dispatcher = WebhookDispatcher(ctx)
    try:
        dispatcher.run_forever(stop)
    finally:
        dispatcher.close()


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "msgId": row.msg_id,
        "eventType": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "lastStatus": row.last_status,
        "lastError": row.last_error,
        "nextAttemptAt": row.next_attempt_at.isoformat() if row.status == "pending" else None,
        "createdAt": row.created_at.isoformat(),
        "deliveredAt": row.delivered_at.isoformat() if row.delivered_at else None,
        "payload": json.loads(row.body),
    }


def subscription_json(row: WebhookSubscription) -> dict[str, Any]:
    """A subscription as listed: never its secret."""
    return {
        "id": row.id,
        "ownerOrg": row.owner_org,
        "createdBy": row.created_by,
        "url": row.url,
        "eventTypes": list(row.event_types),
        "scoreThreshold": row.score_threshold,
        "createdAt": row.created_at.isoformat(),
    }
