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
from credit.stats import capability_lower_bound, ppm_upper_bound
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


def _spec(n: int, t: int, lsl: float = 9.0, usl: float = 11.0, key: bool = True) -> EvidenceItem:
    chars = [{"type": "d", "uom": "MMT", "lsl": lsl, "usl": usl}]
    if key:
        chars[0]["specialCharacteristic"] = "SC"
    payload = {"revision": f"r{n}", "effectiveTime": t, "characteristics": chars}
    return _item("part_spec", payload, t=t, role="OEM", n=n, lot=f"r{n}", quantity=1)


def _receipt(
    n: int, t: int, lot: str, promised: int, sample: int = 0, defects: int = 0
) -> EvidenceItem:
    payload: dict = {
        "purchaseOrder": "PO1",
        "promisedTime": promised,
        "receivedTime": t,
        "quantity": 1000,
    }
    if sample:
        payload["incomingInspection"] = {
            "sampleSize": sample,
            "defectList": [{"code": "X", "count": defects, "severity": "major"}] if defects else [],
        }
    return _item(
        "goods_receipt", payload, t=t, role="OEM", n=n, lot=lot, quantity=1000, defects=defects
    )


def test_ppm_cpk_and_delivery_are_computed_from_the_records() -> None:
    end = T0 + 10 * DAY
    a = [9.8, 10.0, 10.2, 10.1, 9.9, 10.0, 10.1, 9.9, 10.0, 10.0]
    b = [v + 0.1 for v in a]
    # The supplier writes limits 0..20 and no key flag: neither is read.
    ins = [_inspection(1, T0, a, defects=1), _inspection(2, T0 + DAY, b, defects=0, sample=75)]
    for it in ins:
        it.payload["sensorReport"][0].update(lsl=0.0, usl=20.0, key=False)
    items = [_spec(9, T0 - DAY), *ins]
    items += [
        _receipt(10, T0 + 3 * DAY, "L1", promised=T0 + 2 * DAY, sample=100, defects=1),
        _receipt(11, T0 + 4 * DAY, "L2", promised=T0 + 5 * DAY, sample=200),
    ]
    vec = compute_features(items, "SUP-X", end)
    assert vec.observed["defect_ppm"] == pytest.approx(ppm_upper_bound(1, 300))
    mean = (sum(a) + sum(b)) / 20
    ss = sum((v - sum(a) / 10) ** 2 for v in a) + sum((v - sum(b) / 10) ** 2 for v in b)
    sigma = math.sqrt(ss / 18)
    cpk = min(11 - mean, mean - 9) / (3 * sigma)  # the OEM's limits, not the supplier's
    assert vec.observed["cpk_min"] == pytest.approx(capability_lower_bound(cpk, 20))
    assert vec.observed["on_time_delivery"] == 0.5  # the OEM's promised and received times
    assert vec.observed["evidence_completeness"] == 1.0
    assert set(vec.evidence_ids) == {i.struct_hash for i in items}
    assert vec.facts.oem_received_lots == 2


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
    # No evidence at all is a thin file: no number at all, and the gate fails for it.
    resp = score_supplier([], "SUP-NONE", T0, with_what_if=False)
    assert resp.score is None and resp.status == "insufficient_evidence"
    assert resp.gate.outcome == "fail" and resp.gate.insufficient_evidence
    assert resp.evidence_count == 0 and resp.evidence_root == evidence_root([])


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
    # Chain time: the complaint is open from its anchoring (600 s after signing here).
    age = 40 * DAY - 600
    assert late.observed["complaint_response_hours"] == pytest.approx(age / 3600)
    assert late.observed["eight_d_closure_days"] == pytest.approx(age / DAY)


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
    """The window sits on anchoring time: what the chain saw before it does not count."""
    old = _receipt(1, T0 - 200 * DAY, "L1", promised=T0, sample=100, defects=5)
    new = _receipt(2, T0 - 10 * DAY, "L2", promised=T0, sample=100)
    vec = compute_features([old, new], "SUP-X", T0, window_days=180)
    assert vec.observed["defect_ppm"] == pytest.approx(ppm_upper_bound(0, 100))
    assert old.struct_hash not in vec.evidence_ids
    wide = compute_features([old, new], "SUP-X", T0, window_days=365)
    assert wide.observed["defect_ppm"] == pytest.approx(ppm_upper_bound(5, 200))
    # A date written into the record does not move it into the window: anchoring does.
    redated = replace(old, event_time=T0 - DAY, signed_at=T0 - DAY)
    assert compute_features([redated, new], "SUP-X", T0).observed["defect_ppm"] == pytest.approx(
        ppm_upper_bound(0, 100)
    )
