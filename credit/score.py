"""Credit responses: score, band, exact explanation, gate, what-if, and the hash to anchor.

``score_supplier`` scores one supplier from its evidence; ``score_vectors`` scores many feature
vectors in one model call, as validated ``CreditResponse`` objects. ``response_dicts`` builds the
same responses as their JSON, a whole batch in columns with no object per response: what the
service serves, stores and hashes (tests hold it equal to ``score_vectors``'s dumps). Every
response is checked for additivity when it is built (the pydantic validator; for a batch of
dicts, the same sum and tolerance at once), so no code path can publish a score whose
explanation does not add up. ``response_hash`` is keccak256 of the response's RFC 8785 canonical
JSON: the value committed on chain so a purchasing decision can be checked later against what was
shown.
"""

from __future__ import annotations

import gc
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal

import numpy as np
from eth_hash.auto import keccak
from pydantic import BaseModel, model_validator

from credit.evidence import EvidenceItem
from credit.explain import observations, reason_codes, reason_columns, what_if, what_if_columns
from credit.features import (
    FEATURE_NAMES,
    FEATURES,
    FeatureVector,
    GateFacts,
    compute_features,
    feature_matrix,
)
from credit.gates import GatePolicy, GateResult, default_policy
from credit.model import ADDITIVITY_TOL, BANDS, CreditModel, Explained, band_of, default_model
from ledger.canonical import canonical_json
from ledger.errors import LedgerError
from ledger.merkle import StandardMerkleTree

RESPONSE_VERSION = "credit-response/1"
CREDIT_TOPIC = "credit-score"  # CommitmentLog topic of published credit responses


class AdditivityError(LedgerError):
    """base value + sum of contributions != score: the explanation would be false.

    Not a ValueError or AssertionError on purpose: pydantic turns those, raised in a validator,
    into a ValidationError that reads as bad input. This is the service's own fault (500).
    """

    code = "additivity_violated"
    http_status = 500


class Contribution(BaseModel):
    feature: str
    unit: str
    direction: Literal["higher_is_better", "lower_is_better"]
    value: float  # what the model saw (the missing-value policy's value when not observed)
    observed: bool  # False: evidence missing, ``value`` is the documented stand-in
    points: float  # exact SHAP contribution in score points


class ReasonCode(BaseModel):
    code: str
    text: str
    features: list[str]
    points: float


class StandIn(BaseModel):
    """A feature scored on its documented stand-in value because its evidence was missing."""

    feature: str
    value: float
    points: float
    adds_points: bool  # flagged: a stand-in that raises the score above the base value


class ReasonTarget(BaseModel):
    """What the reason codes explain (adverse-action style): why the score is not past the gate,
    or, past it, not in the next band up."""

    target: Literal["gate", "next_band"]
    name: str  # the gate policy (id@version) or the band
    threshold: float
    short_by: float  # points


class WhatIf(BaseModel):
    feature: str
    unit: str
    current: float
    comparison: Literal["<", ">="]
    threshold: float
    delta: float
    score_after: float


# The status (and band) of a thin file: no number.
INSUFFICIENT: Final = "insufficient_evidence"
INSUFFICIENT_CODE: Final = "INSUFFICIENT_OEM_EVIDENCE"  # the reason code of a thin file


class CreditResponse(BaseModel):
    response_version: str = RESPONSE_VERSION
    supplier_id: str
    as_of: int
    window_days: int
    # "scored", or "insufficient_evidence" for a thin file (score None, no contributions)
    status: Literal["scored", "insufficient_evidence"] = "scored"
    # "published": the policy's window at a bounded as_of, stored and committed; "what_if": any
    # other window or date, labelled, never committed, never in history
    reading: Literal["published", "what_if"] = "published"
    score: float | None
    band: str
    incident_probability: float | None  # predicted probability of a major incident next period
    base_value: float  # SHAP base value in points: the model's expected score
    contributions: list[Contribution]
    reason_codes: list[ReasonCode]
    reasons_for: ReasonTarget | None = None  # None: band A and past the gate
    stand_ins: list[StandIn] = []
    model_version: str
    feature_schema_version: str
    evidence_root: str
    evidence_count: int
    evidence_ids: list[str]
    missing_evidence: list[str]
    repairs_applied: list[str]
    gate: GateResult | None
    what_if: list[WhatIf]

    @model_validator(mode="after")
    def _additive(self) -> CreditResponse:
        assert_additive(self)
        return self


def assert_additive(resp: CreditResponse) -> None:
    if resp.score is None:
        if resp.contributions:
            raise AdditivityError("an unscored (thin-file) response carries no contributions")
        return
    total = resp.base_value + sum(c.points for c in resp.contributions)
    if abs(total - resp.score) > ADDITIVITY_TOL:
        raise AdditivityError(
            f"additivity violated: base {resp.base_value} + contributions = {total} "
            f"!= score {resp.score}"
        )


def score_vectors(
    vectors: Sequence[FeatureVector],
    *,
    model: CreditModel | None = None,
    policy: GatePolicy | None = None,
    with_what_if: bool = False,
    with_evidence_ids: bool = True,
) -> list[CreditResponse]:
    """Score many feature vectors in one batched model call.

    ``policy`` defaults to the trial gate; ``with_what_if`` adds the per-feature crossing search
    (one more batched model call per supplier, so off for rankings).
    """
    model = model or default_model()
    policy = policy or default_policy()
    explained = model.explain(feature_matrix(vectors))
    with _gc_paused():
        return [
            _response(vec, k, explained, model, policy, with_what_if, with_evidence_ids)
            for k, vec in enumerate(vectors)
        ]


def response_dicts(
    vectors: Sequence[FeatureVector],
    *,
    model: CreditModel | None = None,
    policy: GatePolicy | None = None,
    with_what_if: bool = False,
    with_evidence_ids: bool = True,
) -> list[dict[str, Any]]:
    """``[r.model_dump(mode="json") for r in score_vectors(...)]``, built without a model object
    per response: the JSON the service serves and hashes, at the speed of the scores. One
    difference of type, none of JSON: ``evidence_ids`` is the vector's own tuple (a list copy
    per response was most of the collector's work on a batch), which every serialiser writes
    as the same array, so the bytes and the hash are the dump's (tested).

    Everything a response holds is decided for the whole batch at once, in columns: numbers
    leave the batch's arrays in one ``tolist`` per column, additivity is checked for every scored
    row at once (the summation order and tolerance of ``CreditResponse``'s validator), bands,
    reason targets and gates are numpy comparisons (``GatePolicy.evaluate_batch``), reason codes
    ``credit.explain.reason_columns``, what-ifs ``credit.explain.what_if_columns`` (one batched
    model call); only the dicts themselves are built per row. The schema is not validated here:
    tests check that these dicts equal the validated responses' dumps (member order included)
    and that ``CreditResponse.model_validate`` accepts each.
    """
    model = model or default_model()
    policy = policy or default_policy()
    n = len(vectors)
    x = feature_matrix(vectors)
    explained = model.explain(x)
    base = explained.base_points
    facts = list(map(_FACTS, vectors))
    thin = policy.thin_mask(facts)
    scored = np.flatnonzero(~np.array(thin, dtype=bool).reshape(n))
    points = explained.points
    if len(scored):
        # base + sum(c.points for c in contributions), in that order, as the validator adds
        columns = points[scored].T
        totals = np.zeros(len(scored))
        for column in columns:
            totals = totals + column
        totals = base + totals
        off = np.abs(totals - explained.scores[scored]) > ADDITIVITY_TOL
        if off.any():
            k = int(np.argmax(off))
            row = int(scored[k])
            raise AdditivityError(
                f"additivity violated for {vectors[row].supplier_id}: base {base} + contributions "
                f"= {float(totals[k])} != score {float(explained.scores[row])}"
            )
    schema = model.meta["schema_version"]
    for vec in vectors:
        if vec.schema_version != schema:
            raise ValueError(f"features {vec.schema_version} != model {schema}")
    with _gc_paused():
        return _response_columns(
            vectors, x, explained, facts, thin, model, policy, with_what_if, with_evidence_ids
        )


# A batch's columns of vector attributes, read at C speed.
_FACTS: Final = operator.attrgetter("facts")
_OBSERVED: Final = operator.attrgetter("observed")
_DETAILS: Final = operator.attrgetter("details")
# Per feature, what every contribution repeats: (feature, unit, direction).
_CONTRIBUTION_STATIC: Final = tuple((f.name, f.unit, f.direction) for f in FEATURES)
# Band of a score: the first band whose floor it reaches (``band_of``), as arrays.
_BAND_NAMES: Final = tuple(name for name, _ in BANDS)
_BAND_FLOORS: Final = np.array([floor for _, floor in BANDS])


def _response_columns(
    vectors: Sequence[FeatureVector],
    x: np.ndarray,
    explained: Explained,
    facts: list[GateFacts],
    thin: list[bool],
    model: CreditModel,
    policy: GatePolicy,
    with_what_if: bool,
    with_evidence_ids: bool,
) -> list[dict[str, Any]]:
    """The responses of a batch, column by column, then one dict per row."""
    n = len(vectors)
    observed = list(map(_OBSERVED, vectors))
    obs = observations(observed)
    score_arr = explained.scores
    scores = score_arr.tolist()
    # Feature by feature: one column of contribution dicts each, then zipped into rows.
    values_t = x.T.tolist()
    points_t = explained.points.T.tolist()
    observed_t = (~obs.missing).T.tolist()
    per_feature = [
        _contribution_column(name, unit, direction, v, o, p)
        for (name, unit, direction), v, o, p in zip(
            _CONTRIBUTION_STATIC, values_t, observed_t, points_t, strict=True
        )
    ]
    contributions = [*map(list, zip(*per_feature, strict=True))] if n else []
    reasons = reason_columns(explained.points, observed, [v.details for v in vectors], obs=obs)
    reason_dicts = [
        {"code": c, "text": t, "features": list(f), "points": p}
        for c, t, f, p in zip(
            reasons.codes, reasons.texts, reasons.features, reasons.points, strict=True
        )
    ]
    reason_lists = [reason_dicts[a:b] for a, b in itertools.pairwise(reasons.offsets)]
    # The stand-ins, row by row in feature order: one dict per (row, missing feature).
    miss_rows, miss_cols = np.nonzero(obs.missing)
    stand_in_dicts = [
        {"feature": FEATURE_NAMES[j], "value": values_t[j][i], "points": p, "adds_points": p > 0}
        for i, j, p in zip(
            miss_rows.tolist(), miss_cols.tolist(), explained.points[miss_rows, miss_cols].tolist(),
            strict=True,
        )
    ]  # fmt: skip
    stand_in_offsets = [0, *np.cumsum(np.bincount(miss_rows, minlength=n)).tolist()]
    stand_ins = [stand_in_dicts[a:b] for a, b in itertools.pairwise(stand_in_offsets)]
    # Missing feature names by pattern (few patterns, many rows).
    patterns = (obs.missing @ (1 << np.arange(len(FEATURE_NAMES)))).tolist()
    names_of: dict[int, tuple[str, ...]] = {}
    for code in set(patterns):
        names_of[code] = tuple(f for k, f in enumerate(FEATURE_NAMES) if code >> k & 1)
    missing = [list(names_of[c]) for c in patterns]
    bands = _bands(score_arr)
    targets = _reason_targets_json(score_arr, policy)
    gates = policy.evaluate_batch(score_arr, facts, observed)
    if with_what_if:
        changes = what_if_columns(model, x, score_arr, policy.min_score)
        change_dicts = [
            {
                "feature": FEATURE_NAMES[j],
                "unit": _CONTRIBUTION_STATIC[j][1],
                "current": c,
                "comparison": cmp,
                "threshold": t,
                "delta": d,
                "score_after": s,
            }
            for j, c, cmp, t, d, s in zip(
                changes.features, changes.current, changes.comparisons, changes.thresholds,
                changes.deltas, changes.scores_after, strict=True,
            )
        ]  # fmt: skip
        what_ifs = [change_dicts[a:b] for a, b in itertools.pairwise(changes.offsets)]
    else:
        what_ifs = [[] for _ in range(n)]
    # The evidence ids are served as the vector's own tuple, not a list copy: the same JSON array
    # (and hash) to every serialiser, and no 118-reference list per response to create, walk in
    # the collector's pass and free (two thirds of that pass at 10^4 rows, measured).
    evidence = [_immutable_ids(v) for v in vectors] if with_evidence_ids else [()] * n
    window = policy.window_days
    version = model.version
    base = explained.base_points
    out = [
        {
            "response_version": RESPONSE_VERSION,
            "supplier_id": v.supplier_id,
            "as_of": v.as_of,
            "window_days": v.window_days,
            "status": "scored",
            "reading": "published" if v.window_days == window else "what_if",
            "score": s,
            "band": band,
            "incident_probability": prob,
            "base_value": base,
            "contributions": contrib,
            "reason_codes": rc,
            "reasons_for": target,
            "stand_ins": si,
            "model_version": version,
            "feature_schema_version": v.schema_version,
            "evidence_root": v.evidence_root,
            "evidence_count": len(v.evidence_ids),
            "evidence_ids": ids,
            "missing_evidence": miss,
            "repairs_applied": list(v.repairs),
            "gate": gate,
            "what_if": wi,
        }
        for v, s, band, prob, contrib, rc, target, si, ids, miss, gate, wi in zip(
            vectors, scores, bands, explained.probability.tolist(), contributions, reason_lists,
            targets, stand_ins, evidence, missing, gates, what_ifs, strict=True,
        )
    ]  # fmt: skip
    if any(thin):
        for k in np.flatnonzero(thin).tolist():
            out[k] = _insufficient_json(vectors[k], base, model, policy)
    return out


def _immutable_ids(vec: FeatureVector) -> tuple[str, ...]:
    """The vector's evidence ids as a tuple: its own when it is one (``compute_features`` makes
    them so); a copy of anything else, so a response never shares a list its caller may
    change."""
    ids = vec.evidence_ids
    return ids if type(ids) is tuple else tuple(ids)


def _contribution_column(
    name: str,
    unit: str,
    direction: str,
    values: list[float],
    observed: list[bool],
    points: list[float],
) -> list[dict[str, Any]]:
    """One feature's contribution (``Contribution`` as JSON) in every row of a batch.

    Each is a copy of one template with its three numbers set: copying a small dict clones its
    key table, ~40% cheaper than building it from a literal (measured); the members keep the
    template's order, which is ``Contribution``'s."""
    template = {
        "feature": name,
        "unit": unit,
        "direction": direction,
        "value": 0.0,
        "observed": False,
        "points": 0.0,
    }
    out = []
    for v, o, p in zip(values, observed, points, strict=True):
        d = template.copy()
        d["value"] = v
        d["observed"] = o
        d["points"] = p
        out.append(d)
    return out


def _bands(scores: np.ndarray) -> list[str]:
    """``[band_of(s) for s in scores]``: the first band (best first) whose floor is reached."""
    reached = scores[:, None] >= _BAND_FLOORS[None, :]
    first = np.where(reached.any(axis=1), np.argmax(reached, axis=1), len(BANDS) - 1)
    return [_BAND_NAMES[k] for k in first.tolist()]


def _reason_targets_json(scores: np.ndarray, policy: GatePolicy) -> list[dict[str, Any] | None]:
    """``[_reason_target(s, ..., policy).model_dump(mode="json") for s in scores]``: the gate
    when under its minimum, else the lowest band floor above the score, else None."""
    gate = (scores < policy.min_score).tolist()
    to_gate = (policy.min_score - scores).tolist()
    floors = np.array([floor for _, floor in BANDS])
    above = floors[None, :] > scores[:, None]
    # BANDS run best first: the last floor above the score is the next band up.
    last = np.where(above.any(axis=1), len(BANDS) - 1 - np.argmax(above[:, ::-1], axis=1), -1)
    to_band = (floors[np.maximum(last, 0)] - scores).tolist()
    ref, minimum = policy.ref, policy.min_score
    return [
        {"target": "gate", "name": ref, "threshold": minimum, "short_by": g}
        if under
        else None
        if k < 0
        else {"target": "next_band", "name": BANDS[k][0], "threshold": BANDS[k][1], "short_by": b}
        for under, g, k, b in zip(gate, to_gate, last.tolist(), to_band, strict=True)
    ]


def _insufficient_json(
    vec: FeatureVector, base: float, model: CreditModel, policy: GatePolicy
) -> dict[str, Any]:
    """``_insufficient(...).model_dump(mode="json")`` without the objects."""
    gate = policy.insufficient_json(vec.facts)
    return {
        "response_version": RESPONSE_VERSION,
        "supplier_id": vec.supplier_id,
        "as_of": vec.as_of,
        "window_days": vec.window_days,
        "status": INSUFFICIENT,
        "reading": _reading(vec, policy),
        "score": None,
        "band": INSUFFICIENT,
        "incident_probability": None,
        "base_value": base,
        "contributions": [],
        "reason_codes": [
            {"code": INSUFFICIENT_CODE, "text": b["reason"], "features": [], "points": 0.0}
            for b in gate["blocking"]
        ][:4],
        "reasons_for": None,
        "stand_ins": [],
        "model_version": model.version,
        "feature_schema_version": vec.schema_version,
        "evidence_root": vec.evidence_root,
        "evidence_count": len(vec.evidence_ids),
        "evidence_ids": _immutable_ids(vec),
        "missing_evidence": list(vec.missing),
        "repairs_applied": list(vec.repairs),
        "gate": gate,
        "what_if": [],
    }


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while a batch of responses is built.

    Each response allocates ~30 small acyclic objects; with 10^4 of them alive the collector's
    generation scans cost more than building them (2.5 s vs 1.0 s measured for 10^4). Reference
    counting still frees everything; the collector resumes (if it was on) when the batch is done.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _response(
    vec: FeatureVector,
    k: int,
    explained: Explained,
    model: CreditModel,
    policy: GatePolicy,
    with_what_if: bool,
    with_evidence_ids: bool,
) -> CreditResponse:
    """One response: the k-th row of a batch explanation, gate, reasons, what-if."""
    if vec.schema_version != model.meta["schema_version"]:
        raise ValueError(f"features {vec.schema_version} != model {model.meta['schema_version']}")
    thin = policy.thin_file(vec.facts)
    if thin:
        return _insufficient(vec, explained, model, policy)
    score = float(explained.scores[k])
    pts = explained.points[k]
    points = {n: float(p) for n, p in zip(FEATURE_NAMES, pts, strict=True)}
    gate = policy.evaluate(score, vec.facts, vec.observed)
    changes = what_if(model, vec.as_array(), score, policy.min_score) if with_what_if else []
    return CreditResponse(
        supplier_id=vec.supplier_id,
        as_of=vec.as_of,
        window_days=vec.window_days,
        reading=_reading(vec, policy),
        score=score,
        band=band_of(score),
        incident_probability=float(explained.probability[k]),
        base_value=explained.base_points,
        contributions=[
            Contribution(
                feature=f.name,
                unit=f.unit,
                direction=f.direction,
                value=vec.values[i],
                observed=vec.observed.get(f.name) is not None,
                points=points[f.name],
            )
            for i, f in enumerate(FEATURES)
        ],
        reason_codes=[
            ReasonCode(code=r.code, text=r.text, features=list(r.features), points=r.points)
            for r in reason_codes(points, vec.observed, vec.details)
        ],
        reasons_for=_reason_target(score, gate, policy),
        stand_ins=[
            StandIn(
                feature=f.name,
                value=vec.values[i],
                points=points[f.name],
                adds_points=points[f.name] > 0,
            )
            for i, f in enumerate(FEATURES)
            if vec.observed.get(f.name) is None
        ],
        model_version=model.version,
        feature_schema_version=vec.schema_version,
        evidence_root=vec.evidence_root,
        evidence_count=len(vec.evidence_ids),
        evidence_ids=list(vec.evidence_ids) if with_evidence_ids else [],
        missing_evidence=list(vec.missing),
        repairs_applied=list(vec.repairs),
        gate=gate,
        what_if=[
            WhatIf(
                feature=c.feature,
                unit=c.unit,
                current=c.current,
                comparison=c.comparison,
                threshold=c.threshold,
                delta=c.delta,
                score_after=c.score_after,
            )
            for c in changes
        ],
    )


def _reason_target(
    score: float, gate: GateResult | None, policy: GatePolicy
) -> ReasonTarget | None:
    """The bar the reason codes explain the distance to: the gate if it failed on the score,
    else the next band up (None in the top band)."""
    if score < policy.min_score:
        return ReasonTarget(
            target="gate",
            name=policy.ref,
            threshold=policy.min_score,
            short_by=policy.min_score - score,
        )
    higher = [(name, floor) for name, floor in BANDS if floor > score]
    if not higher:
        return None
    name, floor = higher[-1]
    return ReasonTarget(target="next_band", name=name, threshold=floor, short_by=floor - score)


def _reading(vec: FeatureVector, policy: GatePolicy) -> Literal["published", "what_if"]:
    return "published" if vec.window_days == policy.window_days else "what_if"


def _insufficient(
    vec: FeatureVector, explained: Explained, model: CreditModel, policy: GatePolicy
) -> CreditResponse:
    """A thin file's answer: no number, no contributions, the gate failed for that reason."""
    gate = policy.insufficient(vec.facts)
    return CreditResponse(
        supplier_id=vec.supplier_id,
        as_of=vec.as_of,
        window_days=vec.window_days,
        status=INSUFFICIENT,
        reading=_reading(vec, policy),
        score=None,
        band=INSUFFICIENT,
        incident_probability=None,  # not estimated: too little evidence to predict from
        base_value=explained.base_points,
        contributions=[],
        reason_codes=[
            ReasonCode(code=INSUFFICIENT_CODE, text=b.reason, features=[], points=0.0)
            for b in gate.blocking
        ][:4],
        model_version=model.version,
        feature_schema_version=vec.schema_version,
        evidence_root=vec.evidence_root,
        evidence_count=len(vec.evidence_ids),
        evidence_ids=list(vec.evidence_ids),
        missing_evidence=list(vec.missing),
        repairs_applied=list(vec.repairs),
        gate=gate,
        what_if=[],
    )


def score_supplier(
    items: Iterable[EvidenceItem],
    supplier_id: str,
    as_of: int,
    *,
    window_days: int | None = None,
    fl_participation: float | None = None,
    model: CreditModel | None = None,
    policy: GatePolicy | None = None,
    with_what_if: bool = True,
) -> CreditResponse:
    """Score one supplier from its evidence (only anchored, confirmed evidence counts).

    The window is the policy's; a caller-chosen other window gives a reading labelled what-if.
    """
    policy = policy or default_policy()
    window_days = policy.window_days if window_days is None else window_days
    vec = compute_features(
        items, supplier_id, as_of, window_days, fl_participation=fl_participation
    )
    return score_vectors([vec], model=model, policy=policy, with_what_if=with_what_if)[0]


def response_hash(resp: CreditResponse) -> str:
    """keccak256 of the response's canonical JSON (RFC 8785), 0x-hex: the on-chain commitment."""
    return response_dict_hash(resp.model_dump(mode="json"))


def response_dict_hash(body: Mapping[str, Any]) -> str:
    """``response_hash`` of a response given as its JSON (``response_dicts``, a stored one)."""
    return "0x" + keccak(canonical_json(body)).hex()


def commitment_tree(responses: Sequence[CreditResponse]) -> StandardMerkleTree:
    """OpenZeppelin StandardMerkleTree over the responses' hashes, for one CommitmentLog entry.

    The service commits ``tree.root`` under ``CREDIT_TOPIC`` with ``ChainClient.commit`` and keeps
    each response's proof (``tree.proof(bytes.fromhex(hash[2:]))``) so that anyone can later check
    a shown response with ``verifyCommitment`` on chain.
    """
    return StandardMerkleTree.of([bytes.fromhex(response_hash(r)[2:]) for r in responses])


def rank(responses: Iterable[CreditResponse]) -> list[CreditResponse]:
    """Best score first; ties by supplier id so the order is reproducible."""
    # Thin files (no number) come last.
    return sorted(responses, key=lambda r: (r.score is None, -(r.score or 0.0), r.supplier_id))
