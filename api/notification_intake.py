"""Intake of quality-notification transitions (issue 19): the state machine of
``traceability.notifications`` run inside the transaction that stores the records, so a
transition is accepted only against the state that transaction commits on.

Used by ``api.intake._store_once``: :meth:`NotificationIntake.admit` for each new notification
record (refusal or None), then :meth:`NotificationIntake.write` once the records are inserted.
Several transitions of one thread in one transaction are checked in order, each against the
state the previous left.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from api.errors import ApiError, from_typed
from api.store.models import Notification, NotificationEvent, RoleEventRow, utcnow
from ledger.records import NotificationPayload, Role, SignedRecord
from traceability.notifications import (
    MAX_FORWARD_DEPTH,
    NotificationError,
    Thread,
    check_transition,
)


def thread_of(row: Notification) -> Thread:
    return Thread(
        notification_id=row.notification_id,
        type=row.type,
        sender=row.sender,
        recipient=row.recipient,
        origin_id=row.origin_id,
        state=row.state,
        depth=row.depth,
    )


class NotificationIntake:
    """The notification threads one intake transaction reads and moves."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._threads: dict[str, Thread | None] = {}
        self._seq: dict[str, int] = {}
        self._new: dict[str, dict[str, Any]] = {}  # notification_id -> row of a created one
        self._moved: set[str] = set()
        self._events: list[dict[str, Any]] = []

    def _thread(self, notification_id: str) -> Thread | None:
        if notification_id not in self._threads:
            # Locked (PostgreSQL; SQLite has one writer anyway): a concurrent transaction that
            # moves the same thread waits for ours and then reads the state ours committed.
            # The step count is read after the lock, so it agrees with that state; the unique
            # (notification, seq) stays as the backstop.
            row = self.session.get(Notification, notification_id, with_for_update=True)
            self._threads[notification_id] = thread_of(row) if row is not None else None
            self._seq[notification_id] = (
                self.session.scalar(
                    select(func.count())
                    .select_from(NotificationEvent)
                    .where(NotificationEvent.notification_id == notification_id)
                )
                or 0
            )
        return self._threads[notification_id]

    def _origin_chain(self, origin_id: str) -> list[Thread]:
        chain: list[Thread] = []
        next_id: str | None = origin_id
        while next_id is not None and len(chain) <= MAX_FORWARD_DEPTH:
            thread = self._thread(next_id)
            if thread is None:
                break
            chain.append(thread)
            next_id = thread.origin_id
        return chain

    def _org_roles(self, org: str) -> frozenset[Role]:
        """Roles the organisation's keys were registered with on chain (the role mirror)."""
        rows = self.session.scalars(
            select(RoleEventRow.role)
            .where(RoleEventRow.org_id == org, RoleEventRow.event == "registered")
            .distinct()
        )
        return frozenset(Role(r) for r in rows)

    def admit(self, signed: SignedRecord, struct_hash: str, role: Role) -> ApiError | None:
        """Check one notification record (signed by a key of ``role``) against its thread;
        remember the move if allowed."""
        record = signed.record
        payload = NotificationPayload.model_validate(signed.payload)
        thread = self._thread(payload.notificationId)
        created = payload.transition == "created"
        try:
            moved = check_transition(
                thread,
                payload,
                record.subject,  # intake checked it is the signer's on-chain organisation
                role,
                origin_chain=self._origin_chain(payload.originId)
                if created and payload.originId
                else (),
                recipient_roles=self._org_roles(payload.recipient) if created else None,
            )
        except NotificationError as exc:
            return from_typed(exc)
        key = moved.notification_id
        self._threads[key] = moved
        if created:
            self._new[key] = {
                "notification_id": key,
                "type": moved.type,
                "sender": moved.sender,
                "recipient": moved.recipient,
                "origin_id": moved.origin_id,
                "depth": moved.depth,
                "severity": payload.severity,
                "deadline": payload.deadline,
                "created_hash": struct_hash,
            }
        else:
            self._moved.add(key)
        self._events.append(
            {
                "struct_hash": struct_hash,
                "notification_id": key,
                "seq": self._seq[key],
                "transition": payload.transition,
                "signer_org": record.subject,
            }
        )
        self._seq[key] += 1
        return None

    def write(self) -> None:
        """Store the moves admitted (after the records they point at are inserted)."""
        if not self._events:
            return
        now = utcnow()
        if self._new:
            self.session.execute(
                insert(Notification),
                [
                    {**row, "state": self._state(key), "updated_at": now}
                    for key, row in self._new.items()
                ],
            )
        for key in sorted(self._moved - set(self._new)):
            self.session.execute(
                update(Notification)
                .where(Notification.notification_id == key)
                .values(state=self._state(key), updated_at=now)
            )
        self.session.execute(insert(NotificationEvent), self._events)

    def _state(self, key: str) -> str:
        thread = self._threads[key]
        assert thread is not None  # only admitted threads are written
        return thread.state
