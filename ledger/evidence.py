"""A signed record as evidence: one flat, immutable item per record plus its anchoring state.

The service's store builds these from its rows (record + payload + anchoring state); the
population simulator builds them from the records it signs. Everything that scores evidence
reads only ``EvidenceItem``, so the demo, the tests and production score the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.eip712 import record_struct_hash
from ledger.records import SignedRecord

DAY = 86_400  # seconds; record times are Unix seconds


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One signed record plus its anchoring state.

    ``anchored`` means the record's batch root is on chain *and* confirmed; ``anchored_at`` is
    the block timestamp of that batch (None when the store does not know it, e.g. training data).
    """

    struct_hash: str
    kind: str
    subject: str
    signer: str
    signer_role: str
    part_number: str
    lot_id: str
    event_time: int
    signed_at: int
    quantity: int
    defects: int
    payload: dict[str, Any] = field(hash=False, compare=False)
    anchored: bool = False
    anchored_at: int | None = None


def item_from_signed(
    signed: SignedRecord,
    signer_role: str,
    *,
    anchored: bool = False,
    anchored_at: int | None = None,
) -> EvidenceItem:
    """Flatten a signed envelope; the struct hash is recomputed, never taken on trust."""
    rec = signed.record
    return EvidenceItem(
        struct_hash="0x" + record_struct_hash(rec).hex(),
        kind=rec.kind.value,
        subject=rec.subject,
        signer=rec.signer,
        signer_role=signer_role,
        part_number=rec.partNumber,
        lot_id=rec.lotId,
        event_time=rec.eventTime,
        signed_at=rec.signedAt,
        quantity=rec.quantity,
        defects=rec.defects,
        payload=signed.payload,
        anchored=anchored,
        anchored_at=anchored_at,
    )
