"""Exact path-dependent TreeSHAP at table-lookup speed, in float64, for shallow trees.

A tree's SHAP values depend on a row only through which side of each of the tree's splits it
falls. A tree of depth <= 3 has <= 7 splits, so it cuts the feature space into at most 2^7 cells
(the product, over the features it uses, of one more than that feature's number of thresholds)
and its SHAP vector is constant on each cell. We tabulate it once per tree and explain any batch
by locating rows in cells (``searchsorted`` on the float32 thresholds: xgboost sends a row left
iff ``x < threshold`` in float32) and summing table rows.

Each table entry is computed from the model file's exact float32 leaf values and node covers
(``sum_hessian``) in float64 with the path-dependent TreeSHAP definition (Lundberg et al. 2018):
a leaf with value ``v`` reached through the features P contributes the game
``g(S) = v * prod_{j in S} o_j * prod_{j in P \\ S} z_j`` where ``o_j`` = 1 if the row satisfies
every split on j along the path, else 0, and ``z_j`` = the product of the cover fractions of those
splits. Its Shapley value for i in P is
``v * (o_i - z_i) * sum_{S in P \\ i} |S|! (d-|S|-1)! / d! * prod_S o_j * prod_{P \\ S \\ i} z_j``.
Summed over leaves that is exactly what ``xgboost`` ``pred_contribs`` and ``shap.TreeExplainer``
compute (both in float32; tests check agreement to ~1e-6), but in float64, so that the score
built from the contributions is monotone and additive to ~1e-12 points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import xgboost as xgb

MAX_CELLS = 4096  # a tree with more cells than this is not shallow: refuse rather than blow up


@dataclass(frozen=True)
class TreeTable:
    features: np.ndarray  # (m,) feature indices the tree splits on
    thresholds: tuple[np.ndarray, ...]  # per feature, sorted float32 thresholds
    strides: np.ndarray  # (m,) mixed-radix strides of the cell index
    table: np.ndarray  # (cells, m) float64 SHAP values of those features in each cell
    expected: float  # the tree's expected value under its covers (its share of the bias)


@dataclass(frozen=True)
class _Leaf:
    value: float
    path: tuple[tuple[int, float, bool, float], ...]  # (feature, threshold, went_left, fraction)


def _leaves(tree: dict) -> list[_Leaf]:
    left, right = tree["left_children"], tree["right_children"]
    feature, cond, cover = tree["split_indices"], tree["split_conditions"], tree["sum_hessian"]
    out: list[_Leaf] = []
    stack: list[tuple[int, tuple[tuple[int, float, bool, float], ...]]] = [(0, ())]
    while stack:
        node, path = stack.pop()
        if left[node] == -1:
            out.append(_Leaf(float(np.float32(cond[node])), path))
            continue
        threshold = float(np.float32(cond[node]))
        for child, went_left in ((left[node], True), (right[node], False)):
            step = (
                int(feature[node]),
                threshold,
                went_left,
                float(np.float32(cover[child])) / float(np.float32(cover[node])),
            )
            stack.append((child, (*path, step)))
    return out


def _base_margin(model: dict) -> float:
    """The model's base score as a margin (log-odds for binary:logistic)."""
    learner = model["learner"]
    raw = learner["learner_model_param"]["base_score"].strip("[]").split(",")[0]
    base = float(np.float32(raw))
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        return math.log(base / (1.0 - base))
    if objective.startswith("reg:squarederror") or objective == "binary:logitraw":
        return base
    raise ValueError(f"objective {objective} is not supported by TabulatedTreeShap")


def _tabulate(tree: dict, n_features: int) -> TreeTable | None:
    leaves = _leaves(tree)
    splits: dict[int, set[float]] = {}
    for leaf in leaves:
        for j, t, _, _ in leaf.path:
            splits.setdefault(j, set()).add(t)
    expected = math.fsum(leaf.value * math.prod(s[3] for s in leaf.path) for leaf in leaves)
    if not splits:
        return None  # a stump: all its value is bias
    feats = np.array(sorted(splits), dtype=np.intp)
    ths = tuple(np.array(sorted(splits[j]), dtype=np.float32) for j in feats)
    sizes = [len(th) + 1 for th in ths]
    cells = math.prod(sizes)
    if cells > MAX_CELLS:
        raise ValueError(f"a tree has {cells} cells; TabulatedTreeShap needs shallow trees")
    strides = np.cumprod([1, *sizes[:-1]]).astype(np.intp)
    # One representative row per cell: bin b of a feature holds th[b-1] <= x < th[b].
    rep = np.zeros((cells, n_features), dtype=np.float32)
    index = np.arange(cells)
    for k, (j, th) in enumerate(zip(feats, ths, strict=True)):
        b = (index // strides[k]) % sizes[k]
        below = np.nextafter(th[0], np.float32(-np.inf))
        rep[:, j] = np.where(b == 0, below, th[np.maximum(b - 1, 0)])
    column = {int(j): k for k, j in enumerate(feats)}
    table = np.zeros((cells, len(feats)))
    for leaf in leaves:
        ones: dict[int, np.ndarray] = {}
        zeros: dict[int, float] = {}
        for j, t, went_left, fraction in leaf.path:
            follows = (rep[:, j] < np.float32(t)) == went_left
            ones[j] = ones[j] & follows if j in ones else follows
            zeros[j] = zeros.get(j, 1.0) * fraction
        players = sorted(ones)
        d = len(players)
        o = {j: ones[j].astype(np.float64) for j in players}
        for i in players:
            others = [j for j in players if j != i]
            acc = np.zeros(cells)
            for size in range(d):
                weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                for chosen in combinations(others, size):
                    term = np.full(
                        cells, weight * math.prod(zeros[j] for j in others if j not in chosen)
                    )
                    for j in chosen:
                        term *= o[j]
                    acc += term
            table[:, column[i]] += leaf.value * (o[i] - zeros[i]) * acc
    return TreeTable(feats, ths, strides, table, expected)


class TabulatedTreeShap:
    """Exact SHAP contributions of an xgboost booster's margin, by table lookup."""

    def __init__(self, booster: xgb.Booster) -> None:
        model = json.loads(bytes(booster.save_raw("json")))
        self.n_features = int(model["learner"]["learner_model_param"]["num_feature"])
        trees = model["learner"]["gradient_booster"]["model"]["trees"]
        tabulated = [_tabulate(tree, self.n_features) for tree in trees]
        self.tables: list[TreeTable] = [t for t in tabulated if t is not None]
        stumps = [tree for tree, t in zip(trees, tabulated, strict=True) if t is None]
        self.bias = _base_margin(model) + math.fsum(
            [t.expected for t in self.tables]
            + [float(np.float32(tree["split_conditions"][0])) for tree in stumps]
        )
        # Global bins: per feature, every threshold any tree splits it on. A row's global bin
        # (one ``searchsorted`` per feature) fixes its bin in every tree, so each tree's cell is
        # a sum of small lookups (``terms``) instead of one ``searchsorted`` per tree and feature.
        found: list[set[float]] = [set() for _ in range(self.n_features)]
        for t in self.tables:
            for j, th in zip(t.features, t.thresholds, strict=True):
                found[int(j)].update(th.tolist())
        self.bins: tuple[np.ndarray, ...] = tuple(
            np.array(sorted(f), dtype=np.float32) for f in found
        )
        self.terms: tuple[tuple[tuple[int, np.ndarray], ...], ...] = tuple(
            tuple(
                (int(j), self._term(th, int(stride), int(j)))
                for j, th, stride in zip(t.features, t.thresholds, t.strides, strict=True)
            )
            for t in self.tables
        )
        # Each tree's table by column (feature), contiguous: one 1-D gather per (tree, feature).
        self._columns = tuple(
            tuple(np.ascontiguousarray(t.table[:, k]) for k in range(len(t.features)))
            for t in self.tables
        )

    def _term(self, th: np.ndarray, stride: int, j: int) -> np.ndarray:
        """A tree's term of the cell index by the feature's global bin: the tree's own bin there
        is how many of its thresholds lie at or below the global bin's lower edge (global bin 0:
        below every threshold; the last: at or above all, and NaN, which sorts last)."""
        local = np.searchsorted(th, self.bins[j], side="right")
        return np.concatenate([[0], local]).astype(np.intp) * stride

    def global_bins(self, x32: np.ndarray) -> list[np.ndarray]:
        """Each row's global bin of each feature: ``bins[j][b-1] <= x < bins[j][b]``."""
        return [
            np.searchsorted(th, np.ascontiguousarray(x32[:, j]), side="right")
            for j, th in enumerate(self.bins)
        ]

    def contributions(self, x32: np.ndarray) -> np.ndarray:
        """(n, n_features) float64 SHAP values of the margin for float32 rows ``x32``.

        Each tree's cell is where ``searchsorted`` on its own thresholds puts the row (tests
        hold it bit for bit to ``contributions_by_search``); each feature's value is summed over
        the trees in tree order from 0.0, so the floats are the same additions in the same
        order as adding each tree's table row to the whole vector."""
        n = len(x32)
        bins = self.global_bins(x32)
        phi_t = np.zeros((self.n_features, n))
        for terms, columns in zip(self.terms, self._columns, strict=True):
            (j0, first), *rest = terms
            cell = first[bins[j0]]
            for j, term in rest:
                cell += term[bins[j]]
            for (j, _), column in zip(terms, columns, strict=True):
                phi_t[j] += column[cell]
        # C order: callers sum along rows, and numpy's summation order depends on the layout.
        return np.ascontiguousarray(phi_t.T)

    def contributions_by_search(self, x32: np.ndarray) -> np.ndarray:
        """``contributions`` as first written: one ``searchsorted`` per tree and feature (the
        reference the faster lookup is tested against)."""
        phi = np.zeros((len(x32), self.n_features))
        columns = [np.ascontiguousarray(x32[:, j]) for j in range(self.n_features)]
        for tree in self.tables:
            cell = np.zeros(len(x32), dtype=np.intp)
            for j, th, stride in zip(tree.features, tree.thresholds, tree.strides, strict=True):
                cell += np.searchsorted(th, columns[j], side="right") * stride
            phi[:, tree.features] += tree.table[cell]
        return phi
