"""Quality notifications as their parties read them (issue 19): a party's inbox and one thread
with its full history, its forwards to other tiers and the receipts that make every transition
verifiable offline. Shared by the API (``api/routes/notifications.py``) and the dashboard.

Every time here is chain time: a transition happened when the batch that holds its record was
anchored (the block's timestamp), never when its signer says. A transition not yet anchored has
no time; an unanswered notification is judged against the service's clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.context import ServiceContext
from api.errors import ApiError
from api.store.models import Batch, Notification, NotificationEvent, Record
from api.tlog_service import served_receipt
from api.views import envelope
from ledger.records import Role
from traceability.notifications import MAX_FORWARD_DEPTH

# Forwarded threads shown under one notification (breadth over all tiers): one notification
# per partner keeps this small; the bound keeps one answer's size bounded whatever happens.
MAX_FORWARDS_SHOWN = 100
ANSWERS = ("accepted", "declined")
Box = Literal["all", "received", "sent"]


@dataclass(frozen=True)
class _Step:
    event: NotificationEvent
    record: Record
    batch: Batch | None

    @property
    def anchored_at(self) -> int | None:
        b = self.batch
        if b is None or b.status != "confirmed":
            return None
        return b.block_timestamp


def _readable_all(user: Principal) -> bool:
    # Auditors and admins read every record; they read every thread the same way.
    return user.role in (Role.AUDITOR, Role.ADMIN)


def _chain_up(s: Session, row: Notification) -> list[Notification]:
    """``row`` and its origins up to the first notification (bounded)."""
    chain = [row]
    while chain[-1].origin_id is not None and len(chain) <= MAX_FORWARD_DEPTH:
        origin = s.get(Notification, chain[-1].origin_id)
        if origin is None:
            break
        chain.append(origin)
    return chain


def may_read(s: Session, user: Principal, row: Notification) -> bool:
    """A party of the notification, or of any notification it forwards (so an OEM sees its
    tier-1's forward to tier 2 and that answer), reads it; a tier-2 does not read upwards."""
    if _readable_all(user):
        return True
    return any(user.org_id in (n.sender, n.recipient) for n in _chain_up(s, row))


def _steps_of(s: Session, notification_ids: list[str]) -> dict[str, list[_Step]]:
    """The transitions of several notifications, in their order: two queries in all."""
    rows = s.execute(
        select(NotificationEvent, Record)
        .join(Record, Record.struct_hash == NotificationEvent.struct_hash)
        .where(NotificationEvent.notification_id.in_(notification_ids))
        .order_by(NotificationEvent.notification_id, NotificationEvent.seq)
    ).all()
    batch_ids = {r.batch_id for _, r in rows if r.batch_id is not None}
    batches = {b.id: b for b in s.scalars(select(Batch).where(Batch.id.in_(batch_ids)))}
    found: dict[str, list[_Step]] = {n: [] for n in notification_ids}
    for e, r in rows:
        batch = batches.get(r.batch_id) if r.batch_id is not None else None
        found[e.notification_id].append(_Step(e, r, batch))
    return found


def _steps(s: Session, notification_id: str) -> list[_Step]:
    return _steps_of(s, [notification_id])[notification_id]


def _at(steps: Iterable[_Step], transition: str | tuple[str, ...]) -> int | None:
    wanted = (transition,) if isinstance(transition, str) else transition
    return next((st.anchored_at for st in steps if st.event.transition in wanted), None)


def summary(row: Notification, steps: list[_Step], now: int) -> dict[str, Any]:
    """State, deadline and chain-time measures of one notification."""
    sent = _at(steps, "sent")
    acknowledged = _at(steps, "acknowledged")
    answered = _at(steps, ANSWERS)
    answered_step = any(st.event.transition in ANSWERS for st in steps)
    # Overdue: no answer by the deadline. An answer's time is its anchoring time; an answer
    # still pending anchoring will be anchored after now, so "now" bounds it from below.
    judged_at = answered if answered is not None else now
    overdue = row.deadline is not None and judged_at > row.deadline
    return {
        "notificationId": row.notification_id,
        "type": row.type,
        "sender": row.sender,
        "recipient": row.recipient,
        "originId": row.origin_id,
        "depth": row.depth,
        "state": row.state,
        "severity": row.severity,
        "deadline": row.deadline,
        "overdue": overdue,
        "answered": answered_step,
        "createdAt": _at(steps, "created"),
        "updatedAt": max((st.anchored_at or 0 for st in steps), default=0) or None,
        "acknowledgementSeconds": acknowledged - sent
        if acknowledged is not None and sent is not None
        else None,
        "answerSeconds": answered - sent if answered is not None and sent is not None else None,
    }


def inbox(
    ctx: ServiceContext,
    user: Principal,
    *,
    box: Box = "all",
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """The notifications the reader's organisation received and sent, newest first."""
    org = user.org_id or ""
    query = select(Notification).order_by(
        Notification.updated_at.desc(), Notification.notification_id
    )
    if box == "received":
        query = query.where(Notification.recipient == org)
    elif box == "sent":
        query = query.where(Notification.sender == org)
    else:
        query = query.where(or_(Notification.recipient == org, Notification.sender == org))
    if state is not None:
        query = query.where(Notification.state == state)
    now = int(time.time())
    with ctx.sessions() as s:
        rows = list(s.scalars(query.limit(limit).offset(offset)))
        steps = _steps_of(s, [row.notification_id for row in rows])
        items = []
        for row in rows:
            item = summary(row, steps[row.notification_id], now)
            item["direction"] = "received" if row.recipient == org else "sent"
            items.append(item)
    return {"notifications": items, "limit": limit, "offset": offset}


def _history(
    steps: list[_Step], receipts: list[tuple[dict[str, Any], _Step]]
) -> list[dict[str, Any]]:
    """The transitions as served; the anchored ones are queued in ``receipts`` to get their
    receipt once the reading session is closed (a receipt's log proof opens its own)."""
    out = []
    for st in steps:
        confirmed = st.anchored_at is not None
        payload = st.record.payload
        out.append(
            {
                "seq": st.event.seq,
                "transition": st.event.transition,
                "signerOrg": st.event.signer_org,
                "signer": st.record.signer,
                "structHash": st.record.struct_hash,
                "signedAt": st.record.signed_at,
                "anchoredAt": st.anchored_at,
                "status": "anchored" if confirmed else "pending",
                "reason": payload.get("reason") or None,
                "links": payload.get("links"),
                "signed": envelope(st.record),
                "receipt": None,
            }
        )
        if confirmed and st.batch is not None:
            receipts.append((out[-1], st))
    return out


def _links(steps: list[_Step]) -> dict[str, Any]:
    incident: str | None = None
    complaints: list[str] = []
    actions: list[str] = []
    for st in steps:
        links = st.record.payload.get("links") or {}
        incident = links.get("incidentId") or incident
        complaints += [h for h in links.get("complaints", []) if h not in complaints]
        actions += [h for h in links.get("correctiveActions", []) if h not in actions]
    return {"incidentId": incident, "complaints": complaints, "correctiveActions": actions}


def thread(ctx: ServiceContext, user: Principal, notification_id: str) -> dict[str, Any]:
    """One notification: its terms, every transition (record, chain time, receipt), its links,
    and its forwards to other tiers, each with its own history (the tier-2 answer the OEM
    sees). 404 alike for absent and not readable: existence is not leaked."""
    now = int(time.time())
    receipts: list[tuple[dict[str, Any], _Step]] = []
    with ctx.sessions() as s:
        row = s.get(Notification, notification_id)
        if row is None or not may_read(s, user, row):
            raise ApiError(
                404, "notification_not_found", "no such notification", got=notification_id
            )
        root = _one(s, row, now, receipts)
        origin = s.get(Notification, row.origin_id) if row.origin_id else None
        # The origin's id is in the signed record already; its content only to its parties.
        root["origin"] = (
            summary(origin, _steps(s, origin.notification_id), now)
            if origin is not None
            and (_readable_all(user) or user.org_id in (origin.sender, origin.recipient))
            else None
        )
        # Breadth-first over the forwards, bounded in count; each level one query.
        shown, level, parents = 0, [root], {row.notification_id: root}
        truncated = False
        while level:
            ids = [item["notificationId"] for item in level]
            children = list(
                s.scalars(
                    select(Notification)
                    .where(Notification.origin_id.in_(ids))
                    .order_by(Notification.notification_id)
                )
            )
            level = []
            for child in children:
                if shown >= MAX_FORWARDS_SHOWN:
                    truncated = True
                    break
                item = _one(s, child, now, receipts)
                item["forwards"] = []
                parents[child.notification_id] = item
                parent = parents[child.origin_id or ""]
                parent.setdefault("forwards", []).append(item)
                level.append(item)
                shown += 1
        root.setdefault("forwards", [])
        root["forwardsTruncated"] = truncated
    for entry, st in receipts:
        assert st.batch is not None
        entry["receipt"] = served_receipt(ctx, st.record, st.batch)
    return root


def _one(
    s: Session, row: Notification, now: int, receipts: list[tuple[dict[str, Any], _Step]]
) -> dict[str, Any]:
    steps = _steps(s, row.notification_id)
    created = steps[0].record.payload if steps else {}
    return {
        **summary(row, steps, now),
        "description": created.get("description", ""),
        "affectedParts": created.get("affectedParts", []),
        "scope": created.get("scope"),
        "links": _links(steps),
        "history": _history(steps, receipts),
    }
