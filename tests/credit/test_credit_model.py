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
from credit.treeshap import TabulatedTreeShap
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


def _adversarial_rows(shap_table: TabulatedTreeShap, rows: np.ndarray, seed: int) -> np.ndarray:
    """Rows whose every feature sits exactly on a split threshold, one float32 step either side
    of one, or at NaN, +-inf, +-float32 max, +-0.0, the smallest subnormal; mixed at random and
    appended to ``rows``: where locating a cell by global bins could part from ``searchsorted``
    on each tree's own thresholds."""
    rng = np.random.default_rng(seed)
    n = 4_000
    f32 = np.finfo(np.float32)
    specials = np.array(
        [np.nan, np.inf, -np.inf, f32.max, -f32.max, 0.0, -0.0, f32.smallest_subnormal],
        dtype=np.float32,
    )
    x = rng.normal(scale=100.0, size=(n, shap_table.n_features)).astype(np.float32)
    for j, bins in enumerate(shap_table.bins):
        candidates = [specials]
        if len(bins):
            candidates += [
                bins,
                np.nextafter(bins, np.float32(-np.inf)),
                np.nextafter(bins, np.float32(np.inf)),
            ]
        pool = np.concatenate(candidates)
        x[:, j] = np.where(rng.random(n) < 0.8, rng.choice(pool, size=n), x[:, j])
    return np.vstack([rows.astype(np.float32), x])


def test_cells_by_global_bins_equal_the_per_tree_search_bit_for_bit(
    model: CreditModel, rows: np.ndarray
) -> None:
    """``contributions`` (each tree's cell from per-feature global bins and lookups, summed by
    feature) gives the very floats of ``contributions_by_search`` (one ``searchsorted`` per
    tree and feature, summed by tree), on honest and adversarial rows, in C order (callers sum
    rows, and numpy's summation order depends on the layout)."""
    x32 = _adversarial_rows(model.shap, rows, seed=7)
    fast = model.shap.contributions(x32)
    slow = model.shap.contributions_by_search(x32)
    assert fast.flags.c_contiguous and fast.shape == slow.shape == (len(x32), len(FEATURES))
    assert np.array_equal(fast.view(np.uint64), slow.view(np.uint64))
    assert np.isnan(x32).any() and np.isinf(x32).any()
    # Every split threshold of every feature is hit exactly by some row.
    for j, bins in enumerate(model.shap.bins):
        assert np.isin(bins, x32[:, j]).all()


def test_cells_by_global_bins_on_another_booster() -> None:
    """A booster of another shape (40 depth-3 trees sharing their few thresholds, a feature
    never split): the lookup still equals the search bit for bit, and xgboost's
    ``pred_contribs`` on finite rows."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=(600, 5)).astype(np.float32)  # few values: shared thresholds
    x[:, 4] = 1.0  # never split: no bins
    y = (x[:, 0] + 2 * x[:, 1] - x[:, 2] * x[:, 3] > 3).astype(np.float32)
    booster = xgb.train(
        {"max_depth": 3, "eta": 0.3, "objective": "binary:logistic", "base_score": 0.4},
        xgb.DMatrix(x, label=y),
        num_boost_round=40,
    )
    table = TabulatedTreeShap(booster)
    assert len(table.bins[4]) == 0
    probe = _adversarial_rows(table, x, seed=9)
    fast = table.contributions(probe)
    assert np.array_equal(
        fast.view(np.uint64), table.contributions_by_search(probe).view(np.uint64)
    )
    finite = probe[np.isfinite(probe).all(axis=1)]
    native = booster.predict(xgb.DMatrix(finite), pred_contribs=True)
    np.testing.assert_allclose(table.contributions(finite), native[:, :-1], atol=2e-6)


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
