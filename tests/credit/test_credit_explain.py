"""Reason codes tied to the features that cost points; what-if crossings; the waterfall PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from credit.explain import MAX_REASONS, REASON_TABLE, reason_codes
from credit.features import FEATURE_INDEX, FEATURE_NAMES, compute_features
from credit.model import CreditModel
from credit.score import CreditResponse, score_supplier
from credit.waterfall import plot_waterfall, waterfall_rows
from simulator.population import Population


@pytest.fixture(scope="module")
def responses(signed_population: Population) -> list[CreditResponse]:
    pop = signed_population
    return [
        score_supplier(
            pop.items,
            t.supplier_id,
            end,
            fl_participation=pop.fl_participation(t.supplier_id, end, 180),
        )
        for t in pop.suppliers
        for end in (pop.end - 90 * 86400, pop.end)
    ]


def test_reason_codes_are_tied_to_the_points_they_explain(responses: list[CreditResponse]) -> None:
    curated = {r.code for r in REASON_TABLE}
    seen = set()
    for resp in responses:
        points = {c.feature: c.points for c in resp.contributions}
        assert len(resp.reason_codes) <= MAX_REASONS
        assert [r.points for r in resp.reason_codes] == sorted(r.points for r in resp.reason_codes)
        claimed: list[str] = []
        for reason in resp.reason_codes:
            assert reason.features and all(points[f] < 0 for f in reason.features)
            assert reason.points == pytest.approx(sum(points[f] for f in reason.features))
            claimed += reason.features
            seen.add(reason.code)
        assert len(claimed) == len(set(claimed))  # a feature explains one code at most
        # The largest single loss is always explained.
        worst = min(points, key=points.get)
        if points[worst] < 0:
            assert worst in claimed
    assert len(seen & curated) >= 5


def test_reason_text_uses_domain_thresholds() -> None:
    observed = {n: None for n in FEATURE_NAMES} | {
        "eight_d_closure_days": 41.0,
        "complaint_response_hours": 60.0,
    }
    points = {n: 0.0 for n in FEATURE_NAMES} | {
        "eight_d_closure_days": -6.0,
        "complaint_response_hours": -2.0,
    }
    codes = reason_codes(points, observed)
    assert [c.code for c in codes] == ["EIGHT_D_OVER_30D", "RESPONSE_OVER_48H"]
    assert codes[0].text == "8D closure slower than 30 days (mean 41 days)"


def _apply(row: np.ndarray, feature: str, comparison: str, threshold: float) -> np.ndarray:
    out = row.copy()
    t = np.float32(threshold)
    out[FEATURE_INDEX[feature]] = t if comparison == ">=" else np.nextafter(t, np.float32(-np.inf))
    return out


def test_what_if_changes_cross_the_gate_and_are_the_nearest(
    model: CreditModel, signed_population: Population, responses: list[CreditResponse]
) -> None:
    pop = signed_population
    checked = 0
    for resp in responses:
        vec = compute_features(
            pop.items,
            resp.supplier_id,
            resp.as_of,
            fl_participation=pop.fl_participation(resp.supplier_id, resp.as_of, 180),
        )
        row = vec.as_array()
        threshold = resp.gate.threshold
        failing = resp.score < threshold
        for change in resp.what_if:
            after = float(
                model.scores(
                    _apply(row, change.feature, change.comparison, change.threshold)[None, :]
                )[0]
            )
            assert (after >= threshold) if failing else (after < threshold)
            assert after == pytest.approx(change.score_after, abs=1e-3)
            # Any split closer to the current value does not cross.
            splits = model.splits[change.feature]
            lo, hi = sorted((row[FEATURE_INDEX[change.feature]], change.threshold))
            for t in splits[(splits > lo) & (splits < hi)]:
                nearer = float(
                    model.scores(_apply(row, change.feature, change.comparison, t)[None, :])[0]
                )
                assert (nearer < threshold) if failing else (nearer >= threshold)
            checked += 1
    assert checked >= 5


def test_waterfall_png(responses: list[CreditResponse], tmp_path: Path) -> None:
    out = plot_waterfall(responses[0], tmp_path / "w.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_waterfall_png_uses_the_dashboards_feature_labels(
    responses: list[CreditResponse],
) -> None:
    """Issue 20: one set of feature labels for the PNG, the report and the dashboard."""
    from api.ui import fmt

    for resp in responses:
        labels, values = waterfall_rows(resp, top=4)
        top = sorted(resp.contributions, key=lambda c: abs(c.points), reverse=True)[:4]
        for label, c in zip(labels, top, strict=False):
            assert label.startswith(fmt.feature_label(c.feature) + " = ")
            assert c.feature not in label  # never the machine name
        assert values[:4] == [c.points for c in top]
        if len(resp.contributions) > 4:
            assert labels[-1] == f"{len(resp.contributions) - 4} other features"
        assert abs(sum(values) - sum(c.points for c in resp.contributions)) < 1e-9


def test_every_curated_rule_names_real_features() -> None:
    for rule in REASON_TABLE:
        assert set(rule.features) <= set(FEATURE_NAMES), rule.code
