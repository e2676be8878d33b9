"""The model: exact additive SHAP, monotone in every feature, scores inside 0-100, versioned."""

from __future__ import annotations

import numpy as np
import pytest
import shap
import xgboost as xgb
from pydantic import ValidationError

from credit.features import FEATURE_NAMES, FEATURES, compute_features, feature_matrix
from credit.model import BANDS, CreditModel, band_of, corner, model_version
from credit.score import AdditivityError, assert_additive, score_vectors
from credit.train import train
from simulator.population import Population


@pytest.fixture(scope="module")
def rows(signed_population: Population) -> np.ndarray:
    """Real feature rows at several instants, plus random rows spread over each feature's range."""
    pop = signed_population
    real = feature_matrix(
        [
            compute_features(
                pop.items,
                t.supplier_id,
                end,
                fl_participation=pop.fl_participation(t.supplier_id, end, 180),
            )
            for t in pop.suppliers
            for end in (pop.end - 60 * 86400, pop.end)
        ]
    )
    rng = np.random.default_rng(1)
    lo = np.array([f.lo for f in FEATURES])
    hi = np.array([f.hi for f in FEATURES])
    # Log-uniform for the long-tailed ones so the interesting low range is well covered.
    u = rng.random((400, len(FEATURES)))
    rand = lo + (hi - lo) * u**4
    return np.vstack([real, rand])


def test_additivity_on_every_score(model: CreditModel, rows: np.ndarray) -> None:
    e = model.explain(rows)
    np.testing.assert_allclose(e.base_points + e.points.sum(axis=1), e.scores, atol=1e-9)
    # And the scores are the trees' own prediction, mapped linearly.
    np.testing.assert_allclose(e.scores, model.scores(rows), atol=1e-3)
    np.testing.assert_allclose(e.probability, 1 / (1 + np.exp(-model.margins(rows))), atol=1e-5)


def test_responses_refuse_a_false_explanation(
    model: CreditModel, signed_population: Population
) -> None:
    pop = signed_population
    vecs = [compute_features(pop.items, t.supplier_id, pop.end) for t in pop.suppliers]
    responses = score_vectors(vecs, model=model)
    for r in responses:
        assert abs(r.base_value + sum(c.points for c in r.contributions) - r.score) < 1e-9
    data = responses[0].model_dump()
    data["contributions"][0]["points"] += 0.5
    # A false explanation is the service's fault, not bad input: it surfaces as itself (a typed
    # 500), never as a pydantic ValidationError that an edge would answer as a client's 422.
    with pytest.raises(AdditivityError, match="additivity violated") as caught:
        type(responses[0]).model_validate(data)
    assert not isinstance(caught.value, (ValidationError, AssertionError, ValueError))
    assert (caught.value.code, caught.value.http_status) == ("additivity_violated", 500)
    tampered = responses[0].model_copy(deep=True)
    tampered.contributions[0].points += 0.5
    with pytest.raises(AdditivityError):
        assert_additive(tampered)


def test_tabulated_shap_equals_xgboost_and_shap_tree_explainer(
    model: CreditModel, rows: np.ndarray
) -> None:
    x32 = rows.astype(np.float32)
    ours = model.shap.contributions(x32)
    native = model.booster.predict(
        xgb.DMatrix(x32, feature_names=list(FEATURE_NAMES)), pred_contribs=True
    )
    np.testing.assert_allclose(ours, native[:, :-1], atol=2e-6)
    assert model.shap.bias == pytest.approx(float(native[0, -1]), abs=1e-6)
    explainer = shap.TreeExplainer(model.booster)
    reference = explainer.shap_values(x32)
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    assert model.shap.bias == pytest.approx(float(explainer.expected_value), abs=1e-5)


@pytest.mark.parametrize("feature", [f.name for f in FEATURES])
def test_monotone_by_perturbation(model: CreditModel, rows: np.ndarray, feature: str) -> None:
    """Moving one feature in its good direction never lowers the score, from any starting row."""
    spec = next(f for f in FEATURES if f.name == feature)
    j = FEATURE_NAMES.index(feature)
    splits = model.splits[feature]
    # Every split threshold and the points just below it, plus a regular grid over the range.
    grid = np.unique(
        np.concatenate(
            [
                np.linspace(spec.lo, spec.hi, 25),
                splits,
                np.nextafter(splits.astype(np.float32), np.float32(-np.inf)).astype(np.float64),
            ]
        )
    )
    grid = grid[(grid >= spec.lo) & (grid <= spec.hi)]
    base = rows[::3]
    batch = np.repeat(base, len(grid), axis=0)
    batch[:, j] = np.tile(grid, len(base))
    scores = model.explain(batch).scores.reshape(len(base), len(grid))
    steps = np.diff(scores, axis=1) * spec.monotone
    assert steps.min() >= -1e-9, f"{feature}: score moved against its direction"
    # The constraint is not vacuous: the feature matters somewhere.
    assert np.abs(steps).max() > 0 or len(splits) == 0


def test_scores_stay_in_0_100_without_clipping(model: CreditModel, rows: np.ndarray) -> None:
    best, worst = model.explain(np.vstack([corner(True), corner(False)])).scores
    assert best == pytest.approx(100.0, abs=1e-9) and worst == pytest.approx(0.0, abs=1e-9)
    scores = model.explain(rows).scores
    assert scores.min() >= -1e-9 and scores.max() <= 100 + 1e-9


def test_bands_cover_the_scale() -> None:
    assert band_of(100) == "A" and band_of(0) == BANDS[-1][0]
    assert [band_of(b[1]) for b in BANDS] == [b[0] for b in BANDS]


def test_version_binds_model_file_schema_and_training_data(model: CreditModel, tmp_path) -> None:
    model.save(tmp_path)
    again = CreditModel.load(tmp_path)
    assert again.version == model.version
    assert model.version == model_version(
        (tmp_path / "model.json").read_bytes(),
        model.meta["schema_version"],
        model.training_fingerprint,
    )
    assert model_version(b"x", "s", "a") != model_version(b"x", "s", "b")
    assert model_version(b"x", "s", "a") != model_version(b"x", "t", "a")


def test_training_is_deterministic() -> None:
    a = train(n_suppliers=60, seed=3)
    b = train(n_suppliers=60, seed=3)
    assert a.version == b.version
    assert a.meta["training_fingerprint"] == b.meta["training_fingerprint"]
    assert (
        train(n_suppliers=60, seed=4).meta["training_fingerprint"] != a.meta["training_fingerprint"]
    )


def test_checked_in_model_reports_held_out_quality(model: CreditModel) -> None:
    metrics = model.meta["test_metrics"]
    assert metrics["auc"] > 0.75
    assert metrics["ece"] < 0.05
    rates = [b["incident_rate"] for b in metrics["bands"] if b["n"] >= 20]
    assert rates == sorted(rates)  # worse band, more incidents
