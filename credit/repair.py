"""Credit repair: auditor-signed ``improvement`` records change which evidence counts.

A supplier is not judged by one bad quarter for ever. An auditor (the only role that may sign an
improvement) verifies the fix and names, by struct hash, the records it remedies:

* a remedied **complaint** (or its 8D) is closed at the improvement's time: it no longer blocks a
  gate, and an overdue 8D stops ageing;
* a remedied **audit** has the listed findings (``closesNonconformities``; all of them if the
  list is empty) closed, so they no longer count as open nonconformities;
* remedied **inspection** lots are superseded for capability: their measurements leave the Cpk
  estimate and the auditor's ``verifiedCpk`` study for that part takes their place. Their
  defects stay in the PPM: a repair fixes the process, it does not un-ship defectives. The
  ``verifiedCpk`` applies only to the part(s) of the inspection records it supersedes.

A remedy must postdate what it remedies (anchored and dated no earlier than its target): a
closure cannot close something that did not exist yet.

Only improvements that count (anchored and confirmed by the scoring instant, signed by an
auditor) take effect: the caller passes items already filtered by ``usable_evidence``. References
to records that are not in that set (another supplier's, unanchored ones) are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from credit.evidence import EvidenceItem

ALL_FINDINGS = "*"  # closes every finding of a remedied audit


@dataclass(frozen=True)
class RepairView:
    """The effect of the applicable improvements on one supplier's evidence."""

    applied: tuple[str, ...] = ()
    superseded: frozenset[str] = frozenset()
    closed_complaints: dict[str, int] = field(default_factory=dict)  # complaintId -> closed at
    closed_findings: dict[str, frozenset[str]] = field(default_factory=dict)  # audit -> ids
    verified_cpk: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # part -> study


def repair_view(items: Sequence[EvidenceItem]) -> RepairView:
    """Collect what the improvement records among ``items`` remedy (items are usable evidence)."""
    improvements = sorted(
        (it for it in items if it.kind == "improvement"),
        key=lambda it: (it.event_time, it.struct_hash),
    )
    if not improvements:
        return RepairView()
    by_hash = {it.struct_hash.lower(): it for it in items}
    applied: list[str] = []
    superseded: set[str] = set()
    closed_complaints: dict[str, int] = {}
    closed_findings: dict[str, set[str]] = {}
    verified: dict[str, list[tuple[int, float]]] = {}
    for imp in improvements:
        if imp.signer_role != "AUDITOR":
            continue  # defence in depth: the store already refuses these
        payload = imp.payload
        effective = False
        closes = set(payload.get("closesNonconformities") or ()) or {ALL_FINDINGS}
        cpk_parts: set[str] = set()
        for ref in payload.get("remedies", ()):
            target = by_hash.get(ref.lower())
            if target is None or target.subject != imp.subject or target.kind == "improvement":
                continue
            if _seen(target) > _seen(imp) or target.event_time > imp.event_time:
                continue  # a closure must postdate what it closes
            effective = True
            if target.kind == "inspection":
                superseded.add(target.struct_hash.lower())
                cpk_parts.add(target.part_number)
            elif target.kind in ("complaint", "corrective_action"):
                cid = target.payload.get("complaintId")
                if cid is not None:
                    closed_complaints.setdefault(cid, imp.event_time)
            elif target.kind == "audit":
                closed_findings.setdefault(target.struct_hash.lower(), set()).update(closes)
        cpk = payload.get("verifiedCpk")
        if effective and cpk is not None:
            # A verified Cpk speaks only for the part(s) of the inspection records it supersedes.
            for part in sorted(cpk_parts):
                verified.setdefault(part, []).append((imp.event_time, float(cpk)))
        if effective:
            applied.append(imp.struct_hash)
    return RepairView(
        applied=tuple(applied),
        superseded=frozenset(superseded),
        closed_complaints=closed_complaints,
        closed_findings={k: frozenset(v) for k, v in closed_findings.items()},
        verified_cpk=verified,
    )


def _seen(item: EvidenceItem) -> int:
    """When the chain saw ``item`` (its anchoring block time; signedAt where unknown)."""
    return item.anchored_at if item.anchored_at is not None else item.signed_at


def triggers_recompute(item: EvidenceItem) -> bool:
    """Whether anchoring ``item`` should trigger an immediate recompute of its subject's score.

    Any anchored evidence changes the inputs, but an improvement is the one a supplier waits on
    (credit repair): the service recomputes and publishes on its anchoring, not on a schedule.
    """
    return item.kind == "improvement" and item.anchored and item.signer_role == "AUDITOR"
