"""Drafts: the record fields a person or an MES fills in, signed into an envelope."""

from __future__ import annotations

import time
from typing import Any, TypedDict

from ledger.errors import LedgerError
from ledger.keys import Signer
from ledger.records import Domain, SignedRecord
from ledger.signing import sign_record

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
        salt=salt,
        signed_at=signed_at,
    )
