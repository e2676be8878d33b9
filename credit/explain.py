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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from credit.features import FEATURE_INDEX, FEATURE_NAMES, FEATURES, SPECS

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


def _costs_points(feature: str) -> Callable[[Observed, Mapping[str, str]], str]:
    text = f"{feature.replace('_', ' ')} holds the score down"
    return lambda o, d: text


def _missing(name: str) -> Callable[[Observed], bool]:
    return _Condition(name, "missing")


REASON_TABLE: tuple[ReasonRule, ...] = (
    ReasonRule(
        "PPM_MISSING",
        ("defect_ppm",),
        _missing("defect_ppm"),
        lambda o, d: "No OEM incoming inspection of a received lot in the window (stand-in used)",
    ),
    ReasonRule(
        "PPM_POOR_LINE",
        ("defect_ppm",),
        _above("defect_ppm", PPM_POOR_LINE),
        lambda o, d: f"Defect rate {o['defect_ppm']:.0f} PPM, above the 800 PPM of a poor line",
    ),
    ReasonRule(
        "PPM_OVER_LIMIT",
        ("defect_ppm",),
        _above("defect_ppm", PPM_OEM_LIMIT),
        lambda o, d: f"Defect rate {o['defect_ppm']:.0f} PPM, above the 300 PPM OEM limit",
    ),
    ReasonRule(
        "CPK_MISSING",
        ("cpk_min", "cpk_trend"),
        _missing("cpk_min"),
        lambda o, d: "No estimable capability of the OEM's key characteristics (stand-in used)",
    ),
    ReasonRule(
        "CPK_BELOW_133",
        ("cpk_min",),
        _below("cpk_min", CPK_ONGOING),
        lambda o, d: (
            f"Cpk {o['cpk_min']:.2f} of key characteristic "
            f"{d.get('cpk_min', '')} below 1.33".replace("  ", " ")
        ),
    ),
    ReasonRule(
        "CPK_BELOW_167",
        ("cpk_min",),
        _below("cpk_min", CPK_NEW_PART),
        lambda o, d: (
            f"Cpk {o['cpk_min']:.2f} of key characteristic "
            f"{d.get('cpk_min', '')} below 1.67 required for new parts".replace("  ", " ")
        ),
    ),
    ReasonRule(
        "CPK_DECLINING",
        ("cpk_trend",),
        _below("cpk_trend", 0.0),
        lambda o, d: (
            f"Process capability declining (Cpk {o['cpk_trend']:+.2f} in the "
            "last third of the window)"
        ),
    ),
    ReasonRule(
        "OTD_MISSING",
        ("on_time_delivery",),
        _missing("on_time_delivery"),
        lambda o, d: "No OEM goods receipt in the window (stand-in used)",
    ),
    ReasonRule(
        "OTD_LOW",
        ("on_time_delivery",),
        _below("on_time_delivery", OTD_TARGET),
        lambda o, d: f"On-time delivery {o['on_time_delivery']:.0%}, below 95%",
    ),
    ReasonRule(
        "COMPLAINTS",
        ("complaints_per_month",),
        _above("complaints_per_month", 0.0),
        lambda o, d: f"{o['complaints_per_month']:.1f} OEM complaints per month",
    ),
    ReasonRule(
        "RESPONSE_MISSING",
        ("complaint_response_hours",),
        _missing("complaint_response_hours"),
        lambda o, d: "No complaint due an answer in the window (24 h stand-in used)",
    ),
    ReasonRule(
        "RESPONSE_OVER_48H",
        ("complaint_response_hours",),
        _above("complaint_response_hours", RESPONSE_DUE_H),
        lambda o, d: (
            f"Complaint response slower than 48 hours (mean {o['complaint_response_hours']:.0f} h)"
        ),
    ),
    ReasonRule(
        "RESPONSE_OVER_24H",
        ("complaint_response_hours",),
        _above("complaint_response_hours", RESPONSE_FAST_H),
        lambda o, d: (
            f"Complaint response slower than 24 hours (mean {o['complaint_response_hours']:.0f} h)"
        ),
    ),
    ReasonRule(
        "EIGHT_D_MISSING",
        ("eight_d_closure_days",),
        _missing("eight_d_closure_days"),
        lambda o, d: "No 8D due closure in the window (11.7-day stand-in used)",
    ),
    ReasonRule(
        "EIGHT_D_OVER_30D",
        ("eight_d_closure_days",),
        _above("eight_d_closure_days", CLOSURE_DUE_D),
        lambda o, d: f"8D closure slower than 30 days (mean {o['eight_d_closure_days']:.0f} days)",
    ),
    ReasonRule(
        "EIGHT_D_OVER_AVERAGE",
        ("eight_d_closure_days",),
        _above("eight_d_closure_days", CLOSURE_AVERAGE_D),
        lambda o, d: (
            "8D closure slower than the 11.7-day industry average (mean "
            f"{o['eight_d_closure_days']:.0f} days)"
        ),
    ),
    ReasonRule(
        "AUDIT_MISSING",
        ("audit_major_nc", "audit_minor_nc"),
        _missing("audit_major_nc"),
        lambda o, d: "No third-party audit in the last 12 months",
    ),
    ReasonRule(
        "AUDIT_MAJOR_NC",
        ("audit_major_nc",),
        _above("audit_major_nc", 0.0),
        lambda o, d: f"{o['audit_major_nc']:.0f} open major nonconformities from the last audit",
    ),
    ReasonRule(
        "AUDIT_MINOR_NC",
        ("audit_minor_nc",),
        _above("audit_minor_nc", 0.0),
        lambda o, d: f"{o['audit_minor_nc']:.0f} open minor nonconformities from the last audit",
    ),
    ReasonRule(
        "EVIDENCE_INCOMPLETE",
        ("evidence_completeness",),
        _below("evidence_completeness", 1.0),
        lambda o, d: (
            f"Outgoing inspection for only {o['evidence_completeness']:.0%} of the lots the OEM "
            "received"
        ),
    ),
    ReasonRule(
        "FL_MISSING",
        ("fl_participation",),
        _missing("fl_participation"),
        lambda o, d: "No federated-learning round recorded in the window (stand-in 0 used)",
    ),
    ReasonRule(
        "FL_NOT_PARTICIPATING",
        ("fl_participation",),
        _Condition("fl_participation", "falsy"),
        lambda o, d: "Not taking part in federated defect-model training",
    ),
    ReasonRule(
        "FL_PARTIAL",
        ("fl_participation",),
        _below("fl_participation", 1.0),
        lambda o, d: f"Took part in {o['fl_participation']:.0%} of federated rounds",
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
    condition and the features it may claim decided for the whole batch at once (numpy); only
    the rules that fire are visited per supplier (their text and points). ``points`` is rows x
    features in ``FEATURE_NAMES`` order."""
    return [[Reason(*r) for r in row] for row in reason_rows(points, observed, details, limit)]


ReasonRow = tuple[str, str, tuple[str, ...], float]  # code, text, features, points
# Below this many rows the rules are walked per supplier (``reason_codes``).
SMALL_BATCH = 16


def reason_rows(
    points: np.ndarray,
    observed: Sequence[Observed],
    details: Sequence[Mapping[str, str]],
    limit: int = MAX_REASONS,
) -> list[list[ReasonRow]]:
    """``reason_codes_batch`` as plain tuples (what the JSON response path needs)."""
    n = len(observed)
    if n < SMALL_BATCH:  # the per-rule array work costs more than it saves on a few rows
        rows_small = points.tolist()
        return [
            [
                (r.code, r.text, r.features, r.points)
                for r in reason_codes(
                    dict(zip(FEATURE_NAMES, rows_small[i], strict=True)),
                    observed[i],
                    details[i],
                    limit,
                )
            ]
            for i in range(n)
        ]
    seen = [[o.get(f) for f in FEATURE_NAMES] for o in observed]
    # None (not observed) becomes NaN in the matrix.
    values = np.array(seen, dtype=np.float64).reshape(n, len(FEATURE_NAMES))
    # An observation that is itself NaN would read as "missing" there: such rows take the
    # one-supplier path, which tells None from NaN.
    nans = np.isnan(values).sum(axis=1).tolist()
    odd = {i for i in range(n) if nans[i] != seen[i].count(None)}
    losing = points < 0
    claimed = np.zeros_like(losing)
    fired: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(n)]
    for k, rule in enumerate(_RULES):
        idx = _RULE_INDEX[k]
        free = losing[:, idx] & ~claimed[:, idx]
        hit = free.any(axis=1) & _mask(rule, values)
        rows_hit = np.flatnonzero(hit).tolist()
        if not rows_hit:
            continue
        if len(idx) == 1:
            claimed[rows_hit, idx[0]] = True
            for i in rows_hit:
                fired[i].append((k, idx))
            continue
        claimed[:, idx] |= free & hit[:, None]
        for i, flags in zip(rows_hit, free[rows_hit].tolist(), strict=True):
            fired[i].append((k, tuple(j for j, ok in zip(idx, flags, strict=True) if ok)))
    rows = points.tolist()
    out: list[list[ReasonRow]] = []
    for i in range(n):
        if i in odd:
            one = reason_codes(dict(zip(FEATURE_NAMES, rows[i], strict=True)), observed[i],
                               details[i], limit)  # fmt: skip
            out.append([(r.code, r.text, r.features, r.points) for r in one])
            continue
        row, seen_i, details_i = rows[i], observed[i], details[i] or {}
        reasons = [
            (
                _RULES[k].code,
                _RULES[k].text(seen_i, details_i),
                tuple([FEATURE_NAMES[j] for j in feats]),
                float(sum(row[j] for j in feats)),
            )
            for k, feats in fired[i]
        ]
        reasons.sort(key=_points_of)
        out.append(reasons[:limit])
    return out


def _points_of(reason: ReasonRow) -> float:
    return reason[3]


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
