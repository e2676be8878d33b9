"""Quality notifications (issue 19): who may take which step of an investigation or an alert.

Pure: given a notification's state so far (a :class:`Thread`, the fold of its signed history)
and a proposed transition signed by an organisation, :func:`check_transition` answers the new
state or raises a typed error saying what was expected and what was got. The service runs it
inside the record's own transaction (``api/notification_intake.py``); a verifier holding the
signed records of a thread runs :func:`replay` on them with no service at all.

The rules (docs/notifications.md):

* ``created``, ``sent`` and ``closed`` are the sender's; ``received``, ``acknowledged``,
  ``accepted`` and ``declined`` the recipient's. The organisation is the signer's on-chain
  organisation, which a notification record names as its ``subject``.
* created -> sent -> received -> acknowledged -> accepted | declined -> closed, one step at a
  time, each once. Nothing follows ``closed``.
* An alert is raised by a supplier (to a customer); an investigation is opened by a customer
  (an OEM, or a supplier towards its own supplier) and goes to a supplier.
* Forwarding: a recipient that has received a notification (and not declined it, and its
  sender not closed it) may open a notification of the same type to another tier, naming the
  original as ``originId``. Only the original's recipient may forward it; no organisation
  already in the forwarding chain may be its recipient (no loops); the chain is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ledger.errors import InvalidRecord, LedgerError
from ledger.records import (
    MAX_AFFECTED_PARTS,
    NOTIFICATION_ACTOR,
    NOTIFICATION_TRANSITIONS,
    LotRef,
    NotificationPayload,
    RecordKind,
    Role,
)

__all__ = [
    "FORWARDABLE",
    "MAX_FORWARD_DEPTH",
    "NEXT",
    "NotificationError",
    "Thread",
    "affected_parts",
    "check_transition",
    "draft",
    "replay",
]

# What may follow each state (None: nothing yet). One step at a time: Trace-X's receiving
# system sets RECEIVED by itself; here the recipient signs it, so "it arrived" is evidence too.
NEXT: dict[str | None, tuple[str, ...]] = {
    None: ("created",),
    "created": ("sent",),
    "sent": ("received",),
    "received": ("acknowledged",),
    "acknowledged": ("accepted", "declined"),
    "accepted": ("closed",),
    "declined": ("closed",),
    "closed": (),
}
# States of an original in which its recipient may forward it: it has the notification in
# hand, has not declined it, and the sender has not closed it.
FORWARDABLE: tuple[str, ...] = ("received", "acknowledged", "accepted")
# OEM -> tier 1 -> ... -> tier 8: deeper than any automotive supply chain that is mapped in
# practice, and it bounds the work of walking a chain up to its origin.
MAX_FORWARD_DEPTH = 8


class NotificationError(LedgerError):
    """A notification transition that is not allowed to this party in this state."""

    code = "notification_refused"
    http_status = 409

    def __init__(self, code: str, message: str, *, expected: object, got: object) -> None:
        super().__init__(message, expected=expected, got=got)
        self.code = code


@dataclass(frozen=True)
class Thread:
    """A notification's state: its fixed names and the last transition taken."""

    notification_id: str
    type: str
    sender: str
    recipient: str
    origin_id: str | None
    state: str
    depth: int = 0  # 0 for an original; a forward is one deeper than what it forwards


def _names(thread: Thread, payload: NotificationPayload) -> None:
    want = (thread.notification_id, thread.type, thread.sender, thread.recipient)
    got = (payload.notificationId, payload.type, payload.sender, payload.recipient)
    if want != got:
        raise NotificationError(
            "notification_mismatch",
            f"notification {thread.notification_id} has another id, type, sender or recipient",
            expected=list(want),
            got=list(got),
        )


def _roles(
    payload: NotificationPayload, signer_role: Role, recipient_roles: frozenset[Role] | None
) -> None:
    if payload.type == "alert" and signer_role is not Role.SUPPLIER:
        raise NotificationError(
            "notification_wrong_role",
            "an alert is raised by a supplier towards its customers",
            expected=Role.SUPPLIER.value,
            got=signer_role.value,
        )
    if recipient_roles is None:
        return  # offline replay: the recipient's role is the service's check
    if not recipient_roles:
        raise NotificationError(
            "notification_recipient_unknown",
            "the recipient is no registered organisation",
            expected="an organisation with a participant key",
            got=payload.recipient,
        )
    if payload.type == "investigation" and Role.SUPPLIER not in recipient_roles:
        raise NotificationError(
            "notification_wrong_role",
            "an investigation goes to a supplier",
            expected=Role.SUPPLIER.value,
            got=sorted(r.value for r in recipient_roles),
        )
    if not recipient_roles & {Role.SUPPLIER, Role.OEM}:
        raise NotificationError(
            "notification_wrong_role",
            "a notification goes to an OEM or a supplier",
            expected=["OEM", "SUPPLIER"],
            got=sorted(r.value for r in recipient_roles),
        )


def _forward(payload: NotificationPayload, chain: Sequence[Thread], check_state: bool) -> int:
    """Check a forward against its origin chain (origin first); answer its depth."""
    if not chain or chain[0].notification_id != payload.originId:
        raise NotificationError(
            "notification_origin_unknown",
            "originId names no notification",
            expected="the id of a notification this organisation received",
            got=payload.originId,
        )
    origin = chain[0]
    if payload.sender != origin.recipient:
        raise NotificationError(
            "notification_forward_not_recipient",
            "only the recipient of a notification may forward it",
            expected=origin.recipient,
            got=payload.sender,
        )
    if check_state and origin.state not in FORWARDABLE:
        raise NotificationError(
            "notification_origin_state",
            f"notification {origin.notification_id} cannot be forwarded in its state",
            expected=list(FORWARDABLE),
            got=origin.state,
        )
    if payload.type != origin.type:
        raise NotificationError(
            "notification_mismatch",
            "a forward keeps its origin's type",
            expected=origin.type,
            got=payload.type,
        )
    depth = origin.depth + 1
    if depth > MAX_FORWARD_DEPTH:
        raise NotificationError(
            "notification_forward_depth",
            "the forwarding chain is too deep",
            expected=f"<= {MAX_FORWARD_DEPTH} forwards",
            got=depth,
        )
    involved = {t.sender for t in chain} | {t.recipient for t in chain}
    if payload.recipient in involved:
        raise NotificationError(
            "notification_forward_loop",
            "a forward goes to an organisation not yet in its chain",
            expected=f"none of {sorted(involved)}",
            got=payload.recipient,
        )
    return depth


def check_transition(
    thread: Thread | None,
    payload: NotificationPayload,
    signer_org: str,
    signer_role: Role,
    *,
    origin_chain: Sequence[Thread] = (),
    recipient_roles: frozenset[Role] | None = None,
    origin_state_checked: bool = True,
) -> Thread:
    """The thread after ``payload``'s transition signed by ``signer_org`` (whose on-chain role
    is ``signer_role``), or :class:`NotificationError`.

    ``thread`` is the notification's state (None before ``created``). For a forward,
    ``origin_chain`` holds the notification it forwards, then that one's origin, and so on.
    ``recipient_roles`` are the roles the recipient organisation holds; None skips the checks
    that need them (an offline replay); ``origin_state_checked=False`` skips whether the
    origin was in a forwardable state at that moment (see :func:`replay`).
    """
    step = payload.transition
    actor = NOTIFICATION_ACTOR[step]
    if thread is not None:
        _names(thread, payload)
    allowed = NEXT[thread.state if thread is not None else None]
    if step not in allowed:
        if thread is None:
            raise NotificationError(
                "notification_unknown",
                f"notification {payload.notificationId} was never created",
                expected="created",
                got=step,
            )
        raise NotificationError(
            "notification_exists" if step == "created" else "notification_wrong_state",
            f"notification {thread.notification_id} is {thread.state}: {step} is not next",
            expected=list(allowed),
            got=step,
        )
    party = payload.sender if actor == "sender" else payload.recipient
    if signer_org != party:
        raise NotificationError(
            "notification_wrong_party",
            f"{step} is the {actor}'s step",
            expected=party,
            got=signer_org,
        )
    if thread is None:
        _roles(payload, signer_role, recipient_roles)
        depth = (
            0 if payload.originId is None else _forward(payload, origin_chain, origin_state_checked)
        )
        return Thread(
            notification_id=payload.notificationId,
            type=payload.type,
            sender=payload.sender,
            recipient=payload.recipient,
            origin_id=payload.originId,
            state=step,
            depth=depth,
        )
    return replace(thread, state=step)


def replay(
    steps: Iterable[tuple[NotificationPayload, str, Role]],
    *,
    origin_chain: Sequence[Thread] = (),
) -> Thread:
    """Fold one notification's transitions (payload, signer organisation, signer role) through
    :func:`check_transition`: a verifier's check, from signed records alone, that the thread
    is one the rules allow. Raises on the first step they refuse.

    The steps may come in any order: the rules allow at most one order (each state has one
    next step, or the two exclusive answers), so they are replayed in that one. For a forward,
    ``origin_chain`` is the replayed origin (then its origin...): the forward's sender must be
    its recipient, its type the same, its recipient new to the chain. Whether the origin had
    been received and was still open at that moment is the service's intake check; offline,
    records anchored in one batch carry no order between threads, so it is not re-judged here.
    """
    rank = {t: i for i, t in enumerate(NOTIFICATION_TRANSITIONS)}
    thread: Thread | None = None
    for payload, org, role in sorted(steps, key=lambda s: rank[s[0].transition]):
        thread = check_transition(
            thread, payload, org, role, origin_chain=origin_chain, origin_state_checked=False
        )
    if thread is None:
        raise NotificationError(
            "notification_unknown", "an empty history", expected="created", got=None
        )
    return thread


def affected_parts(
    listed: Iterable[LotRef | dict[str, Any]] = (),
    *,
    scope: Callable[[], Iterable[LotRef | dict[str, Any]]] | None = None,
) -> list[LotRef]:
    """The affected parts of a new notification: those ``listed`` (e.g. read from a file) and
    those ``scope`` answers (the genealogy's recall scope, where-used of a suspect lot), each
    node once, in order. Raises InvalidRecord beyond :data:`MAX_AFFECTED_PARTS` (send one
    notification per partner, each with its own parts)."""
    found: dict[tuple[str, str, str], LotRef] = {}
    for part in [*listed, *(scope() if scope is not None else ())]:
        ref = part if isinstance(part, LotRef) else LotRef.model_validate(part)
        found.setdefault(ref.node, ref)
    if len(found) > MAX_AFFECTED_PARTS:
        raise InvalidRecord(
            "too many affected parts for one notification: split it per partner",
            expected=f"<= {MAX_AFFECTED_PARTS}",
            got=len(found),
        )
    return list(found.values())


def draft(
    payload: NotificationPayload, event_time: int, signer_org: str | None = None
) -> dict[str, Any]:
    """The record draft (the fields ``qledger sign`` takes) that carries one transition: the
    struct names the thread (lotId) and the step (partNumber); its subject is the signer's
    organisation (default: the party whose turn it is)."""
    return {
        "subject": signer_org or payload.actor,
        "kind": RecordKind.NOTIFICATION.value,
        "partNumber": payload.transition,
        "lotId": payload.notificationId,
        "eventTime": event_time,
        "quantity": len(payload.affectedParts),
        "defects": 0,
        "payload": payload.model_dump(mode="json", exclude_defaults=True),
    }
