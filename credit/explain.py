"""Explanations a supplier can act on: reason codes and what-if to cross the gate (the
waterfall plot of a response is ``credit.waterfall``).

* **Reason codes** come from a curated table. Each rule names the features it explains and a
  condition on their observed values; a feature that costs points is explained by the first rule
  of the table that matches it (rules run from the most to the least specific), so every code is
  tied to the features, and the points, that produced it. At most four, largest loss first.
* **What-if**: for each feature, the smallest change of that feature alone that moves the score
  across the gate threshold (up if failing, down if passing). The score is a monotone step function
  of each feature whose steps are the trees' split thresholds, so checking those thresholds in
  order from the current value finds the exact nearest crossing.
"""

from __future__ import annotations

import itertools
import math
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from credit.features import FEATURE_INDEX, FEATURE_NAMES, FEATURES, SPECS
from credit.treeshap import TreeTable

if TYPE_CHECKING:
    from credit.model import CreditModel

MAX_REASONS = 4
# Figures from docs/domain.md: OEMs require <= 300 PPM, a poor line runs 800+; Cpk >= 1.33 ongoing,
# >= 1.67 for new parts (PPAP); complaint response within 24-48 h; 8D closure within 30 days is
# common practice, industry average ~11.7 days.
PPM_OEM_LIMIT = 300.0
PPM_POOR_LINE = 800.0
CPK_ONGOING = 1.33
CPK_NEW_PART = 1.67
RESPONSE_FAST_H = 24.0
RESPONSE_DUE_H = 48.0
CLOSURE_DUE_D = 30.0
CLOSURE_AVERAGE_D = 11.7
OTD_TARGET = 0.95  # the usual OEM delivery target (assumption, see features.py)

Observed = Mapping[str, float | None]


@dataclass(frozen=True)
class ReasonRule:
    code: str
    features: tuple[str, ...]
    applies: Callable[[Observed], bool]
    text: Callable[[Observed, Mapping[str, str]], str]


class _Condition:
    """A rule's condition on one observed feature: callable on one supplier's observations, and
    ``mask`` on a batch's (the vectorised reason codes of ``reason_codes_batch``)."""

    def __init__(self, name: str | None, op: str, limit: float = 0.0) -> None:
        self.name, self.op, self.limit = name, op, limit

    def __call__(self, o: Observed) -> bool:
        value = o.get(self.name) if self.name is not None else None
        if self.op == "always":
            return True
        if self.op == "missing":
            return value is None
        if self.op == "falsy":
            return not value
        if value is None:
            return False
        return value > self.limit if self.op == ">" else value < self.limit

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Per row of ``values`` (rows x features, NaN where not observed)."""
        if self.op == "always" or self.name is None:
            return np.ones(len(values), dtype=bool)
        column = values[:, FEATURE_INDEX[self.name]]
        if self.op == "missing":
            return np.isnan(column)
        if self.op == "falsy":
            return np.isnan(column) | (column == 0)
        with np.errstate(invalid="ignore"):
            return column > self.limit if self.op == ">" else column < self.limit


def _above(name: str, limit: float) -> Callable[[Observed], bool]:
    return _Condition(name, ">", limit)


def _below(name: str, limit: float) -> Callable[[Observed], bool]:
    return _Condition(name, "<", limit)


class _Text:
    """A reason's text: ``template`` formatted with the supplier's observed value of ``feature``
    (and, with ``detail``, its detail of that feature or '', double spaces then squeezed), or
    fixed without a feature. Called like a function ``(observed, details) -> str`` for one
    supplier; ``many`` formats it for many at once (``reason_columns``)."""

    def __init__(self, template: str, feature: str | None = None, detail: bool = False) -> None:
        self.template, self.feature, self.detail = template, feature, detail

    def __call__(self, o: Observed, d: Mapping[str, str]) -> str:
        if self.feature is None:
            return self.template
        if not self.detail:
            return self.template.format(o[self.feature])
        return self.template.format(o[self.feature], d.get(self.feature, "")).replace("  ", " ")

    def many(self, values: list[float], details: Sequence[Mapping[str, str] | None]) -> list[str]:
        """The texts of many suppliers, given ``feature``'s observed value of each (a float: the
        format specs here print an int, a bool or a numpy number as they print its float)."""
        name, form = self.feature, self.template.format
        if name is None:
            return [self.template] * len(values)
        if not self.detail:
            return list(map(form, values))
        return [
            form(v, (d or {}).get(name, "")).replace("  ", " ")
            for v, d in zip(values, details, strict=True)
        ]


def _costs_points(feature: str) -> _Text:
    return _Text(f"{feature.replace('_', ' ')} holds the score down")


def _missing(name: str) -> Callable[[Observed], bool]:
    return _Condition(name, "missing")


REASON_TABLE: tuple[ReasonRule, ...] = (
    ReasonRule(
        "PPM_MISSING",
        ("defect_ppm",),
        _missing("defect_ppm"),
        _Text("No OEM incoming inspection of a received lot in the window (stand-in used)"),
    ),
    ReasonRule(
        "PPM_POOR_LINE",
        ("defect_ppm",),
        _above("defect_ppm", PPM_POOR_LINE),
        _Text("Defect rate {0:.0f} PPM, above the 800 PPM of a poor line", "defect_ppm"),
    ),
    ReasonRule(
        "PPM_OVER_LIMIT",
        ("defect_ppm",),
        _above("defect_ppm", PPM_OEM_LIMIT),
        _Text("Defect rate {0:.0f} PPM, above the 300 PPM OEM limit", "defect_ppm"),
    ),
    ReasonRule(
        "CPK_MISSING",
        ("cpk_min", "cpk_trend"),
        _missing("cpk_min"),
        _Text("No estimable capability of the OEM's key characteristics (stand-in used)"),
    ),
    ReasonRule(
        "CPK_BELOW_133",
        ("cpk_min",),
        _below("cpk_min", CPK_ONGOING),
        _Text("Cpk {0:.2f} of key characteristic {1} below 1.33", "cpk_min", detail=True),
    ),
    ReasonRule(
        "CPK_BELOW_167",
        ("cpk_min",),
        _below("cpk_min", CPK_NEW_PART),
        _Text(
            "Cpk {0:.2f} of key characteristic {1} below 1.67 required for new parts",
            "cpk_min",
            detail=True,
        ),
    ),
    ReasonRule(
        "CPK_DECLINING",
        ("cpk_trend",),
        _below("cpk_trend", 0.0),
        _Text(
            "Process capability declining (Cpk {0:+.2f} in the last third of the window)",
            "cpk_trend",
        ),
    ),
    ReasonRule(
        "OTD_MISSING",
        ("on_time_delivery",),
        _missing("on_time_delivery"),
        _Text("No OEM goods receipt in the window (stand-in used)"),
    ),
    ReasonRule(
        "OTD_LOW",
        ("on_time_delivery",),
        _below("on_time_delivery", OTD_TARGET),
        _Text("On-time delivery {0:.0%}, below 95%", "on_time_delivery"),
    ),
    ReasonRule(
        "COMPLAINTS",
        ("complaints_per_month",),
        _above("complaints_per_month", 0.0),
        _Text("{0:.1f} OEM complaints per month", "complaints_per_month"),
    ),
    ReasonRule(
        "RESPONSE_MISSING",
        ("complaint_response_hours",),
        _missing("complaint_response_hours"),
        _Text("No complaint due an answer in the window (24 h stand-in used)"),
    ),
    ReasonRule(
        "RESPONSE_OVER_48H",
        ("complaint_response_hours",),
        _above("complaint_response_hours", RESPONSE_DUE_H),
        _Text(
            "Complaint response slower than 48 hours (mean {0:.0f} h)", "complaint_response_hours"
        ),
    ),
    ReasonRule(
        "RESPONSE_OVER_24H",
        ("complaint_response_hours",),
        _above("complaint_response_hours", RESPONSE_FAST_H),
        _Text(
            "Complaint response slower than 24 hours (mean {0:.0f} h)", "complaint_response_hours"
        ),
    ),
    ReasonRule(
        "EIGHT_D_MISSING",
        ("eight_d_closure_days",),
        _missing("eight_d_closure_days"),
        _Text("No 8D due closure in the window (11.7-day stand-in used)"),
    ),
    ReasonRule(
        "EIGHT_D_OVER_30D",
        ("eight_d_closure_days",),
        _above("eight_d_closure_days", CLOSURE_DUE_D),
        _Text("8D closure slower than 30 days (mean {0:.0f} days)", "eight_d_closure_days"),
    ),
    ReasonRule(
        "EIGHT_D_OVER_AVERAGE",
        ("eight_d_closure_days",),
        _above("eight_d_closure_days", CLOSURE_AVERAGE_D),
        _Text(
            "8D closure slower than the 11.7-day industry average (mean {0:.0f} days)",
            "eight_d_closure_days",
        ),
    ),
    ReasonRule(
        "AUDIT_MISSING",
        ("audit_major_nc", "audit_minor_nc"),
        _missing("audit_major_nc"),
        _Text("No third-party audit in the last 12 months"),
    ),
    ReasonRule(
        "AUDIT_MAJOR_NC",
        ("audit_major_nc",),
        _above("audit_major_nc", 0.0),
        _Text("{0:.0f} open major nonconformities from the last audit", "audit_major_nc"),
    ),
    ReasonRule(
        "AUDIT_MINOR_NC",
        ("audit_minor_nc",),
        _above("audit_minor_nc", 0.0),
        _Text("{0:.0f} open minor nonconformities from the last audit", "audit_minor_nc"),
    ),
    ReasonRule(
        "EVIDENCE_INCOMPLETE",
        ("evidence_completeness",),
        _below("evidence_completeness", 1.0),
        _Text(
            "Outgoing inspection for only {0:.0%} of the lots the OEM received",
            "evidence_completeness",
        ),
    ),
    ReasonRule(
        "FL_MISSING",
        ("fl_participation",),
        _missing("fl_participation"),
        _Text("No federated-learning round recorded in the window (stand-in 0 used)"),
    ),
    ReasonRule(
        "FL_NOT_PARTICIPATING",
        ("fl_participation",),
        _Condition("fl_participation", "falsy"),
        _Text("Not taking part in federated defect-model training"),
    ),
    ReasonRule(
        "FL_PARTIAL",
        ("fl_participation",),
        _below("fl_participation", 1.0),
        _Text("Took part in {0:.0%} of federated rounds", "fl_participation"),
    ),
)
# Whatever the curated rules do not cover still gets a code (never an unexplained loss). It
# says what the feature costs, not that the supplier is "below peers": a missing feature has
# its own *_MISSING code above.
_FALLBACK = {
    f.name: ReasonRule(
        f"{f.name.upper()}_COSTS_POINTS",
        (f.name,),
        _Condition(None, "always"),
        _costs_points(f.name),
    )
    for f in FEATURES
}
# Rule positions by feature, so a response only looks at the rules of the features that cost it
# points (the table order, most specific first, is kept), then at the fallbacks.
_RULES: tuple[ReasonRule, ...] = (*REASON_TABLE, *(_FALLBACK[f.name] for f in FEATURES))
_RULE_INDEX: tuple[tuple[int, ...], ...] = tuple(
    tuple(FEATURE_INDEX[f] for f in rule.features) for rule in _RULES
)
_CODES: tuple[str, ...] = tuple(rule.code for rule in _RULES)
_RULES_OF: dict[str, tuple[int, ...]] = {
    f.name: tuple(k for k, rule in enumerate(_RULES) if f.name in rule.features) for f in FEATURES
}


@dataclass(frozen=True)
class Reason:
    code: str
    text: str
    features: tuple[str, ...]
    points: float  # score points lost to these features (negative)


def reason_codes(
    points: Mapping[str, float],
    observed: Observed,
    details: Mapping[str, str] | None = None,
    limit: int = MAX_REASONS,
) -> list[Reason]:
    """Up to ``limit`` reasons for the largest point losses, each tied to its features."""
    details = details or {}
    losing = {n: p for n, p in points.items() if p < 0}
    claimed: set[str] = set()
    reasons = []
    for k in sorted({k for n in losing for k in _RULES_OF[n]}):
        rule = _RULES[k]
        feats = tuple(f for f in rule.features if f in losing and f not in claimed)
        if not feats or not rule.applies(observed):
            continue
        claimed.update(feats)
        reasons.append(
            Reason(
                rule.code, rule.text(observed, details), feats, float(sum(losing[f] for f in feats))
            )
        )
    reasons.sort(key=lambda r: r.points)
    return reasons[:limit]


def reason_codes_batch(
    points: np.ndarray,
    observed: Sequence[Observed],
    details: Sequence[Mapping[str, str]],
    limit: int = MAX_REASONS,
) -> list[list[Reason]]:
    """``[reason_codes(row points, observed[i], details[i]) for each row]``, with each rule's
    condition, the features it may claim and the ranking decided for the whole batch at once
    (numpy, ``reason_columns``). ``points`` is rows x features in ``FEATURE_NAMES`` order."""
    return [[Reason(*r) for r in row] for row in reason_rows(points, observed, details, limit)]


ReasonRow = tuple[str, str, tuple[str, ...], float]  # code, text, features, points
# Below this many rows the rules are walked per supplier (``reason_codes``): the per-rule array
# work (~35 rules x a few numpy calls) costs more than it saves on a few rows.
SMALL_BATCH = 16


def reason_rows(
    points: np.ndarray,
    observed: Sequence[Observed],
    details: Sequence[Mapping[str, str]],
    limit: int = MAX_REASONS,
) -> list[list[ReasonRow]]:
    """``reason_codes_batch`` as plain tuples, one list per row."""
    c = reason_columns(points, observed, details, limit)
    entries = list(zip(c.codes, c.texts, c.features, c.points, strict=True))
    return [entries[a:b] for a, b in itertools.pairwise(c.offsets)]


@dataclass(frozen=True)
class ReasonColumns:
    """A batch's reason codes, flat: row i's are entries ``offsets[i]:offsets[i + 1]``, largest
    loss first (what ``reason_codes`` returns for that row, entry for entry)."""

    offsets: list[int]  # n + 1
    codes: list[str]
    texts: list[str]
    features: list[tuple[str, ...]]
    points: list[float]


_OBSERVED = operator.itemgetter(*FEATURE_NAMES)


@dataclass(frozen=True)
class Observations:
    """A batch's observed feature values as a matrix, and which were missing."""

    values: np.ndarray  # rows x features, NaN where not observed
    missing: np.ndarray  # rows x features, bool: the observation is None
    odd: list[int]  # rows holding an observation that is itself NaN (not None)


def observations(observed: Sequence[Observed]) -> Observations:
    """The rows' observations as one matrix (one conversion for the batch)."""
    n = len(observed)
    try:  # every feature is a key of a vector's observations (None where missing) ...
        seen: list[Sequence[float | None]] = list(map(_OBSERVED, observed))
    except KeyError:  # ... unless they were built by hand
        seen = [[*map(o.get, FEATURE_NAMES)] for o in observed]
    # None (not observed) becomes NaN in the matrix.
    values = np.array(seen, dtype=np.float64).reshape(n, len(FEATURE_NAMES))
    missing = np.isnan(values)
    # An observation that is itself NaN would read as "missing" there: such rows are told apart
    # (None vs NaN) one by one. Only rows with a NaN can be odd.
    nans = missing.sum(axis=1)
    odd = [
        i
        for i, count in zip(np.flatnonzero(nans).tolist(), nans[nans > 0].tolist(), strict=True)
        if seen[i].count(None) != count
    ]
    for i in odd:
        missing[i] = [v is None for v in seen[i]]
    return Observations(values, missing, odd)


def reason_columns(
    points: np.ndarray,
    observed: Sequence[Observed],
    details: Sequence[Mapping[str, str] | None],
    limit: int = MAX_REASONS,
    obs: Observations | None = None,
) -> ReasonColumns:
    """``reason_codes`` for every row of a batch, flat (``ReasonColumns``).

    Each rule's condition and the features it may still claim are numpy masks over the batch;
    the fired (row, rule) pairs are ranked by (row, points, rule) in one sort, the first
    ``limit`` of each row kept, and only the kept ones get their text. Rows with a NaN
    observation (and batches under ``SMALL_BATCH`` rows) take the one-supplier rule walk.
    """
    n = len(observed)
    if n < SMALL_BATCH:
        rows = points.tolist()
        walked = {i: _walk(rows[i], observed[i], details[i], limit) for i in range(n)}
        return _splice(ReasonColumns([0] * (n + 1), [], [], [], []), walked)
    obs = obs or observations(observed)
    losing = points < 0
    losing[obs.odd] = False  # walked one by one below
    claimed = np.zeros_like(losing)
    rows_of: list[np.ndarray] = []
    rule_of: list[np.ndarray] = []
    points_of: list[np.ndarray] = []
    features_of: list[tuple[str, ...]] = []
    for k, rule in enumerate(_RULES):
        idx = _RULE_INDEX[k]
        free = losing[:, idx] & ~claimed[:, idx]
        hit = free.any(axis=1)
        if not hit.any():
            continue
        hit &= _mask(rule, obs.values)
        rows_hit = np.flatnonzero(hit)
        if not len(rows_hit):
            continue
        if len(idx) == 1:
            claimed[rows_hit, idx[0]] = True
            rows_of.append(rows_hit)
            points_of.append(points[rows_hit, idx[0]])
            features_of += [rule.features] * len(rows_hit)
        else:
            flags = free[rows_hit]
            claimed[:, idx] |= free & hit[:, None]
            # float(sum(row[j] for j in claimed features)): 0 + a (+ b ...), in rule order;
            # an unclaimed feature adds 0.0, which changes no sum of losses (never -0.0)
            total = np.zeros(len(rows_hit))
            for c, j in enumerate(idx):
                total = total + np.where(flags[:, c], points[rows_hit, j], 0.0)
            rows_of.append(rows_hit)
            points_of.append(total)
            names = [FEATURE_NAMES[j] for j in idx]
            features_of += [
                tuple([f for f, ok in zip(names, row, strict=True) if ok]) for row in flags.tolist()
            ]
        rule_of.append(np.full(len(rows_hit), k))
    if rows_of:
        row_ = np.concatenate(rows_of)
        rule_ = np.concatenate(rule_of)
        pts_ = np.concatenate(points_of)
    else:
        row_ = rule_ = np.zeros(0, dtype=np.intp)
        pts_ = np.zeros(0)
    # Per row: the points ascending, ties in table order (the one-supplier walk's stable sort
    # of reasons found in table order); then the first ``limit`` of each row.
    order = np.lexsort((rule_, pts_, row_))
    row_sorted = row_[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = row_sorted[1:] != row_sorted[:-1]
    position = np.arange(len(order))
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    keep = order[rank < limit]
    kept_rules = rule_[keep]
    texts = _texts(kept_rules, row_[keep], observed, details, obs.values)
    kept_rules = kept_rules.tolist()
    counts = np.bincount(row_[keep], minlength=n)
    columns = ReasonColumns(
        offsets=[0, *np.cumsum(counts).tolist()],
        codes=list(map(_CODES.__getitem__, kept_rules)),
        texts=texts,
        features=list(map(features_of.__getitem__, keep.tolist())),
        points=pts_[keep].tolist(),
    )
    if not obs.odd:
        return columns
    rows = points[obs.odd].tolist()
    walked = {
        i: _walk(row, observed[i], details[i], limit) for i, row in zip(obs.odd, rows, strict=True)
    }
    return _splice(columns, walked)


def _texts(
    rules: np.ndarray,
    rows: np.ndarray,
    observed: Sequence[Observed],
    details: Sequence[Mapping[str, str] | None],
    values: np.ndarray,
) -> list[str]:
    """The text of each (rule, row): each rule's texts formatted together, from the batch's
    matrix of observed ``values`` (a rule that fired on a value had it observed)."""
    out = np.empty(len(rules), dtype=object)
    by_rule = np.argsort(rules, kind="stable")
    cuts = np.flatnonzero(np.diff(rules[by_rule])) + 1
    for positions in np.split(by_rule, cuts) if len(rules) else []:
        text = _RULES[int(rules[positions[0]])].text
        at = rows[positions]
        if isinstance(text, _Text):
            column = values[at, FEATURE_INDEX[text.feature]] if text.feature else at
            said = [details[i] for i in at.tolist()] if text.detail else []
            out[positions] = text.many(column.tolist(), said)
        else:  # a rule written as a plain function
            out[positions] = [text(observed[i], details[i] or {}) for i in at.tolist()]
    return out.tolist()


def _walk(
    row: list[float], observed: Observed, details: Mapping[str, str] | None, limit: int
) -> list[Reason]:
    return reason_codes(dict(zip(FEATURE_NAMES, row, strict=True)), observed, details, limit)


def _splice(columns: ReasonColumns, walked: dict[int, list[Reason]]) -> ReasonColumns:
    """Put the reasons of rows walked one by one (which hold none yet) into their places."""
    counts = [b - a for a, b in itertools.pairwise(columns.offsets)]
    for i, reasons in walked.items():
        counts[i] = len(reasons)
    offsets = [0, *itertools.accumulate(counts)]
    codes, texts = list(columns.codes), list(columns.texts)
    features, points = list(columns.features), list(columns.points)
    for i in sorted(walked):
        at = offsets[i]
        reasons = walked[i]
        codes[at:at] = [r.code for r in reasons]
        texts[at:at] = [r.text for r in reasons]
        features[at:at] = [r.features for r in reasons]
        points[at:at] = [r.points for r in reasons]
    return ReasonColumns(offsets, codes, texts, features, points)


def _mask(rule: ReasonRule, values: np.ndarray) -> np.ndarray:
    if isinstance(rule.applies, _Condition):
        return rule.applies.mask(values)
    # A rule written as a plain function: asked row by row.
    return np.array(
        [
            rule.applies(
                {f: None if v != v else v for f, v in zip(FEATURE_NAMES, r.tolist(), strict=True)}
            )
            for r in values
        ],
        dtype=bool,
    )


Comparison = Literal["<", ">="]


@dataclass(frozen=True)
class WhatIfChange:
    feature: str
    unit: str
    current: float
    comparison: Comparison  # the feature must satisfy `feature comparison threshold`
    threshold: float
    delta: float  # threshold - current
    score_after: float


def what_if(
    model: CreditModel, row: np.ndarray, score: float, threshold: float
) -> list[WhatIfChange]:
    """See ``_what_if``; only features the supplier cannot write for itself are proposed."""
    return [c for c in _what_if(model, row, score, threshold) if not SPECS[c.feature].self_written]


def _what_if(
    model: CreditModel, row: np.ndarray, score: float, threshold: float
) -> list[WhatIfChange]:
    """For each feature, the nearest single-feature change that crosses ``threshold``.

    Failing (score < threshold): the smallest improvement that reaches it. Passing: the smallest
    deterioration that would fall below it (the supplier's margin of safety). Sorted by the size
    of the change relative to the feature's range; features that cannot cross alone are left out.
    """
    row = np.asarray(row, dtype=np.float64)
    improve = score < threshold
    splits = model.splits
    candidates: list[tuple[int, float, Comparison, float]] = []  # (feature, value, comp., split)
    comparison: Comparison
    for spec in FEATURES:
        j = FEATURE_INDEX[spec.name]
        cur = np.float32(row[j])
        up = (spec.monotone > 0) == improve  # must the value go up to cross?
        for t in splits[spec.name]:
            t32 = np.float32(t)
            if up and t32 > cur:  # xgboost sends x >= t right: x = t crosses this split upwards
                value, comparison = float(t32), ">="
            elif not up and t32 <= cur:  # x < t goes left: the largest float32 below t
                value, comparison = float(np.nextafter(t32, np.float32(-np.inf))), "<"
            else:
                continue
            if spec.lo <= value <= spec.hi:
                candidates.append((j, value, comparison, float(t32)))
    if not candidates:
        return []
    grid = np.repeat(row[None, :], len(candidates), axis=0)
    for k, (j, value, _, _) in enumerate(candidates):
        grid[k, j] = value
    after = model.scores(grid)
    best: dict[int, WhatIfChange] = {}
    for (j, _value, comparison, split), s in zip(candidates, after, strict=True):
        crossed = s >= threshold if improve else s < threshold
        if not crossed:
            continue
        spec = FEATURES[j]
        change = WhatIfChange(
            spec.name, spec.unit, float(row[j]), comparison, split, split - float(row[j]), float(s)
        )
        if j not in best or abs(change.delta) < abs(best[j].delta):
            best[j] = change
    return sorted(
        best.values(), key=lambda c: abs(c.delta) / (SPECS[c.feature].hi - SPECS[c.feature].lo)
    )


# -- what-if for a batch -------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIfColumns:
    """A batch's what-ifs, flat: row i's are entries ``offsets[i]:offsets[i + 1]``, in the order
    ``what_if`` lists them for that row (the same changes, entry for entry)."""

    offsets: list[int]  # n + 1
    features: list[int]  # FEATURE_INDEX of each change
    comparisons: list[Comparison]
    current: list[float]
    thresholds: list[float]
    deltas: list[float]
    scores_after: list[float]


@dataclass(frozen=True)
class _Steps:
    """How the margin steps as one what-if feature walks its global bins (``_WhatIfTables.bins``).

    Global bin b of feature j holds ``bins[j][b-1] <= x < bins[j][b]``; a row's global bin fixes
    its bin in every tree, as each tree's thresholds are among these. The candidates are each
    threshold t_k (the value crossing it upwards, global bin k + 1) or the largest float32 below
    it (crossing it downwards, global bin k), kept where inside the feature's range (``up_ok``,
    ``down_ok``). The trees that split on the feature each take a few bins ("combos": tree and
    its term of the cell index), entered at the global bins in ``change_at``.
    """

    j: int
    monotone: int  # the feature's direction: +1 higher is better
    splits: np.ndarray  # t_k, float64 of the float32 thresholds, ascending
    down_values: np.ndarray  # the largest float32 below each t_k (float64)
    up_ok: np.ndarray  # bool per k
    down_ok: np.ndarray  # bool per k
    trees: np.ndarray  # (T,) positions in ``TabulatedTreeShap.tables``
    by_bin: np.ndarray  # (T, G + 1) each tree's term of its cell index by global bin
    combo_tree: np.ndarray  # (K,) index into ``trees``
    combo_term: np.ndarray  # (K,) the term
    first: np.ndarray  # (T,) the combo of each tree in global bin 0
    change_new: np.ndarray  # (changes,) combo entered, in global bin order
    change_old: np.ndarray  # (changes,) combo left
    pick: np.ndarray  # (G + 1,) how many changes happened by global bin b


@dataclass(frozen=True)
class _WhatIfTables:
    """What ``what_if_columns`` reads the trees through, built once per model."""

    bins: tuple[np.ndarray, ...]  # per feature: every threshold any tree splits it on (float32)
    # Per tabulated tree: (feature, its term of the cell index by the feature's global bin).
    terms: tuple[tuple[tuple[int, np.ndarray], ...], ...]
    values: np.ndarray  # every tree's value (margin) per cell, flat
    value_offsets: np.ndarray  # where each tree's cells start in ``values``
    offset: float  # the margin's constant part: bias less the trees' expected values
    steps: dict[int, _Steps]  # by what-if feature
    # Per cell of every tree (rows as in ``values``), then again; per what-if feature (columns
    # in ``steps`` order): the most score points moving the feature alone can gain in that tree,
    # for a row that must rise to the threshold (first half), or lose, for one that must fall
    # under it (second half). Summed over a row's cells: a bound on what the feature can do.
    toward: np.ndarray
    # Bound on |the tabulated float64 score - xgboost's float32 one|, in score points.
    tolerance: float


# float32 unit roundoff: each of xgboost's float32 additions of a leaf value to the running margin
# is off by at most this share of the running margin's size.
_F32_ROUNDOFF = 2.0**-24
# Safety factor on that worst-case bound (decisions this close to the threshold are re-checked
# against xgboost itself, so a larger factor costs a few more rows, never a wrong answer).
_TOLERANCE_FACTOR = 4.0

_TABLES: weakref.WeakKeyDictionary[CreditModel, _WhatIfTables] = weakref.WeakKeyDictionary()


def _what_if_tables(model: CreditModel) -> _WhatIfTables:
    tables = _TABLES.get(model)
    if tables is not None:
        return tables
    trees = model.shap.tables
    bins = tuple(np.asarray(model.splits[f], dtype=np.float32) for f in FEATURE_NAMES)

    def term(th: np.ndarray, stride: int, j: int) -> np.ndarray:
        # the tree's bin in global bin b: how many of its thresholds lie at or below bins[j][b-1]
        local = np.searchsorted(th, bins[j], side="right")
        return np.concatenate([[0], local]).astype(np.intp) * stride

    terms = tuple(
        tuple(
            (int(j), term(th, int(stride), int(j)))
            for j, th, stride in zip(t.features, t.thresholds, t.strides, strict=True)
        )
        for t in trees
    )
    cell_values = [t.table.sum(axis=1) + t.expected for t in trees]
    value_offsets = np.cumsum([0] + [len(v) for v in cell_values[:-1]]).astype(np.intp)
    flat = np.concatenate(cell_values) if cell_values else np.zeros(0)
    steps: dict[int, _Steps] = {}
    searched = [spec for spec in FEATURES if not spec.self_written]  # never proposed: not searched
    toward = np.zeros((2 * len(flat), len(searched)))
    for spec in searched:
        j = FEATURE_INDEX[spec.name]
        t32 = bins[j]
        down32 = np.nextafter(t32, np.float32(-np.inf))
        in_tree = [
            (position, by_bin)
            for position, tree_terms in enumerate(terms)
            for f, by_bin in tree_terms
            if f == j
        ]
        by_bin = (
            np.array([b for _, b in in_tree]) if in_tree else np.zeros((0, len(t32) + 1), np.intp)
        )
        combo_tree: list[int] = []
        combo_term: list[int] = []
        first: list[int] = []
        changes: list[tuple[int, int, int]] = []  # (global bin, new combo, old combo)
        for k, (_, row) in enumerate(in_tree):
            distinct, index = np.unique(row, return_inverse=True)
            base = len(combo_tree)
            combo_tree += [k] * len(distinct)
            combo_term += distinct.tolist()
            first.append(base + int(index[0]))
            for b in (np.flatnonzero(np.diff(index)) + 1).tolist():
                changes.append((b, base + int(index[b]), base + int(index[b - 1])))
        changes.sort()
        at = np.array([c[0] for c in changes], dtype=np.intp)
        column = len(steps)
        for position, tree in enumerate(trees):
            where = np.flatnonzero(tree.features == j)
            if len(where):
                gain, loss = _toward(tree, int(where[0]), cell_values[position], model.factor,
                                     spec.monotone > 0)  # fmt: skip
                at_cells = value_offsets[position] + np.arange(len(gain))
                toward[at_cells, column] = gain
                toward[len(flat) + at_cells, column] = loss
        steps[j] = _Steps(
            j=j,
            monotone=spec.monotone,
            splits=t32.astype(np.float64),
            down_values=down32.astype(np.float64),
            up_ok=(t32 >= spec.lo) & (t32 <= spec.hi),
            down_ok=(down32 >= spec.lo) & (down32 <= spec.hi),
            trees=np.array([position for position, _ in in_tree], dtype=np.intp),
            by_bin=by_bin,
            combo_tree=np.array(combo_tree, dtype=np.intp),
            combo_term=np.array(combo_term, dtype=np.intp),
            first=np.array(first, dtype=np.intp),
            change_new=np.array([c[1] for c in changes], dtype=np.intp),
            change_old=np.array([c[2] for c in changes], dtype=np.intp),
            pick=np.searchsorted(at, np.arange(len(t32) + 1), side="right"),
        )
    # Every partial sum of xgboost's float32 margin is at most the base margin plus the largest
    # leaf of each tree in size; each addition rounds by at most that times the roundoff.
    size = abs(model.shap.bias) + sum(float(np.abs(v).max()) for v in cell_values)
    size += sum(abs(t.expected) for t in trees)
    bound = (len(model.booster.get_dump()) + 2) * _F32_ROUNDOFF * size
    tables = _WhatIfTables(
        bins=bins,
        terms=terms,
        values=flat,
        value_offsets=value_offsets,
        offset=model.shap.bias - math.fsum(t.expected for t in trees),
        steps=steps,
        toward=toward,
        tolerance=_TOLERANCE_FACTOR * abs(model.factor) * bound,
    )
    _TABLES[model] = tables
    return tables


def _toward(
    tree: TreeTable, k: int, values: np.ndarray, factor: float, higher_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of ``tree``: the most score points its value can gain when its k-th feature
    moves the way that raises the score, and the most it can lose moving the other way (each
    >= 0: not moving at all is among the moves)."""
    stride, size = int(tree.strides[k]), len(tree.thresholds[k]) + 1
    cell = np.arange(len(values))
    own = (cell // stride) % size
    bins = np.arange(size)
    change = factor * (values[(cell - own * stride)[:, None] + bins[None, :] * stride]
                       - values[:, None])  # fmt: skip
    higher = bins[None, :] >= own[:, None]  # the bins the feature reaches going up
    lower = bins[None, :] <= own[:, None]
    rise, fall = (higher, lower) if higher_is_better else (lower, higher)
    gain = np.where(rise, change, 0.0).max(axis=1)
    loss = np.where(fall, -change, 0.0).max(axis=1)
    return gain, loss


# One request to xgboost: rows, feature, candidate values, their splits, up, group (-1: decided
# by the tables, the nearest crossing only; else every candidate of one unsure row and feature).
_Ask = tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def what_if_columns(
    model: CreditModel, x: np.ndarray, scores: np.ndarray, threshold: float
) -> WhatIfColumns:
    """``what_if(model, x[i], scores[i], threshold)`` for every row, flat (``WhatIfColumns``).

    For each feature, the score of every row with the feature moved to each of its global bins
    is read off the tabulated trees (only the trees that split on the feature change; their
    steps are summed along the bins). That decides which candidates cross, except within
    ``tolerance`` of the threshold (float32 rounding): such rows and features are decided by
    xgboost on every candidate. The score after each proposed change is xgboost's own (one
    batched model call), so every number is the one ``what_if`` gives.
    """
    x = np.asarray(x, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(x) == 1:  # one row: the one-row search costs less than the batch's set-up
        changes = what_if(model, x[0], float(scores[0]), threshold)
        return WhatIfColumns(
            offsets=[0, len(changes)],
            features=[FEATURE_INDEX[c.feature] for c in changes],
            comparisons=[c.comparison for c in changes],
            current=[c.current for c in changes],
            thresholds=[c.threshold for c in changes],
            deltas=[c.delta for c in changes],
            scores_after=[c.score_after for c in changes],
        )
    improve = scores < threshold
    asks: list[_Ask] = []
    tables = _what_if_tables(model)
    n = len(x)
    x32 = x.astype(np.float32)
    global_bins = [
        np.searchsorted(th, np.ascontiguousarray(x32[:, j]), side="right")
        for j, th in enumerate(tables.bins)
    ]
    # Each row's cell in each tree (offset into the flat cell values).
    cells = np.repeat(tables.value_offsets[:, None], n, axis=1)
    for cell, tree_terms in zip(cells, tables.terms, strict=True):
        for j, by_bin in tree_terms:
            cell += by_bin[global_bins[j]]
    held = tables.values[cells]  # each tree's value in each row now
    margins = tables.offset + held.sum(axis=0)
    tol = tables.tolerance
    # How far each row's score is from the threshold, and where its bound is read.
    need = np.abs(scores - threshold) - 2 * tol
    # Only rows whose score a feature alone could move past the threshold (the sum over the trees
    # of each one's most in that direction) are searched for it: ~14% of (row, feature) pairs of
    # the simulated population.
    bound = np.zeros((n, len(tables.steps)))
    sided = cells + np.where(improve, 0, len(tables.values))
    for cell in sided:
        bound += tables.toward[cell]
    for column, (j, st) in enumerate(tables.steps.items()):
        if not len(st.splits):
            continue
        keep = np.flatnonzero(bound[:, column] >= need)
        if len(keep):
            at = (st.trees[:, None], keep[None, :])
            rest = margins[keep] - held[at].sum(axis=0)  # the trees that do not split on j
            _search(model, tables, st, x[keep], x32[keep], improve[keep], threshold, cells[at],
                    global_bins[j][keep], rest, keep, asks)  # fmt: skip
    return _decide(model, x, improve, threshold, asks)


def _search(
    model: CreditModel,
    tables: _WhatIfTables,
    st: _Steps,
    x: np.ndarray,
    x32: np.ndarray,
    improve: np.ndarray,
    threshold: float,
    cells: np.ndarray,
    global_bin: np.ndarray,
    rest: np.ndarray,
    rows: np.ndarray,
    asks: list[_Ask],
) -> None:
    """Feature ``st.j`` of the batch's ``rows`` (``x``, their trees' ``cells`` and global bin of
    the feature, the margin of the trees that do not split on it): append what to ask xgboost."""
    j, tol = st.j, tables.tolerance
    # the trees' cells with the feature's term taken out, then each tree's value in each of its
    # bins (combos x rows), summed along the bins as steps
    base = cells - np.take(st.by_bin, global_bin, axis=1)
    leaf = tables.values[base[st.combo_tree] + st.combo_term[:, None]]
    start = rest + leaf[st.first].sum(axis=0)
    stepped = np.zeros((len(st.change_new) + 1, len(x)))
    np.cumsum(leaf[st.change_new] - leaf[st.change_old], axis=0, out=stepped[1:])
    by_bin = model.factor * (start - model.margin_worst + stepped[st.pick])  # scores
    up = improve if st.monotone > 0 else ~improve  # must the value go up to cross?
    after = np.where(up, by_bin[1:], by_bin[:-1])  # candidates x rows
    cur32 = x32[:, j].astype(np.float64)
    eligible = np.where(
        up,
        (st.splits[:, None] > cur32) & st.up_ok[:, None],
        (st.splits[:, None] <= cur32) & st.down_ok[:, None],
    )
    crossing = eligible & np.where(improve, after >= threshold, after < threshold)
    unsure = (eligible & (np.abs(after - threshold) <= tol)).any(axis=0)
    distance = np.where(crossing, np.abs(st.splits[:, None] - x[:, j]), np.inf)
    nearest = np.argmin(distance, axis=0)
    sure = np.flatnonzero(crossing.any(axis=0) & ~unsure)
    k = nearest[sure]
    values = np.where(up[sure], st.splits[k], st.down_values[k])
    asks.append((rows[sure], j, values, st.splits[k], up[sure], np.full(len(sure), -1)))
    for r in np.flatnonzero(unsure).tolist():
        ks = np.flatnonzero(eligible[:, r])
        values = st.splits[ks] if up[r] else st.down_values[ks]
        asks.append((np.full(len(ks), rows[r]), j, values, st.splits[ks], np.full(len(ks), up[r]),
                     np.full(len(ks), len(asks))))  # fmt: skip


def _decide(
    model: CreditModel, x: np.ndarray, improve: np.ndarray, threshold: float, asks: list[_Ask]
) -> WhatIfColumns:
    """Ask xgboost the scores of the candidates ``what_if_columns`` chose (one batched call),
    decide the unsure ones on them, and lay the changes out per row."""
    n = len(x)
    rows = np.concatenate([a[0] for a in asks] or [np.zeros(0, dtype=np.intp)]).astype(np.intp)
    feats = np.concatenate([np.full(len(a[0]), a[1]) for a in asks] or [rows]).astype(np.intp)
    values = np.concatenate([a[2] for a in asks] or [np.zeros(0)])
    splits = np.concatenate([a[3] for a in asks] or [np.zeros(0)])
    ups = np.concatenate([a[4] for a in asks] or [np.zeros(0, dtype=bool)]).astype(bool)
    groups = np.concatenate([a[5] for a in asks] or [rows])
    grid = x[rows]
    grid[np.arange(len(rows)), feats] = values
    after = np.asarray(model.scores(grid)) if len(rows) else np.zeros(0)
    crosses = np.where(improve[rows], after >= threshold, after < threshold)
    sure = groups == -1
    picked = [np.flatnonzero(sure & crosses)]
    unsure = np.flatnonzero(~sure)
    if len(unsure):
        for members in np.split(unsure, np.flatnonzero(np.diff(groups[unsure])) + 1):
            crossing = members[crosses[members]]
            if len(crossing):
                # the nearest crossing; the first of equals (candidates are in split order)
                d = np.abs(splits[crossing] - x[rows[crossing], feats[crossing]])
                picked.append(crossing[[int(np.argmin(d))]])
    chosen = np.concatenate(picked)
    r, j = rows[chosen], feats[chosen]
    up, split, score_after = ups[chosen], splits[chosen], after[chosen]
    # A sure crossing xgboost does not confirm: the tabulated score was further off than its
    # bound. Never seen; should it happen, that feature of that row is searched on xgboost alone.
    wrong = np.flatnonzero(sure & ~crosses)
    if len(wrong):
        asked = zip(rows[wrong].tolist(), feats[wrong].tolist(), ups[wrong].tolist(), strict=True)
        found = [
            (a, b, c)
            for a, b, u in asked
            if (c := _nearest_crossing(model, x[a], b, u, bool(improve[a]), threshold))
        ]
        r = np.concatenate([r, [a for a, _, _ in found]]).astype(np.intp)
        j = np.concatenate([j, [b for _, b, _ in found]]).astype(np.intp)
        up = np.concatenate([up, [c[0] for _, _, c in found]]).astype(bool)
        split = np.concatenate([split, [c[2] for _, _, c in found]])
        score_after = np.concatenate([score_after, [c[3] for _, _, c in found]])
    current = x[r, j]
    delta = split - current
    # Per row, by the size of the change relative to the feature's range; ties in feature order
    # (``_what_if``'s stable sort of changes found in feature order).
    ranked = np.lexsort((j, np.abs(delta) / _SPAN[j], r))
    return WhatIfColumns(
        offsets=[0, *np.cumsum(np.bincount(r, minlength=n)).tolist()],
        features=j[ranked].tolist(),
        comparisons=np.where(up[ranked], ">=", "<").tolist(),
        current=current[ranked].tolist(),
        thresholds=split[ranked].tolist(),
        deltas=delta[ranked].tolist(),
        scores_after=score_after[ranked].tolist(),
    )


# Each feature's what-if range (hi - lo), the unit a change's size is ranked in.
_SPAN = np.array([SPECS[name].hi - SPECS[name].lo for name in FEATURE_NAMES])


def _nearest_crossing(
    model: CreditModel, row: np.ndarray, j: int, up: bool, improve: bool, threshold: float
) -> tuple[bool, float, float, float] | None:
    """``_what_if``'s change of one feature of one row, every candidate asked of xgboost:
    (up, current value, split, score after), or None when none crosses."""
    st = _what_if_tables(model).steps[j]
    cur = float(np.float32(row[j]))
    eligible = (st.splits > cur) & st.up_ok if up else (st.splits <= cur) & st.down_ok
    if not eligible.any():
        return None
    grid = np.repeat(row[None, :], int(eligible.sum()), axis=0)
    grid[:, j] = (st.splits if up else st.down_values)[eligible]
    after = np.asarray(model.scores(grid))
    crossing = after >= threshold if improve else after < threshold
    if not crossing.any():
        return None
    splits = st.splits[eligible][crossing]
    k = int(np.argmin(np.abs(splits - row[j])))
    return up, float(row[j]), float(splits[k]), float(after[crossing][k])
