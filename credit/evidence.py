"""Evidence as the credit code sees it: one flat, immutable item per signed record.

The store builds these from its rows (record + payload + anchoring state); the simulator builds
them from the records it signs. Everything downstream (features, repair, responsibility) reads
only ``EvidenceItem`` so that the demo, the tests and production score the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_hash.auto import keccak

from ledger.eip712 import record_struct_hash
from ledger.records import KIND_SIGNER_ROLE, RecordKind, SignedRecord

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


def counts_as_of(item: EvidenceItem, as_of: int) -> bool:
    """Whether ``item`` may move a score computed at ``as_of``.

    Only anchored (confirmed) evidence counts, and only if it was anchored by ``as_of`` so that a
    score recomputed later for the same instant uses the same evidence. The role check repeats the
    store's check: a complaint that an OEM did not sign is not a complaint.
    """
    if not item.anchored:
        return False
    if item.anchored_at is not None and item.anchored_at > as_of:
        return False
    if item.event_time > as_of:
        return False
    try:
        allowed = KIND_SIGNER_ROLE[RecordKind(item.kind)].value
    except ValueError:
        return False
    return item.signer_role == allowed


def usable_evidence(items: Iterable[EvidenceItem], subject: str, as_of: int) -> list[EvidenceItem]:
    """The items about ``subject`` that count at ``as_of`` (see ``counts_as_of``)."""
    return [it for it in items if it.subject == subject and counts_as_of(it, as_of)]


def evidence_root(struct_hashes: Sequence[str]) -> str:
    """A digest committing to exactly the set of records a score used.

    keccak256 over the sorted, de-duplicated 32-byte struct hashes: order-free, reproducible by
    anyone holding the record ids listed in the response, and each id is itself anchored on chain.
    The empty set has the digest of the empty string.
    """
    unique = sorted({h.lower() for h in struct_hashes})
    return "0x" + keccak(b"".join(bytes.fromhex(h[2:]) for h in unique)).hex()
