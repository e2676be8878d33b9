"""Drafts: the record fields a person or an MES fills in, signed into an envelope."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from ledger.errors import LedgerError

if TYPE_CHECKING:  # signing pulls in eth-account: loaded when a draft is signed
    from ledger.keys import Signer
    from ledger.records import Domain, SignedRecord

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


class _DraftRequired(TypedDict):
    subject: str
    kind: str
    partNumber: str
    lotId: str
    eventTime: int
    quantity: int
    defects: int
    payload: dict[str, Any]


class Draft(_DraftRequired, total=False):
    """A record before signing (README "A draft is a record without its signature fields").
    ``nonce`` is optional: without it the time in microseconds is used."""

    nonce: int


def sign_draft(
    signer: Signer,
    domain: Domain,
    draft: Draft | dict[str, Any],
    *,
    salt: str | None = None,
    signed_at: int | None = None,
) -> SignedRecord:
    """Sign a draft: raises a :class:`ledger.errors.LedgerError` (with expected/got) when a
    field is missing or the draft is not a valid record of its kind."""
    from ledger.records import RecordKind
    from ledger.signing import sign_record

    if not isinstance(draft, dict):
        raise LedgerError("a draft is a JSON object", expected="object", got=type(draft).__name__)
    missing = [f for f in DRAFT_FIELDS if f not in draft]
    if missing:
        raise LedgerError(f"draft lacks {missing}", expected=list(DRAFT_FIELDS), got=sorted(draft))
    kinds = [k.value for k in RecordKind]
    if draft["kind"] not in kinds:
        raise LedgerError("unknown kind", expected=kinds, got=draft["kind"])
    _check_event_time(draft["eventTime"])
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
        salt=salt,
        signed_at=signed_at,
    )


def _check_event_time(event_time: object) -> None:
    """eventTime is Unix seconds; an ISO date gets a hint with its value in seconds."""
    if isinstance(event_time, int) and not isinstance(event_time, bool):
        return
    hint = ""
    if isinstance(event_time, str):
        try:
            stamp = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            hint = f"; {event_time} is {int(stamp.timestamp())}"
    raise LedgerError(
        f"eventTime is Unix seconds, an integer (date -d TIME +%s){hint}",
        expected="integer",
        got=event_time,
    )
