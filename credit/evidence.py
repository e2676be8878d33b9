"""Which evidence counts for a score, and the digest committing to the evidence a score used.

``EvidenceItem`` itself lives in :mod:`ledger.evidence` (the simulator builds items too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_hash.auto import keccak

from ledger.evidence import DAY, EvidenceItem, item_from_signed
from ledger.records import KIND_SIGNER_ROLES, RecordKind, Role

__all__ = [
    "DAY",
    "EvidenceItem",
    "counts_as_of",
    "evidence_root",
    "item_from_signed",
    "usable_evidence",
]


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
        allowed = KIND_SIGNER_ROLES[RecordKind(item.kind)]
        role = Role(item.signer_role)
    except ValueError:
        return False
    return role in allowed


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
