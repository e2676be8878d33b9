"""Gate policy as code, and credit repair that only counts once the auditor's record is anchored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest

from credit.evidence import EvidenceItem
from credit.features import anchor_time
from credit.gates import POLICY_DIR, PolicyError, default_policy, parse_policy
from credit.repair import triggers_recompute
from credit.score import score_supplier
from simulator.population import AUDITOR_ID, DAY, OEM_ID, Population
from tests.credit.credit_helpers import unanchored


def test_policy_file_is_versioned_and_hashed() -> None:
    policy = default_policy()
    raw = (POLICY_DIR / "trial_gate.toml").read_bytes()
    assert policy.ref == "new-product-trial@2.0.0"
    assert policy.sha256 == hashlib.sha256(raw).hexdigest()
    assert policy.min_score == 70.0
    assert {r.fact for r in policy.requirements} == {
        "open_critical_complaints",
        "open_major_nonconformities",
    }


@pytest.mark.parametrize(
    "text",
    [
        b'id = "x"\nversion = "1"\n[score]\nmin = 170\n',
        b'id = "x"\nversion = "1"\n[score]\nmin = 70\n[[require]]\nfact = "bogus"\nop = "=="\n'
        b'value = 0\nreason = "r"\n',
        b'id = "x"\nversion = "1"\n[score]\nmin = 70\n[[require]]\nfact = "cpk_min"\nop = "~"\n'
        b'value = 0\nreason = "r"\n',
        b'version = "1"\n',
    ],
)
def test_malformed_policies_are_refused(text: bytes) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_feature_requirement_fails_on_missing_evidence() -> None:
    policy = parse_policy(
        b'id = "ppap"\nversion = "2"\n[score]\nmin = 0\n[[require]]\n'
        b'fact = "cpk_min"\nop = ">="\nvalue = 1.67\nreason = "PPAP Cpk"\n'
    )
    resp = score_supplier([], "SUP-NONE", 1_750_000_000, policy=policy, with_what_if=False)
    assert resp.gate.outcome == "fail" and resp.gate.policy == "ppap@2"
    assert resp.gate.blocking[0].actual is None


def _best(pop: Population, fl: Callable[[str], float]) -> tuple[str, float]:
    scored = [
        (
            score_supplier(
                pop.items,
                t.supplier_id,
                pop.end,
                fl_participation=fl(t.supplier_id),
                with_what_if=False,
            ).score,
            t.supplier_id,
        )
        for t in pop.suppliers
    ]
    score, sid = max(scored)
    return sid, score


def _sign(pop: Population, org: str, anchored: bool, **fields: object) -> EvidenceItem:
    return pop.sign(org, anchored=anchored, **fields)


def test_open_critical_complaint_blocks_the_trial_gate_until_remedied(
    population: Population, fl: Callable[[str], float]
) -> None:
    pop = population
    sid, score = _best(pop, fl)
    assert score >= 70
    part = pop.truth(sid).parts[0].part_number
    t = pop.end - 3 * DAY
    complaint = _sign(
        pop,
        OEM_ID,
        True,
        subject=sid,
        kind="complaint",
        part_number=part,
        lot_id=f"{sid}-X1",
        event_time=t,
        signed_at=t,
        quantity=100,
        defects=3,
        payload={
            "complaintId": "CMP-TEST-1",
            "status": "open",
            "severity": "critical",
            "defectCode": "DIM-X",
            "customerDisruption": True,
        },
    )
    as_of = pop.end + DAY
    blocked = score_supplier(pop.items, sid, as_of, fl_participation=fl(sid))
    assert blocked.gate.outcome == "fail"
    assert [b.fact for b in blocked.gate.blocking] == ["open_critical_complaints"]
    assert blocked.gate.distance == pytest.approx(blocked.score - 70)
    assert complaint.struct_hash in blocked.evidence_ids

    fix = dict(
        subject=sid,
        kind="improvement",
        part_number=part,
        lot_id=f"{sid}-X1",
        event_time=pop.end,
        signed_at=pop.end,
        quantity=0,
        defects=0,
        payload={
            "remedies": [complaint.struct_hash],
            "evidenceType": "8d_verification",
            "summary": "containment and corrective action verified on site",
        },
    )
    pending = _sign(pop, AUDITOR_ID, False, **fix)
    assert not triggers_recompute(pending)
    still = score_supplier(pop.items, sid, as_of, fl_participation=fl(sid))
    assert still.gate.outcome == "fail" and still.repairs_applied == []

    pop.items[-1] = anchored = replace(pending, anchored=True, anchored_at=pop.end + 600)
    assert triggers_recompute(anchored)
    repaired = score_supplier(pop.items, sid, as_of, fl_participation=fl(sid))
    assert repaired.repairs_applied == [anchored.struct_hash]
    assert repaired.gate.blocking == []
    assert repaired.gate.outcome == ("pass" if repaired.score >= 70 else "fail")


def test_repair_lifts_a_score_only_after_the_auditor_record_is_anchored(
    population: Population, fl: Callable[[str], float]
) -> None:
    pop = population
    as_of = pop.end + DAY
    scored = {
        t.supplier_id: score_supplier(
            pop.items, t.supplier_id, as_of, fl_participation=fl(t.supplier_id), with_what_if=False
        )
        for t in pop.suppliers
    }
    # The supplier whose capability costs it the most points.
    sid = min(
        scored,
        key=lambda s: next(c.points for c in scored[s].contributions if c.feature == "cpk_min"),
    )
    before = scored[sid]
    assert next(c.value for c in before.contributions if c.feature == "cpk_min") < 1.33
    # The auditor's capability study supersedes every inspection lot of the window (the window
    # sits on anchoring time: a lot made before it but anchored inside it is in it).
    lots = [
        i
        for i in pop.items
        if i.subject == sid and i.kind == "inspection" and anchor_time(i) > as_of - 180 * DAY
    ]
    parts = sorted({i.part_number for i in lots})
    studies = []
    for part in parts:
        studies.append(
            _sign(
                pop,
                AUDITOR_ID,
                False,
                subject=sid,
                kind="improvement",
                part_number=part,
                lot_id=f"{sid}-STUDY",
                event_time=pop.end,
                signed_at=pop.end,
                quantity=0,
                defects=0,
                payload={
                    "remedies": [i.struct_hash for i in lots if i.part_number == part][:100],
                    "evidenceType": "process_capability_study",
                    "verifiedCpk": 1.9,
                    "summary": "third-party capability study after repair",
                },
            )
        )
    unanchored_score = score_supplier(
        pop.items, sid, as_of, fl_participation=fl(sid), with_what_if=False
    )
    assert unanchored_score.model_dump() == before.model_dump()

    # Signed by a supplier key instead of an auditor's: not a repair, even when anchored.
    forged = [
        replace(s, anchored=True, anchored_at=pop.end + 600, signer_role="SUPPLIER")
        for s in studies
    ]
    assert (
        score_supplier(
            [*pop.items[: -len(studies)], *forged],
            sid,
            as_of,
            fl_participation=fl(sid),
            with_what_if=False,
        ).score
        == before.score
    )

    anchored = [replace(s, anchored=True, anchored_at=pop.end + 600) for s in studies]
    items = [*pop.items[: -len(studies)], *anchored]
    after = score_supplier(items, sid, as_of, fl_participation=fl(sid), with_what_if=False)
    assert after.score > before.score
    # Exactly the new studies were applied (beside any repair the supplier already had).
    new = set(after.repairs_applied) - set(before.repairs_applied)
    assert sorted(new) == sorted(s.struct_hash for s in anchored)
    cpk_after = next(c for c in after.contributions if c.feature == "cpk_min")
    assert cpk_after.value >= 1.33 and cpk_after.points > next(
        c.points for c in before.contributions if c.feature == "cpk_min"
    )
    # History: scored at an instant before the improvement was anchored, nothing changes.
    earlier = score_supplier(items, sid, pop.end, fl_participation=fl(sid), with_what_if=False)
    assert earlier.repairs_applied == []
    # And back to unanchored (e.g. a reorg dropped the batch): the repair no longer counts.
    undone = [*pop.items[: -len(studies)], *(unanchored(s) for s in anchored)]
    assert (
        score_supplier(undone, sid, as_of, fl_participation=fl(sid), with_what_if=False).score
        == before.score
    )


def test_improvement_cannot_remedy_another_suppliers_records(
    population: Population, fl: Callable[[str], float]
) -> None:
    pop = population
    victim, other = pop.suppliers[0].supplier_id, pop.suppliers[1].supplier_id
    theirs = [i.struct_hash for i in pop.items if i.subject == other and i.kind == "inspection"]
    before = score_supplier(pop.items, victim, pop.end + DAY, with_what_if=False)
    _sign(
        pop,
        AUDITOR_ID,
        True,
        subject=victim,
        kind="improvement",
        part_number=pop.truth(victim).parts[0].part_number,
        lot_id="X",
        event_time=pop.end,
        signed_at=pop.end,
        quantity=0,
        defects=0,
        payload={
            "remedies": theirs[:5],
            "evidenceType": "process_capability_study",
            "verifiedCpk": 3.0,
        },
    )
    after = score_supplier(pop.items, victim, pop.end + DAY, with_what_if=False)
    assert after.repairs_applied == [] and after.score == before.score


def test_a_verified_cpk_covers_only_the_parts_it_supersedes_and_never_predates_them(
    population: Population,
) -> None:
    from credit.repair import repair_view

    pop = population
    truth = next(t for t in pop.suppliers if len(t.parts) >= 2)
    sid = truth.supplier_id
    part_a, part_b = truth.parts[0].part_number, truth.parts[1].part_number
    lots_a = [i for i in pop.items if i.subject == sid and i.kind == "inspection"][-200:]
    lots_a = [i for i in lots_a if i.part_number == part_a][:5]
    study = _sign(
        pop,
        AUDITOR_ID,
        True,
        subject=sid,
        kind="improvement",
        part_number=part_b,  # the study names part B, but remedies lots of part A
        lot_id=f"{sid}-STUDY-X",
        event_time=pop.end,
        signed_at=pop.end,
        quantity=0,
        defects=0,
        payload={
            "remedies": [i.struct_hash for i in lots_a],
            "evidenceType": "process_capability_study",
            "verifiedCpk": 2.0,
        },
    )
    view = repair_view([*lots_a, study])
    assert set(view.verified_cpk) == {part_a}  # never the part the study merely names
    # A closure dated (and anchored) before what it closes closes nothing.
    early = replace(study, event_time=lots_a[0].event_time - DAY, anchored_at=lots_a[0].signed_at)
    assert repair_view([*lots_a, early]).applied == ()
