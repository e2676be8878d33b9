"""Red team: every trick a supplier can play with nothing but its own key, across a population.

Each trick is played by every supplier of a simulated population (not one hand-picked supplier),
the way a supplier would: it signs more records with its own key, re-signs its own records with
other contents (same signing and anchoring times, as if it had written them that way from the
start), or withholds records it never has to file. The OEM's and the auditor's records are
never touched. Issue 16's bar: no trick gains more than 0.5 points for any supplier, and none
turns a failed gate into a passed one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from credit.evidence import EvidenceItem
from credit.features import anchor_time
from credit.gates import default_policy
from credit.model import CreditModel
from credit.score import CreditResponse, score_supplier
from ledger.evidence import DAY
from ledger.records import EventTimeOutOfBounds, check_event_time
from simulator.population import ANCHOR_DELAY, Population, simulate_population

MAX_GAIN = 0.5  # points (issue 16)
WINDOW = default_policy().window_days


# Three populations, so the bar holds across suppliers that were not tuned for: the fast tier plays
# every trick on the first; the full suite (make test) on all three.
SEEDS = [23, pytest.param(41, marks=pytest.mark.slow), pytest.param(59, marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda seed: f"seed{seed}")
def pop(request: pytest.FixtureRequest) -> Population:
    """10 suppliers over 9 months: enough OEM evidence that each has a number to protect."""
    return simulate_population(10, 9, seed=request.param)


def _fresh(pop: Population) -> Population:
    return replace(pop, items=list(pop.items), records=list(pop.records), _nonces=dict(pop._nonces))


def _score(pop: Population, sid: str, items: list[EvidenceItem] | None = None) -> CreditResponse:
    return score_supplier(
        pop.items if items is None else items,
        sid,
        pop.end,
        fl_participation=pop.fl_participation(sid, pop.end, WINDOW),
        with_what_if=False,
    )


def _own(pop: Population, sid: str, kind: str | None = None) -> list[EvidenceItem]:
    return [
        it
        for it in pop.items
        if it.subject == sid and it.signer_role == "SUPPLIER" and (kind is None or it.kind == kind)
    ]


def _sign_like(pop: Population, it: EvidenceItem, *, later: int = 0, **changes: Any) -> None:
    """The supplier signs ``it`` again with ``changes``; ``later`` seconds after the original."""
    fields: dict[str, Any] = {
        "subject": it.subject,
        "kind": it.kind,
        "part_number": it.part_number,
        "lot_id": it.lot_id,
        "event_time": it.event_time,
        "signed_at": it.signed_at + later,
        "quantity": it.quantity,
        "defects": it.defects,
        "payload": copy.deepcopy(it.payload),
    }
    fields.update(changes)
    pop.sign(it.subject, **fields)


def _replace_own(pop: Population, sid: str, kind: str, rewrite: Callable[[dict], dict]) -> None:
    """The supplier had written its ``kind`` records differently from the start."""
    for it in _own(pop, sid, kind):
        pop.items.remove(it)
        payload = rewrite(copy.deepcopy(it.payload))
        extra = {}
        if kind == "inspection":
            extra = {
                "quantity": payload["sampleSize"],
                "defects": sum(d["count"] for d in payload["defectList"]),
            }
        if kind == "delivery":
            extra = {"event_time": payload["deliveredTime"]}
        _sign_like(pop, it, payload=payload, **extra)


def _perfect_inspection(it: EvidenceItem) -> dict:
    payload = copy.deepcopy(it.payload)
    payload["defectList"] = []
    payload["disposition"] = "conformant"
    for ch in payload["sensorReport"]:
        lo, hi = ch.get("lsl"), ch.get("usl")
        centre = (lo + hi) / 2 if lo is not None and hi is not None else (hi if hi else lo) * 0.5
        ch["values"] = [centre + (k % 3 - 1) * 1e-6 for k in range(len(ch["values"]))]
    return payload


# -- the tricks -------------------------------------------------------------------------------


def flood_perfect_lots(pop: Population, sid: str) -> None:
    """Sign 60 perfect inspections and deliveries of lots that never shipped."""
    template = _own(pop, sid, "inspection")[-1]
    delivery = _own(pop, sid, "delivery")[-1]
    for k in range(60):
        lot = f"{sid}-FLOOD{k:03d}"
        payload = _perfect_inspection(template)
        _sign_like(pop, template, lot_id=lot, defects=0, payload=payload, later=k)
        _sign_like(pop, delivery, lot_id=lot, later=k)


def withhold_bad_lots(pop: Population, sid: str) -> None:
    """Never file the inspection (nor the shipping notice) of a lot with defects."""
    bad = {(it.part_number, it.lot_id) for it in _own(pop, sid, "inspection") if it.defects}
    for it in _own(pop, sid):
        if it.kind in ("inspection", "delivery") and (it.part_number, it.lot_id) in bad:
            pop.items.remove(it)


def withhold_worst_part(pop: Population, sid: str) -> None:
    """Never file any inspection of the part with the most defects."""
    per_part: dict[str, int] = {}
    for it in _own(pop, sid, "inspection"):
        per_part[it.part_number] = per_part.get(it.part_number, 0) + it.defects
    worst = max(per_part, key=per_part.__getitem__)
    for it in _own(pop, sid, "inspection"):
        if it.part_number == worst:
            pop.items.remove(it)


def split_lots(pop: Population, sid: str) -> None:
    """Report each clean lot as four lots (new ids) to multiply its clean samples."""
    for it in _own(pop, sid, "inspection"):
        if not it.defects:
            for k in range(4):
                _sign_like(pop, it, lot_id=f"{it.lot_id}-S{k}", later=k + 1)


def backdate_bad_lots(pop: Population, sid: str) -> None:
    """Date the defective lots' inspections before the window (same signing and anchoring)."""
    start = pop.end - WINDOW * DAY
    for it in _own(pop, sid, "inspection"):
        if it.defects:
            pop.items.remove(it)
            _sign_like(pop, it, event_time=start - 10 * DAY, signed_at=it.signed_at)


def widen_own_limits(pop: Population, sid: str) -> None:
    """Write spec limits twice as wide as the drawing's into its own inspections."""

    def wider(payload: dict) -> dict:
        for ch in payload["sensorReport"]:
            lo, hi = ch.get("lsl"), ch.get("usl")
            if lo is not None and hi is not None:
                mid, half = (lo + hi) / 2, (hi - lo)
                ch["lsl"], ch["usl"] = mid - half, mid + half
        payload["defectList"] = [
            d for d in payload["defectList"] if not d["code"].startswith("DIM")
        ]
        payload["disposition"] = "conformant" if not payload["defectList"] else "non_conformant"
        return payload

    _replace_own(pop, sid, "inspection", wider)


def drop_key_flags(pop: Population, sid: str) -> None:
    """Mark no characteristic as key in its own inspections (its Cpk would not be scored)."""

    def unkey(payload: dict) -> dict:
        for ch in payload["sensorReport"]:
            ch["key"] = False
        return payload

    _replace_own(pop, sid, "inspection", unkey)


def move_promised_dates(pop: Population, sid: str) -> None:
    """Write each delivery's promised date as the day it delivered."""

    def on_time(payload: dict) -> dict:
        payload["promisedTime"] = payload["deliveredTime"] + DAY
        return payload

    _replace_own(pop, sid, "delivery", on_time)


def early_8d_times(pop: Population, sid: str) -> None:
    """Date every 8D answer and discipline at the complaint's opening."""
    opened = {
        it.payload["complaintId"]: it.event_time
        for it in pop.items
        if it.subject == sid and it.kind == "complaint"
    }

    def early(payload: dict) -> dict:
        t0 = opened.get(payload["complaintId"], payload.get("firstResponseTime") or 0)
        payload["firstResponseTime"] = t0
        payload["eightD"] = dict.fromkeys(payload["eightD"], t0)
        return payload

    _replace_own(pop, sid, "corrective_action", early)


def resign_same_lot(pop: Population, sid: str) -> None:
    """Re-sign every clean lot's inspection with a new nonce (a second copy of it)."""
    for it in _own(pop, sid, "inspection"):
        if not it.defects:
            _sign_like(pop, it, later=60)


def resign_cleaner(pop: Population, sid: str) -> None:
    """Re-sign each defective lot's inspection later, clean: a 'correction' downwards."""
    for it in _own(pop, sid, "inspection"):
        if it.defects:
            _sign_like(pop, it, later=3 * DAY, defects=0, payload=_perfect_inspection(it))


TRICKS: dict[str, Callable[[Population, str], None]] = {
    "flood_perfect_lots": flood_perfect_lots,
    "withhold_bad_lots": withhold_bad_lots,
    "withhold_worst_part": withhold_worst_part,
    "split_lots": split_lots,
    "backdate_bad_lots": backdate_bad_lots,
    "widen_own_limits": widen_own_limits,
    "drop_key_flags": drop_key_flags,
    "move_promised_dates": move_promised_dates,
    "early_8d_times": early_8d_times,
    "resign_same_lot": resign_same_lot,
    "resign_cleaner": resign_cleaner,
}


@pytest.fixture(scope="module")
def honest(pop: Population) -> dict[str, CreditResponse]:
    return {s.supplier_id: _score(pop, s.supplier_id) for s in pop.suppliers}


def test_the_population_has_numbers_to_protect(honest: dict[str, CreditResponse]) -> None:
    scored = [r for r in honest.values() if r.score is not None]
    assert len(scored) == len(honest), [r.supplier_id for r in honest.values() if r.score is None]
    assert max(r.score for r in scored) - min(r.score for r in scored) > 5  # a real spread


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_no_trick_pays(
    pop: Population, honest: dict[str, CreditResponse], trick: str, model: CreditModel
) -> None:
    gains = {}
    for truth in pop.suppliers:
        sid = truth.supplier_id
        played = _fresh(pop)
        TRICKS[trick](played, sid)
        after = _score(played, sid)
        before = honest[sid]
        assert after.score is not None and before.score is not None
        gains[sid] = after.score - before.score
        assert not (before.gate.outcome == "fail" and after.gate.outcome == "pass"), (trick, sid)
    assert max(gains.values()) <= MAX_GAIN, (trick, {k: round(v, 2) for k, v in gains.items()})


@pytest.mark.slow  # ~20 s: every trick at once, for four suppliers
def test_all_tricks_together_do_not_pay(pop: Population, honest: dict[str, CreditResponse]) -> None:
    for truth in pop.suppliers[:4]:
        sid = truth.supplier_id
        played = _fresh(pop)
        for trick in TRICKS.values():
            trick(played, sid)
        after = _score(played, sid)
        assert after.score is not None
        assert after.score - honest[sid].score <= MAX_GAIN, sid
        assert not (honest[sid].gate.outcome == "fail" and after.gate.outcome == "pass")


def test_backdating_is_refused_at_intake(pop: Population) -> None:
    """Past the 30-day bound a backdated record cannot even be filed."""
    rec = next(r for r in pop.records if r.record.kind.value == "inspection").record
    back = rec.model_copy(update={"eventTime": rec.signedAt - 31 * DAY})
    with pytest.raises(EventTimeOutOfBounds) as err:
        check_event_time(back)
    assert err.value.code == "event_time_out_of_bounds"
    ahead = rec.model_copy(update={"eventTime": rec.signedAt + 301})
    with pytest.raises(EventTimeOutOfBounds):
        check_event_time(ahead, skew_seconds=300)
    check_event_time(rec)  # the honest record passes


def test_a_re_signed_lot_counts_once_and_both_stay(pop: Population) -> None:
    played = _fresh(pop)
    sid = pop.suppliers[0].supplier_id
    original = _own(played, sid, "inspection")[0]
    _sign_like(played, original, later=60)
    copy_ = played.items[-1]
    assert copy_.struct_hash != original.struct_hash  # a new record, both on the ledger
    from credit.features import compute_features

    vec = compute_features(played.items, sid, pop.end, WINDOW)
    assert original.struct_hash in vec.superseded
    assert copy_.struct_hash not in vec.superseded


def test_a_favourable_window_is_a_what_if(
    pop: Population, honest: dict[str, CreditResponse]
) -> None:
    sid = pop.suppliers[0].supplier_id
    assert honest[sid].reading == "published" and honest[sid].window_days == WINDOW
    for days in (60, 90, 365):
        other = score_supplier(pop.items, sid, pop.end, window_days=days, with_what_if=False)
        assert other.reading == "what_if"


# -- thin files -------------------------------------------------------------------------------


def _newcomer(pop: Population, sid: str, *, audit: bool) -> Population:
    """A brand-new supplier files two perfect self-signed records (and gets one clean audit)."""
    played = _fresh(pop)
    template = _own(pop, pop.suppliers[0].supplier_id, "inspection")[-1]
    for k in range(2):
        _sign_like(
            played,
            template,
            subject=sid,
            lot_id=f"{sid}-L{k}",
            defects=0,
            payload=_perfect_inspection(template),
        )
    if audit:
        when = pop.end - 30 * DAY
        played.sign(
            "AUD-0001",
            subject=sid,
            kind="audit",
            part_number="NEW-1",
            lot_id=f"{sid}-AUDIT",
            event_time=when,
            signed_at=when,
            quantity=0,
            defects=0,
            payload={
                "standard": "IATF16949",
                "auditType": "process",
                "majorNonconformities": 0,
                "minorNonconformities": 0,
            },
        )
    return played


@pytest.mark.parametrize("audit", [False, True])
def test_thin_files_get_insufficient_evidence(pop: Population, audit: bool) -> None:
    sid = "SUP-NEW01"
    played = _newcomer(pop, sid, audit=audit)
    resp = _score(played, sid)
    assert resp.status == "insufficient_evidence" and resp.score is None
    assert resp.contributions == [] and resp.gate.outcome == "fail"
    assert resp.gate.insufficient_evidence and resp.gate.distance is None
    assert {b.fact for b in resp.gate.blocking} == {"oem_received_lots", "oem_evidence_months"}
    assert resp.reason_codes and resp.reason_codes[0].code == "INSUFFICIENT_OEM_EVIDENCE"


def test_no_evidence_at_all_is_insufficient_not_a_band(pop: Population) -> None:
    resp = _score(pop, "SUP-NOBODY")
    assert resp.status == "insufficient_evidence" and resp.band == "insufficient_evidence"


def test_withholding_everything_makes_a_thin_file_not_a_better_one(pop: Population) -> None:
    """A supplier that files nothing of its own still has the OEM's receipts: it is scored,
    and scored lower than with its evidence."""
    for truth in pop.suppliers[:5]:
        sid = truth.supplier_id
        played = _fresh(pop)
        for it in _own(played, sid):
            played.items.remove(it)
        after = _score(played, sid)
        before = _score(pop, sid)
        assert after.score is not None and after.score <= before.score + MAX_GAIN


def test_windows_sit_on_anchoring_time(pop: Population) -> None:
    """An item's window position is when the chain saw it, not the date it carries."""
    it = _own(pop, pop.suppliers[0].supplier_id, "inspection")[0]
    assert anchor_time(it) == it.signed_at + ANCHOR_DELAY
    assert anchor_time(replace(it, event_time=0)) == anchor_time(it)


# -- reasons that tell the truth --------------------------------------------------------------


def test_reasons_name_the_bar_and_stand_ins_are_flagged(
    pop: Population, honest: dict[str, CreditResponse]
) -> None:
    policy = default_policy()
    for resp in honest.values():
        assert resp.score is not None and len(resp.reason_codes) <= 4
        assert not any(r.code.endswith("BELOW_PEERS") for r in resp.reason_codes)
        target = resp.reasons_for
        if resp.score < policy.min_score:
            assert target is not None and target.target == "gate"
        elif resp.band != "A":
            assert target is not None and target.target == "next_band"
        if target is not None:
            assert target.short_by == pytest.approx(target.threshold - resp.score)
        missing = {c.feature for c in resp.contributions if not c.observed}
        assert {s.feature for s in resp.stand_ins} == missing
        for s in resp.stand_ins:
            assert s.adds_points == (s.points > 0)
        for r in resp.reason_codes:  # every code is tied to features that cost points
            assert r.points < 0 and r.features


def test_what_ifs_only_propose_evidence_others_sign(pop: Population) -> None:
    from credit.features import SPECS

    proposed = set()
    for truth in pop.suppliers[:5]:
        sid = truth.supplier_id
        resp = score_supplier(
            pop.items, sid, pop.end, fl_participation=pop.fl_participation(sid, pop.end, WINDOW)
        )
        proposed |= {w.feature for w in resp.what_if}
    assert proposed  # there is something to propose
    assert not {f for f in proposed if SPECS[f].self_written}


def test_filings_after_an_incident_move_no_share() -> None:
    """Every supplier of a 6-supplier incident in turn files perfect re-inspections of its
    incident lot after the incident was reported: no share moves."""
    from credit.responsibility import Incident, IncidentLot, responsibility_matrix
    from simulator.population import simulate_incident

    sc = simulate_incident(6, seed=5, drifted_index=2)
    reported = sc.occurred_at + 3600
    incident = Incident(
        incident_id=sc.incident_id,
        product=sc.product,
        occurred_at=sc.occurred_at,
        reported_at=reported,
        lots=[IncidentLot(supplier_id=s, part_number=p, lot_id=lot) for s, p, lot in sc.lots],
    )
    pop = _fresh(sc.population)
    before = {r.supplier_id: r.weight for r in responsibility_matrix(incident, pop.items).rows}
    played_by = 0
    for sid, _part, lot in sc.lots:
        played = _fresh(pop)
        shown = [it for it in _own(played, sid, "inspection") if it.lot_id == lot]
        if not shown:
            continue  # the supplier never inspected that lot: nothing to re-file
        original = shown[-1]
        played_by += 1
        _sign_like(
            played,
            original,
            signed_at=reported + 60,
            event_time=reported,
            defects=0,
            payload=_perfect_inspection(original),
        )
        after = {
            r.supplier_id: r.weight for r in responsibility_matrix(incident, played.items).rows
        }
        assert after == before, sid
    assert played_by >= 4
