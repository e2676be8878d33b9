"""Small helpers shared by the credit tests."""

from __future__ import annotations

from dataclasses import replace

from credit.evidence import EvidenceItem


def unanchored(item: EvidenceItem) -> EvidenceItem:
    """The same signed record before its batch is anchored."""
    return replace(item, anchored=False, anchored_at=None)
