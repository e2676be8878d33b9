"""Responsibility weights: Shapley over noisy-OR defect risk, sum to 1, follow the evidence."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from credit.responsibility import (
    NO_EVIDENCE_RISK,
    Incident,
    IncidentLot,
    matrix_hash,
    responsibility_matrix,
    shapley_noisy_or,
    sign_decision,
    verify_decision,
)
from simulator.population import IncidentScenario, simulate_incident
from tests.credit.credit_helpers import unanchored


def _incident(sc: IncidentScenario) -> Incident:
    return Incident(
        incident_id=sc.incident_id,
        product=sc.product,
        occurred_at=sc.occurred_at,
        lots=[IncidentLot(supplier_id=s, part_number=p, lot_id=lot) for s, p, lot in sc.lots],
    )


@pytest.fixture(scope="module")
def scenario() -> IncidentScenario:
    return simulate_incident(10, seed=2, drifted_index=6)


def _brute_force_shapley(risks: list[float]) -> np.ndarray:
    n = len(risks)
    v = lambda s: 1 - math.prod(1 - risks[i] for i in s)  # noqa: E731
    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        seen: list[int] = []
        for i in order:
            phi[i] += v([*seen, i]) - v(seen)
            seen.append(i)
    return phi / math.factorial(n)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_closed_form_equals_permutation_shapley(n: int) -> None:
    risks = list(np.random.default_rng(n).uniform(0, 0.6, size=n))
    np.testing.assert_allclose(shapley_noisy_or(risks), _brute_force_shapley(risks), atol=1e-12)
    assert shapley_noisy_or(risks).sum() == pytest.approx(1 - math.prod(1 - r for r in risks))


def test_weights_sum_to_one_and_the_drifted_supplier_carries_most(
    scenario: IncidentScenario,
) -> None:
    matrix = responsibility_matrix(_incident(scenario), scenario.population.items)
    weights = {r.supplier_id: r.weight for r in matrix.rows}
    assert math.fsum(weights.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(w >= 0 for w in weights.values())
    assert max(weights, key=weights.get) == scenario.drifted
    assert weights[scenario.drifted] > 0.5
    drifted = next(r for r in matrix.rows if r.supplier_id == scenario.drifted)
    assert drifted.basis == "incident_lots" and drifted.cpk < 1.0
    assert matrix.method == "shapley-noisy-or/1" and matrix.version.startswith(matrix.method)


@pytest.mark.parametrize("seed,drifted", [(3, 0), (4, 5), (5, 3)])
def test_the_evidence_decides_not_the_position(seed: int, drifted: int) -> None:
    sc = simulate_incident(6, seed=seed, drifted_index=drifted)
    matrix = responsibility_matrix(_incident(sc), sc.population.items)
    assert max(matrix.rows, key=lambda r: r.weight).supplier_id == sc.drifted


def test_missing_evidence_never_lowers_a_share(scenario: IncidentScenario) -> None:
    incident = _incident(scenario)
    quiet = next(r for r in incident.lots if r.supplier_id != scenario.drifted).supplier_id
    items = [unanchored(i) if i.subject == quiet else i for i in scenario.population.items]
    full = {
        r.supplier_id: r for r in responsibility_matrix(incident, scenario.population.items).rows
    }
    hidden = {r.supplier_id: r for r in responsibility_matrix(incident, items).rows}
    worst_shown = max(r.risk for r in hidden.values() if r.basis != "no_evidence")
    assert hidden[quiet].basis == "no_evidence"
    # The prior is no better than the worst supplier that showed its evidence.
    assert hidden[quiet].risk == max(NO_EVIDENCE_RISK, worst_shown)
    assert hidden[quiet].weight >= max(
        r.weight for r in hidden.values() if r.basis != "no_evidence"
    )
    assert hidden[quiet].weight > full[quiet].weight


def test_filings_after_the_report_move_no_share(scenario: IncidentScenario) -> None:
    """The drifted supplier files perfect re-inspections of its incident lot once it knows."""
    pop = scenario.population
    reported = scenario.occurred_at + 3600
    incident = _incident(scenario).model_copy(update={"reported_at": reported})
    before = responsibility_matrix(incident, pop.items)
    assert before.evidence_cutoff == reported
    own = [
        it
        for it in pop.items
        if it.subject == scenario.drifted
        and it.kind == "inspection"
        and any(it.lot_id == lot for s, _, lot in scenario.lots if s == scenario.drifted)
    ]
    late = []
    for it in own:
        payload = {**it.payload, "defectList": [], "disposition": "conformant"}
        payload["sensorReport"] = [
            {**ch, "values": [((ch["lsl"] or 0) + (ch["usl"] or 0)) / 2] * len(ch["values"])}
            for ch in it.payload["sensorReport"]
        ]
        late.append(
            replace(
                it,
                struct_hash=it.struct_hash[:-4] + "f00d",
                defects=0,
                payload=payload,
                signed_at=reported + 60,
                anchored_at=reported + 660,
            )
        )
    after = responsibility_matrix(incident, [*pop.items, *late])
    assert after.model_dump() == before.model_dump()
    # Without the cutoff (what the matrix did before issue 16) the same filings would move it.
    no_cutoff = incident.model_copy(update={"reported_at": reported + 10 * 86_400})
    moved = responsibility_matrix(no_cutoff, [*pop.items, *late])
    w = {r.supplier_id: r.weight for r in moved.rows}
    w0 = {r.supplier_id: r.weight for r in before.rows}
    assert w[scenario.drifted] != w0[scenario.drifted]


def test_a_federated_risk_model_is_blended_in(scenario: IncidentScenario) -> None:
    incident = _incident(scenario)
    target = incident.lots[0].supplier_id
    matrix = responsibility_matrix(
        incident,
        scenario.population.items,
        risk_model=lambda sid, items: 0.9 if sid == target else 0.0,
    )
    row = next(r for r in matrix.rows if r.supplier_id == target)
    assert row.model_risk == 0.9 and row.risk >= 0.45


def test_ten_supplier_matrix_is_fast(scenario: IncidentScenario) -> None:
    incident = _incident(scenario)
    started = time.perf_counter()
    responsibility_matrix(incident, scenario.population.items)
    assert time.perf_counter() - started < 1.0


def test_suppliers_sign_acceptance_or_dispute(scenario: IncidentScenario) -> None:
    pop = scenario.population
    matrix = responsibility_matrix(_incident(scenario), pop.items)
    assert matrix_hash(matrix) == matrix_hash(matrix.model_copy(deep=True))
    sid = scenario.drifted
    accept = sign_decision(
        pop.signers[sid],
        pop.domain,
        matrix,
        sid,
        "dispute",
        signed_at=scenario.occurred_at + 3600,
        comment="kiln log disagrees",
    )
    assert verify_decision(pop.domain, accept, matrix) == pop.signers[sid].address
    # The decision is bound to this version of the matrix and to its own words.
    changed = matrix.model_copy(update={"joint_risk": matrix.joint_risk * 2})
    with pytest.raises(ValueError, match="another version"):
        verify_decision(pop.domain, accept, changed)
    forged = accept.model_copy(update={"decision": "accept"})
    with pytest.raises(ValueError):
        verify_decision(pop.domain, forged, matrix)
    with pytest.raises(ValueError, match="no share"):
        sign_decision(pop.signers[sid], pop.domain, matrix, "SUP-99999", "accept", 0)
