"""Features: only anchored, confirmed, correctly signed evidence counts; missing is explicit."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from credit.evidence import EvidenceItem, evidence_root
from credit.features import (
    FEATURE_NAMES,
    FEATURES,
    compute_features,
    schema_document,
)
from credit.score import score_supplier
from simulator.population import DAY, Population
from tests.credit.credit_helpers import unanchored

T0 = 1_750_000_000


def _item(
    kind: str,
    payload: dict,
    *,
    t: int,
    quantity: int = 0,
    defects: int = 0,
    role: str = "SUPPLIER",
    lot: str = "L1",
    part: str = "P1",
    n: int = 0,
    subject: str = "SUP-X",
    anchored: bool = True,
) -> EvidenceItem:
    return EvidenceItem(
        f"0x{n:064x}",
        kind,
        subject,
        "0x" + "11" * 20,
        role,
        part,
        lot,
        t,
        t,
        quantity,
        defects,
        payload,
        anchored,
        t + 600 if anchored else None,
    )


def _inspection(
    n: int, t: int, values: list[float], defects: int = 0, sample: int = 125, lot: str | None = None
) -> EvidenceItem:
    payload = {
        "disposition": "conformant",
        "inspectionType": "final",
        "lotSize": 1000,
        "sampleSize": sample,
        "defectList": [],
        "sensorReport": [
            {"type": "d", "uom": "MMT", "lsl": 9.0, "usl": 11.0, "key": True, "values": values}
        ],
    }
    return _item(
        "inspection", payload, t=t, quantity=sample, defects=defects, n=n, lot=lot or f"L{n}"
    )


def test_schema_documents_every_feature() -> None:
    doc = schema_document()
    assert [f["name"] for f in doc["features"]] == list(FEATURE_NAMES)
    for f in FEATURES:
        assert f.unit and f.definition and f.missing_policy
        assert f.monotone in (1, -1)
        assert f.lo <= f.missing_value <= f.hi


def test_ppm_cpk_and_delivery_are_computed_from_the_records() -> None:
    end = T0 + 10 * DAY
    a = [9.8, 10.0, 10.2, 10.1, 9.9, 10.0, 10.1, 9.9, 10.0, 10.0]
    b = [v + 0.1 for v in a]
    items = [_inspection(1, T0, a, defects=1), _inspection(2, T0 + DAY, b, defects=0, sample=75)]
    items += [
        _item(
            "delivery",
            {"purchaseOrder": "PO1", "promisedTime": T0, "deliveredTime": t},
            t=t,
            quantity=1000,
            lot=f"L{k + 1}",
            n=10 + k,
        )
        for k, t in enumerate((T0 - 3600, T0 + 2 * DAY))
    ]
    vec = compute_features(items, "SUP-X", end)
    assert vec.observed["defect_ppm"] == pytest.approx(1e6 * 1 / 200)
    mean = (sum(a) + sum(b)) / 20
    ss = sum((v - sum(a) / 10) ** 2 for v in a) + sum((v - sum(b) / 10) ** 2 for v in b)
    sigma = math.sqrt(ss / 18)
    assert vec.observed["cpk_min"] == pytest.approx(min(11 - mean, mean - 9) / (3 * sigma))
    assert vec.observed["on_time_delivery"] == 0.5
    assert vec.observed["evidence_completeness"] == 1.0
    assert set(vec.evidence_ids) == {i.struct_hash for i in items}


def test_missing_evidence_is_flagged_and_never_perfect(model: object) -> None:
    vec = compute_features([], "SUP-NONE", T0)
    assert set(vec.missing) == {
        "defect_ppm",
        "cpk_min",
        "cpk_trend",
        "on_time_delivery",
        "complaint_response_hours",
        "eight_d_closure_days",
        "audit_major_nc",
        "audit_minor_nc",
        "fl_participation",
    }
    for f in FEATURES:
        assert vec.value(f.name) == f.missing_value
    resp = score_supplier([], "SUP-NONE", T0, with_what_if=False)
    assert resp.score < resp.gate.threshold < 100
    assert resp.score < resp.base_value  # no evidence is below the average supplier
    assert resp.evidence_count == 0 and resp.evidence_root == evidence_root([])
    assert {"PPM_MISSING", "CPK_MISSING"} & {r.code for r in resp.reason_codes}


def test_overdue_answers_count_at_their_age() -> None:
    complaint = _item(
        "complaint",
        {"complaintId": "C1", "status": "open", "severity": "major", "defectCode": "X"},
        t=T0,
        role="OEM",
        n=1,
    )
    early = compute_features([complaint], "SUP-X", T0 + 24 * 3600)
    assert early.observed["complaint_response_hours"] is None  # not yet due: not judged
    late = compute_features([complaint], "SUP-X", T0 + 40 * DAY)
    assert late.observed["complaint_response_hours"] == pytest.approx(40 * 24)
    assert late.observed["eight_d_closure_days"] == pytest.approx(40)


def test_unanchored_evidence_does_not_move_a_score(
    population: Population, fl: Callable[[str], float]
) -> None:
    pop = population
    sid = pop.suppliers[0].supplier_id
    before = score_supplier(pop.items, sid, pop.end, fl_participation=fl(sid))
    # Bad news that is signed but not (yet) anchored: every inspection again, all defective,
    # plus critical complaints and a failed audit.
    own = [i for i in pop.items if i.subject == sid]
    extra = [
        unanchored(
            replace(
                i,
                struct_hash=i.struct_hash[:-4] + "beef",
                event_time=pop.end - DAY,
                defects=i.quantity,
            )
        )
        for i in own
        if i.kind in ("inspection", "complaint", "audit")
    ]
    after = score_supplier([*pop.items, *extra], sid, pop.end, fl_participation=fl(sid))
    assert after.model_dump() == before.model_dump()
    # Anchored, but only after the scoring instant: also no effect at that instant.
    late = [replace(i, anchored=True, anchored_at=pop.end + 1) for i in extra]
    assert (
        score_supplier([*pop.items, *late], sid, pop.end, fl_participation=fl(sid)).score
        == before.score
    )


def test_evidence_signed_by_the_wrong_role_is_ignored() -> None:
    fake = _item(
        "complaint",
        {"complaintId": "C1", "status": "open", "severity": "critical", "defectCode": "X"},
        t=T0,
        role="SUPPLIER",
        n=1,
    )
    vec = compute_features([fake], "SUP-X", T0 + DAY)
    assert vec.observed["complaints_per_month"] == 0 and vec.facts.open_critical_complaints == 0


def test_window_bounds_the_evidence() -> None:
    vals = [10.0 + 0.1 * (k % 3) for k in range(10)]
    old = _inspection(1, T0 - 200 * DAY, vals, defects=5)
    new = _inspection(2, T0 - 10 * DAY, vals, defects=0)
    vec = compute_features([old, new], "SUP-X", T0, window_days=180)
    assert vec.observed["defect_ppm"] == 0.0
    assert old.struct_hash not in vec.evidence_ids
    wide = compute_features([old, new], "SUP-X", T0, window_days=365)
    assert wide.observed["defect_ppm"] == pytest.approx(1e6 * 5 / 250)
