"""The simulator emits real, signed, valid evidence whose statistics follow the latent truth."""

from __future__ import annotations

import numpy as np

from credit.evidence import item_from_signed
from credit.features import compute_features
from ledger.records import KIND_SIGNER_ROLES, RecordKind, parse_payload
from ledger.signing import check_signature
from simulator.population import Population, simulate_history, simulate_population


def test_seeded_runs_are_identical() -> None:
    a = simulate_population(3, 3, seed=5)
    b = simulate_population(3, 3, seed=5)
    c = simulate_population(3, 3, seed=6)
    assert [i.struct_hash for i in a.items] == [i.struct_hash for i in b.items]
    assert [r.signature for r in a.records] == [r.signature for r in b.records]
    assert [i.struct_hash for i in a.items] != [i.struct_hash for i in c.items]


def test_every_record_is_signed_by_the_role_allowed_for_its_kind(
    signed_population: Population,
) -> None:
    pop = signed_population
    assert len(pop.records) == len(pop.items) > 1000
    kinds = {r.record.kind for r in pop.records}
    assert kinds >= {
        RecordKind.INSPECTION,
        RecordKind.DELIVERY,
        RecordKind.COMPLAINT,
        RecordKind.CORRECTIVE_ACTION,
        RecordKind.AUDIT,
    }
    for signed, item in list(zip(pop.records, pop.items, strict=True))[::7]:
        assert "0x" + check_signature(signed).hex() == item.struct_hash
        assert (
            pop.roles[_org_of(pop, signed.record.signer)] in KIND_SIGNER_ROLES[signed.record.kind]
        )
        parse_payload(signed.record.kind, signed.payload)
        assert (
            item_from_signed(signed, item.signer_role, anchored=True, anchored_at=item.anchored_at)
            == item
        )


def _org_of(pop: Population, address: str) -> str:
    return next(org for org, signer in pop.signers.items() if signer.address == address)


def test_history_payloads_match_the_signed_ones() -> None:
    """Training data skips signing, not structure: the same seed gives the same evidence."""
    signed = simulate_population(2, 4, seed=9)
    unsigned = simulate_history(2, 4, seed=9)

    def strip(items):
        return [
            (
                i.kind,
                i.subject,
                i.lot_id,
                i.event_time,
                i.quantity,
                i.defects,
                i.payload,
            )
            for i in items
            if i.kind != "improvement"
        ]  # improvements reference struct hashes

    assert strip(signed.items) == strip(unsigned.items)


def test_capability_is_measured_not_drawn() -> None:
    """Cpk computed from the records' measurements tracks each supplier's latent capability,
    shown for the share of lots the supplier reported (the rest count at the stand-in 0)."""
    pop = simulate_history(40, 7, seed=3)
    est, true = [], []
    for truth in pop.suppliers:
        if truth.drift_per_month:
            continue
        vec = compute_features(pop.items, truth.supplier_id, pop.end)
        if vec.observed["cpk_min"] is not None:
            est.append(vec.observed["cpk_min"])
            true.append(truth.sharing * min(p.capability for p in truth.parts))
    assert len(est) >= 10
    assert np.corrcoef(est, true)[0, 1] > 0.8
    assert abs(np.median(np.array(est) - np.array(true))) < 0.15


def test_field_incidents_follow_poor_capability() -> None:
    pop = simulate_history(150, 12, seed=4)
    incidents = {f.supplier_id for f in pop.field_incidents}
    worst = sorted(pop.suppliers, key=lambda t: t.capability)[:30]
    best = sorted(pop.suppliers, key=lambda t: t.capability)[-30:]
    hit = lambda group: np.mean([t.supplier_id in incidents for t in group])  # noqa: E731
    assert hit(worst) > hit(best) + 0.3
