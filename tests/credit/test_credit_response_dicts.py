"""The fast response path (``response_dicts``) serves exactly what the validated
``CreditResponse`` path serves: same JSON (member order included), same hash, schema-valid,
additivity enforced; on honest rows and on the rows an adversary or a broken pipeline would
produce (thin files, NaN/inf, extreme values, every gate outcome, every reason code)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from credit import explain
from credit.explain import (
    _RULES,
    REASON_TABLE,
    SMALL_BATCH,
    _Condition,
    _Text,
    _what_if_tables,
    reason_codes,
    reason_codes_batch,
    what_if,
    what_if_columns,
)
from credit.features import FEATURE_INDEX, FEATURE_NAMES, FEATURES, FeatureVector, compute_features
from credit.gates import GatePolicy, default_policy, parse_policy
from credit.model import ADDITIVITY_TOL, BANDS, CreditModel, Explained, band_of
from credit.score import (
    AdditivityError,
    CreditResponse,
    _bands,
    _reason_target,
    _reason_targets_json,
    response_dict_hash,
    response_dicts,
    response_hash,
    score_vectors,
)
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


def _same(
    vectors: list[FeatureVector],
    model: CreditModel,
    *,
    policy: GatePolicy | None = None,
    with_what_if: bool = False,
    with_evidence_ids: bool = True,
) -> list[dict[str, Any]]:
    """Both paths on ``vectors``: the dicts are the validated responses' dumps, byte for byte."""
    fast = response_dicts(
        vectors,
        model=model,
        policy=policy,
        with_what_if=with_what_if,
        with_evidence_ids=with_evidence_ids,
    )
    slow = score_vectors(
        vectors,
        model=model,
        policy=policy,
        with_what_if=with_what_if,
        with_evidence_ids=with_evidence_ids,
    )
    assert len(fast) == len(slow) == len(vectors)
    for d, r, vec in zip(fast, slow, vectors, strict=True):
        dumped = r.model_dump(mode="json")
        # The evidence ids are the vector's own immutable tuple, not a copy (issue #21: a list
        # per response was 1.2 M references to create, walk in the collector's pass and free
        # for 10^4 rows); every serialiser writes a tuple as the same JSON array, checked below.
        ids = d["evidence_ids"]
        assert type(ids) is tuple
        if with_evidence_ids or d["status"] != "scored":
            assert ids is vec.evidence_ids
        else:
            assert ids == ()
        assert {**d, "evidence_ids": list(ids)} == dumped
        # Byte-identical JSON, member order (nested too) and int/float spelling included.
        assert json.dumps(d) == json.dumps(dumped)
        # The hash the service commits is the same, and the schema accepts the dict as is.
        assert response_dict_hash(d) == response_hash(r)
        assert keccak(canonical_json(d)) == keccak(canonical_json(dumped))
        assert CreditResponse.model_validate(d).model_dump(mode="json") == dumped
    return fast


@pytest.mark.parametrize("with_what_if", [False, True])
def test_dicts_equal_the_validated_responses(
    vectors: list[FeatureVector], model: CreditModel, with_what_if: bool
) -> None:
    fast = _same(vectors, model, with_what_if=with_what_if)
    # The population covers what the response can say: several bands, both gate outcomes,
    # stand-ins, what-if readings.
    assert len({d["band"] for d in fast}) >= 3
    assert {d["gate"]["outcome"] for d in fast} == {"pass", "fail"}
    assert {d["reading"] for d in fast} == {"published", "what_if"}
    assert any(d["stand_ins"] for d in fast) and any(d["reason_codes"] for d in fast)
    if with_what_if:
        assert sum(len(d["what_if"]) for d in fast) >= len(fast) // 2


def test_small_batches_empty_batches_and_no_evidence_ids(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """Below ``SMALL_BATCH`` rows the reasons are walked per supplier; one row, none."""
    assert response_dicts([], model=model) == [] == score_vectors([], model=model)
    for size in (1, 2, SMALL_BATCH - 1, SMALL_BATCH):
        _same(vectors[:size], model, with_what_if=True)
    fast = _same(vectors[:40], model, with_evidence_ids=False)
    # the count stays; the ids are left out of scored responses (a thin file always lists them)
    scored = [d for d in fast if d["status"] == "scored"]
    assert scored and all(d["evidence_ids"] == () and d["evidence_count"] for d in scored)


def _thin(vec: FeatureVector, lots: int, months: int) -> FeatureVector:
    return replace(
        vec, facts=replace(vec.facts, oem_received_lots=lots, oem_evidence_months=months)
    )


def test_thin_files_are_answered_without_a_number(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """Thin files (either reason, both, just under the policy's line) among scored rows: no
    score, no contributions, the gate failed for that reason; in both paths, what-if or not."""
    policy = default_policy()
    lots, months = policy.min_received_lots, policy.min_evidence_months
    mixed = [
        _thin(v, *shape)
        for v, shape in zip(
            vectors,
            [(0, 0), (lots - 1, months), (lots, months - 1), (lots, months), (10**6, 10**6)] * 40,
            strict=False,
        )
    ]
    for with_what_if in (False, True):
        fast = _same(mixed, model, with_what_if=with_what_if)
        thin = [d for d in fast if d["status"] == "insufficient_evidence"]
        assert len(thin) == 3 * len(mixed) // 5
        assert all(d["score"] is None and not d["contributions"] and not d["what_if"] for d in thin)
        assert {len(d["gate"]["blocking"]) for d in thin} == {1, 2}
        assert all(d["gate"]["insufficient_evidence"] for d in thin)


def test_non_finite_inputs_are_refused_by_both_paths(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """NaN, inf, or a value beyond float32 (inf to the model) among honest rows."""
    j = FEATURE_INDEX["defect_ppm"]
    for bad in (float("nan"), float("inf"), -float("inf"), 1e39):
        values = list(vectors[5].values)
        values[j] = bad
        batch = [*vectors[:5], replace(vectors[5], values=tuple(values)), *vectors[6:30]]
        # (1e39 overflows float32 on the way in: numpy says so, then it is inf like the rest)
        with np.errstate(over="ignore"), pytest.raises(ValueError, match="finite"):
            response_dicts(batch, model=model)
        with np.errstate(over="ignore"), pytest.raises(ValueError, match="finite"):
            score_vectors(batch, model=model)


def test_features_of_another_schema_are_refused(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    batch = [*vectors[:20], replace(vectors[20], schema_version="credit-features/0")]
    with pytest.raises(ValueError, match="credit-features/0"):
        response_dicts(batch, model=model)
    with pytest.raises(ValueError, match="credit-features/0"):
        score_vectors(batch, model=model)


def test_extreme_values_and_observations(vectors: list[FeatureVector], model: CreditModel) -> None:
    """Corners of the feature space (scores 0 and 100 exactly, band A with no reason target),
    values far outside the what-if ranges, values exactly at the trees' split thresholds and
    just below them, every observation missing, and observations that are NaN while the model
    sees a number (a broken feature pipeline)."""
    rng = np.random.default_rng(7)
    rows: list[FeatureVector] = []
    base = vectors[0]
    all_seen = {f.name: 0.0 for f in FEATURES}
    for k in range(160):
        values = []
        for f in FEATURES:
            splits = model.splits[f.name]
            pick = k % 6
            if pick == 0:  # the best corner, far out
                v = 3e38 if f.monotone > 0 else -3e38
            elif pick == 1:  # the worst corner
                v = -3e38 if f.monotone > 0 else 3e38
            elif pick == 2 and len(splits):  # exactly at a split threshold
                v = float(np.float32(rng.choice(splits)))
            elif pick == 3 and len(splits):  # the largest float32 below one
                t = np.float32(rng.choice(splits))
                v = float(np.nextafter(t, np.float32(-np.inf)))
            elif pick == 4:  # the what-if range's own bounds
                v = f.lo if rng.random() < 0.5 else f.hi
            else:
                v = float(rng.uniform(f.lo, min(f.hi, 1e4)))
            values.append(v)
        observed: dict[str, float | None] = dict(zip(FEATURE_NAMES, values, strict=True))
        if k % 5 == 0:
            observed = dict.fromkeys(FEATURE_NAMES)  # nothing observed: every stand-in
        elif k % 7 == 0:
            observed["cpk_min"] = float("nan")  # NaN, not None: not "missing"
            observed["fl_participation"] = float("nan")
        rows.append(replace(base, supplier_id=f"SUP-X{k}", values=tuple(values), observed=observed))
    rows.append(replace(base, values=tuple(model_corner(True)), observed=dict(all_seen)))
    rows.append(replace(base, values=tuple(model_corner(False)), observed=dict(all_seen)))
    for with_what_if in (False, True):
        fast = _same(rows, model, with_what_if=with_what_if)
    scores = [d["score"] for d in fast]
    assert 100.0 in scores and 0.0 in scores
    top = fast[scores.index(100.0)]
    assert top["band"] == "A" and top["reasons_for"] is None
    assert any(d["what_if"] for d in fast)


def model_corner(best: bool) -> list[float]:
    """The best (worst) corner of the feature space, just inside float32."""
    return [3e38 if (f.monotone > 0) == best else -3e38 for f in FEATURES]


def _policy(
    minimum: float, requires: list[tuple[str, str, float]], name: str = "adversary"
) -> GatePolicy:
    lines = [f'id = "{name}"', 'version = "1"', "[score]", f"min = {minimum}"]
    lines += ["[evidence]", "min_received_lots = 6", "min_months = 3"]
    for fact, op, value in requires:
        lines += ["[[require]]", f'fact = "{fact}"', f'op = "{op}"', f"value = {value}"]
        lines.append(f'reason = "{fact} {op} {value}"')
    return parse_policy("\n".join(lines).encode())


def test_every_gate_outcome(vectors: list[FeatureVector], model: CreditModel) -> None:
    """Passed, failed on the score, on a fact, on a feature nobody observed (actual None), on
    both; NaN observations under == and != (Python's float comparison: only != holds); the
    threshold at 0 and at 100 (nobody to improve, everybody to improve); a score exactly at
    the threshold."""
    facts = [(0, 0), (1, 0), (0, 2), (3, 1)]
    rows = []
    for k, vec in enumerate(vectors):
        critical, major = facts[k % 4]
        observed = dict(vec.observed)
        if k % 3 == 0:
            observed["defect_ppm"] = None
        if k % 5 == 0:
            observed["on_time_delivery"] = float("nan")
        rows.append(
            replace(
                vec,
                facts=replace(
                    vec.facts, open_critical_complaints=critical, open_major_nonconformities=major
                ),
                observed=observed,
            )
        )
    scored = response_dicts(rows, model=model)
    exact = next(d["score"] for d in scored if d["status"] == "scored")
    policies = [
        default_policy(),
        _policy(
            50.0,
            [
                ("open_critical_complaints", "<=", 0),
                ("defect_ppm", "<", 300),
                # None is no number: it blocks even where "!=" would hold for NaN
                ("defect_ppm", "!=", -1),
                # NaN != 0.5 holds: no entry (an entry would carry NaN, which no canonical
                # JSON can hash, in either path)
                ("on_time_delivery", "!=", 0.5),
                ("open_major_nonconformities", ">", -1),
            ],
        ),
        _policy(0.0, []),
        _policy(100.0, [("fl_participation", "==", 1)]),
        _policy(exact, [], name="at-a-score"),
    ]
    outcomes: set[tuple[str, bool, bool]] = set()
    for policy in policies:
        for with_what_if in (False, True):
            fast = _same(rows, model, policy=policy, with_what_if=with_what_if)
        for d in fast:
            gate = d["gate"]
            if d["status"] != "scored":
                continue
            outcomes.add((gate["outcome"], gate["distance"] < 0, bool(gate["blocking"])))
            if policy is policies[1] and "defect_ppm" in d["missing_evidence"]:
                # a requirement on a feature nobody observed blocks, whatever the operator
                assert {"fact": "defect_ppm", "actual": None} in [
                    {"fact": b["fact"], "actual": b["actual"]} for b in gate["blocking"]
                ]
    assert outcomes >= {
        ("pass", False, False),
        ("fail", True, False),
        ("fail", False, True),
        ("fail", True, True),
    }


def test_every_reason_code_fires_and_the_batch_equals_the_rule_walk(model: CreditModel) -> None:
    """Random observations around every rule's thresholds (exact thresholds, None, NaN, 0, 1)
    with random losses: every curated code and every fallback fires, and the batch's reasons
    are the one-supplier walk's, entry for entry (text, features, points)."""
    rng = np.random.default_rng(21)
    limits = {
        "defect_ppm": [0.0, 300.0, 299.9, 300.1, 800.0, 800.1, 5000.0],
        "cpk_min": [0.5, 1.33, 1.329, 1.5, 1.67, 1.7, 3.0],
        "cpk_trend": [-0.5, -0.0, 0.0, 0.01, 0.4],
        "on_time_delivery": [0.5, 0.949, 0.95, 0.99, 1.0],
        "complaints_per_month": [0.0, 0.01, 2.5],
        "complaint_response_hours": [10.0, 24.0, 24.5, 48.0, 60.0],
        "eight_d_closure_days": [5.0, 11.7, 12.0, 30.0, 45.0],
        "audit_major_nc": [0.0, 1.0, 3.0],
        "audit_minor_nc": [0.0, 2.0],
        "evidence_completeness": [0.2, 0.999, 1.0],
        "fl_participation": [0.0, 0.5, 1.0],
    }
    n = 3000
    observed: list[dict[str, float | None]] = []
    details: list[dict[str, str] | None] = []
    for i in range(n):
        row: dict[str, float | None] = {}
        for name in FEATURE_NAMES:
            u = rng.random()
            row[name] = None if u < 0.15 else float(rng.choice(limits[name]))
        if i % 97 == 0:
            row["eight_d_closure_days"] = float("nan")
        observed.append(row)
        details.append([None, {}, {"cpk_min": "CC-7"}, {"cpk_min": "  x  "}][i % 4])
    points = rng.uniform(-6.0, 1.0, size=(n, len(FEATURE_NAMES)))
    points[rng.random(size=points.shape) < 0.2] = 0.0
    # equal losses in a row: ties go to the table's order
    points[: n // 2] = rng.choice([-2.0, -1.0, 0.0, 0.5], size=(n // 2, len(FEATURE_NAMES)))
    got = reason_codes_batch(points, observed, details)  # type: ignore[arg-type]
    fired = set()
    for k in range(n):
        row_points = dict(zip(FEATURE_NAMES, points[k].tolist(), strict=True))
        walked = reason_codes(row_points, observed[k], details[k])
        assert got[k] == walked
        fired |= {r.code for r in walked}
    assert fired == {rule.code for rule in _RULES}
    small = reason_codes_batch(points[:5], observed[:5], details[:5])  # type: ignore[arg-type]
    assert small == got[:5]


def test_texts_with_a_value_are_only_on_rules_that_need_it_observed() -> None:
    """The batch formats a rule's text from the batch's value matrix; that reads the value
    the one-supplier walk reads only where the rule fires on an observed value."""
    for rule in REASON_TABLE:
        assert isinstance(rule.text, _Text)
        if rule.text.feature is not None:
            assert isinstance(rule.applies, _Condition) and rule.applies.op in (">", "<")
            assert rule.applies.name == rule.text.feature


class _Lying(CreditModel):
    """The real model, except one row's explanation is off by ``by`` points: what a broken SHAP
    table or a tampered model file would produce."""

    by = 1.0
    row = -1  # -1: the middle row

    def explain(self, x: np.ndarray) -> Explained:
        e = super().explain(x)
        points = e.points.copy()
        points[self.row if self.row >= 0 else len(points) // 2, 0] += self.by
        return replace(e, points=points)


def _lying(model: CreditModel, by: float, row: int = -1) -> _Lying:
    lying = _Lying(model.booster, model.meta, bytes(model.booster.save_raw("json")))
    lying.by, lying.row = by, row
    return lying


def test_an_explanation_that_does_not_add_up_is_refused(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    scored = [v for v in vectors if not default_policy().thin_file(v.facts)]
    lying = _lying(model, 1.0)
    with pytest.raises(AdditivityError, match=scored[len(scored) // 2].supplier_id):
        response_dicts(scored, model=lying)
    with pytest.raises(AdditivityError, match=scored[len(scored) // 2].supplier_id):
        response_dicts(scored, model=lying, with_what_if=True)
    with pytest.raises(AdditivityError):
        score_vectors(scored, model=lying)


def test_the_additivity_line_is_the_validators(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """Just over the tolerance is refused by both paths, just under is served by both; an
    explanation off on a thin file (which shows no contributions) stops neither."""
    scored = [v for v in vectors if not default_policy().thin_file(v.facts)][:30]
    over = _lying(model, 3 * ADDITIVITY_TOL)
    with pytest.raises(AdditivityError):
        response_dicts(scored, model=over)
    with pytest.raises(AdditivityError):
        score_vectors(scored, model=over)
    _same(scored, _lying(model, ADDITIVITY_TOL / 4))
    thin = [_thin(scored[0], 0, 0), *scored[1:]]
    _same(thin, _lying(model, 5.0, row=0))


@pytest.mark.parametrize("threshold", [0.0, 40.0, 70.0, 85.0, 100.0])
def test_batched_what_if_is_the_one_row_search(
    vectors: list[FeatureVector], model: CreditModel, threshold: float
) -> None:
    x = np.array([v.values for v in vectors], dtype=np.float64)
    scores = model.explain(x).scores
    rows = list(range(len(x)))
    # a row scored exactly at the threshold does not need to improve
    x = np.vstack([x, x[:1]])
    scores = np.append(scores, threshold)
    columns = what_if_columns(model, x, scores, threshold)
    for i in [*rows, len(x) - 1]:
        a, b = columns.offsets[i], columns.offsets[i + 1]
        got = [
            (FEATURE_NAMES[j], c, t, d, s)
            for j, c, t, d, s in zip(
                columns.features[a:b],
                columns.current[a:b],
                columns.thresholds[a:b],
                columns.deltas[a:b],
                columns.scores_after[a:b],
                strict=True,
            )
        ]
        want = what_if(model, x[i], float(scores[i]), threshold)
        assert got == [(w.feature, w.current, w.threshold, w.delta, w.score_after) for w in want]
        assert columns.comparisons[a:b] == [w.comparison for w in want]


def test_what_if_decided_by_xgboost_alone_is_the_same(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """With the tabulated scores trusted nowhere (every candidate "unsure"), xgboost decides
    every crossing: the same changes. So the tables only save work, they decide nothing."""
    doubting = CreditModel(model.booster, model.meta, bytes(model.booster.save_raw("json")))
    explain._TABLES[doubting] = replace(_what_if_tables(doubting), tolerance=1e9)
    trusting = response_dicts(vectors, model=model, with_what_if=True)
    doubted = response_dicts(vectors, model=doubting, with_what_if=True)
    assert [d["what_if"] for d in doubted] == [d["what_if"] for d in trusting]


def test_the_tabulated_score_is_within_its_bound_of_xgboosts(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """What lets the tables decide a crossing: at every what-if candidate of these rows (and
    at the corners) the float64 tabulated score and xgboost's float32 one differ by far less
    than the tolerance they are trusted to."""
    tables = _what_if_tables(model)
    x = np.array([v.values for v in vectors], dtype=np.float64)
    grids = [np.array([model_corner(True), model_corner(False)])]
    for st in tables.steps.values():
        for values in (st.splits, st.down_values):
            grid = np.repeat(x[:40], len(values), axis=0)
            grid[:, st.j] = np.tile(values, 40)
            grids.append(grid)
    grid = np.vstack(grids)
    gap = np.abs(model.explain(grid).scores - model.scores(grid))
    assert 0 < tables.tolerance < 0.05
    assert gap.max() < tables.tolerance / 4


def test_bands_and_reason_targets_at_their_floors() -> None:
    """A score exactly at a band's floor or at the gate's minimum, and next to one."""
    policy = default_policy()
    edges = [floor for _, floor in BANDS] + [policy.min_score, 100.0]
    near = {e + d for e in edges for d in (-1e-9, 0.0, 1e-9, 0.5)}
    scores = np.array(sorted(s for s in near if 0.0 <= s <= 100.0))
    assert _bands(scores) == [band_of(s) for s in scores.tolist()]
    want = [_reason_target(s, None, policy) for s in scores.tolist()]
    assert _reason_targets_json(scores, policy) == [
        None if t is None else t.model_dump(mode="json") for t in want
    ]


def test_what_if_at_a_threshold_equal_to_a_candidates_score(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """The threshold is exactly what xgboost scores a candidate change: whether that change
    crosses is decided on xgboost's float32 number (the float64 tables are ~1e-6 off, inside
    the tolerance, so such rows and features are asked of xgboost)."""
    rng = np.random.default_rng(3)
    tables = _what_if_tables(model)
    x = np.array([v.values for v in vectors[:60]], dtype=np.float64)
    scores = model.explain(x).scores
    checked = 0
    for i in range(len(x)):
        st = tables.steps[int(rng.choice(list(tables.steps)))]
        grid = np.repeat(x[i : i + 1], len(st.splits), axis=0)
        grid[:, st.j] = st.splits if rng.random() < 0.5 else st.down_values
        candidates = model.scores(grid)
        threshold = float(candidates[int(rng.integers(len(candidates)))])
        if not 0.0 <= threshold <= 100.0:
            continue
        columns = what_if_columns(model, x[i : i + 1], scores[i : i + 1], threshold)
        want = what_if(model, x[i], float(scores[i]), threshold)
        assert columns.scores_after == [w.score_after for w in want]
        assert columns.thresholds == [w.threshold for w in want]
        checked += 1
    assert checked > 40


def test_evidence_ids_given_as_a_list_are_not_shared(
    vectors: list[FeatureVector], model: CreditModel
) -> None:
    """A vector built by hand with a list of ids (the type says tuple; a caller may not): the
    response gets its own tuple, so changing the caller's list afterwards changes nothing
    served, stored or hashed."""
    ids = list(vectors[0].evidence_ids)
    vec = replace(vectors[0], evidence_ids=ids)  # type: ignore[arg-type]
    before = response_dicts([vec, vectors[1]], model=model)[0]
    hashed = response_dict_hash(before)
    ids.append("0x" + "ff" * 32)
    assert type(before["evidence_ids"]) is tuple and list(before["evidence_ids"]) == ids[:-1]
    assert response_dict_hash(before) == hashed
