"""The fast response path (``response_dicts``) serves exactly what the validated
``CreditResponse`` path serves: same JSON, same hash, schema-valid, additivity enforced."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from credit.explain import reason_codes, reason_codes_batch
from credit.features import FEATURE_NAMES, FeatureVector, compute_features
from credit.gates import default_policy
from credit.model import CreditModel, Explained
from credit.score import AdditivityError, CreditResponse, response_dicts, score_vectors
from ledger._hash import keccak
from ledger.canonical import canonical_json
from simulator.population import simulate_history


@pytest.fixture(scope="module")
def vectors() -> list[FeatureVector]:
    hist = simulate_history(60, 12, seed=5)
    by_supplier: dict[str, list[Any]] = {}
    for it in hist.items:
        by_supplier.setdefault(it.subject, []).append(it)
    return [
        compute_features(
            by_supplier.get(t.supplier_id, []),
            t.supplier_id,
            hist.start + m * 30 * 86400,
            window_days=window,
            fl_participation=hist.fl_participation(t.supplier_id, hist.start + m * 30 * 86400, 180),
        )
        for t in hist.suppliers
        for m, window in ((2, 180), (7, 180), (12, 90))
    ]


@pytest.mark.parametrize("with_what_if", [False, True])
def test_dicts_equal_the_validated_responses(
    vectors: list[FeatureVector], model: CreditModel, with_what_if: bool
) -> None:
    fast = response_dicts(vectors, model=model, with_what_if=with_what_if)
    slow = score_vectors(vectors, model=model, with_what_if=with_what_if)
    assert len(fast) == len(slow) == len(vectors)
    # The population covers what the response can say: several bands, both gate outcomes,
    # thin files, stand-ins, what-if readings.
    assert len({d["band"] for d in fast}) >= 3
    assert {d["status"] for d in fast} >= {"scored"}
    assert {d["reading"] for d in fast} == {"published", "what_if"}
    assert any(d["stand_ins"] for d in fast) and any(d["reason_codes"] for d in fast)
    for d, r in zip(fast, slow, strict=True):
        dumped = r.model_dump(mode="json")
        assert d == dumped
        assert list(d) == list(dumped)  # same member order too
        # The hash the service commits is the same, and the schema accepts the dict as is.
        assert keccak(canonical_json(d)) == keccak(canonical_json(dumped))
        assert CreditResponse.model_validate(d).model_dump(mode="json") == dumped


class _Lying(CreditModel):
    """The real model, except one row's explanation is off by a point: what a broken SHAP
    table or a tampered model file would produce."""

    def explain(self, x: np.ndarray) -> Explained:
        e = super().explain(x)
        points = e.points.copy()
        points[len(points) // 2, 0] += 1.0
        return replace(e, points=points)


def test_an_explanation_that_does_not_add_up_is_refused(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    lying = _Lying(model.booster, model.meta, bytes(model.booster.save_raw("json")))
    scored = [v for v in vectors if not default_policy().thin_file(v.facts)]
    with pytest.raises(AdditivityError, match=scored[len(scored) // 2].supplier_id):
        response_dicts(scored, model=lying)
    with pytest.raises(AdditivityError):
        score_vectors(scored, model=lying)


def test_batch_reason_codes_equal_the_one_supplier_rule_walk(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """Including the rows an adversarial feature pipeline could produce: an observation that is
    NaN (not None), which a matrix would confuse with "missing"."""
    odd = replace(vectors[3], observed={**vectors[3].observed, "defect_ppm": float("nan")})
    batch = [*vectors, odd]
    points = model.explain(np.array([v.values for v in batch], dtype=np.float64)).points
    got = reason_codes_batch(points, [v.observed for v in batch], [v.details for v in batch])
    few = reason_codes_batch(
        points[:3], [v.observed for v in batch[:3]], [v.details for v in batch[:3]]
    )
    assert len(batch) > 16 and few == got[:3]  # the array path and the small-batch path agree
    for k, vec in enumerate(batch):
        row = dict(zip(FEATURE_NAMES, points[k].tolist(), strict=True))
        assert got[k] == reason_codes(row, vec.observed, vec.details)
