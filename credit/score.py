"""Credit responses: score, band, exact explanation, gate, what-if, and the hash to anchor.

``score_supplier`` is what the service calls per request; ``score_vectors`` scores many feature
vectors in one model call (ranking, benchmarks). Every response is checked for additivity when it
is built (a pydantic validator), so no code path can publish a score whose explanation does not add
up. ``response_hash`` is keccak256 of the response's RFC 8785 canonical JSON: the value committed
on chain so a purchasing decision can be checked later against what was shown.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal

import numpy as np
from eth_hash.auto import keccak
from pydantic import BaseModel, model_validator

from credit.evidence import EvidenceItem
from credit.explain import ReasonRow, reason_codes, reason_rows, what_if
from credit.features import (
    FEATURE_NAMES,
    FEATURES,
    FeatureVector,
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


# Per feature, what every contribution repeats: (feature, unit, direction).
_CONTRIBUTION_STATIC: Final = tuple((f.name, f.unit, f.direction) for f in FEATURES)


def response_dicts(
    vectors: Sequence[FeatureVector],
    *,
    model: CreditModel | None = None,
    policy: GatePolicy | None = None,
    with_what_if: bool = False,
    with_evidence_ids: bool = True,
) -> list[dict[str, Any]]:
    """``[r.model_dump(mode="json") for r in score_vectors(...)]``, built without a model object
    per response: the JSON the service serves and hashes, at the speed of the scores.

    The numbers come out of the batch's arrays in one conversion each (``tolist``), additivity is
    checked for the whole batch at once (the same tolerance as ``CreditResponse``'s validator),
    and the gate is ``GatePolicy.evaluate_json``. The schema is not validated here: tests check
    that these dicts equal the validated responses' dumps, for many suppliers, and that
    ``CreditResponse.model_validate`` accepts each.
    """
    model = model or default_model()
    policy = policy or default_policy()
    explained = model.explain(feature_matrix(vectors))
    base = explained.base_points
    if len(vectors):
        totals = base + explained.points.sum(axis=1)
        off = np.abs(totals - explained.scores) > ADDITIVITY_TOL
        if off.any():
            k = int(np.argmax(off))
            raise AdditivityError(
                f"additivity violated for {vectors[k].supplier_id}: base {base} + contributions "
                f"= {float(totals[k])} != score {float(explained.scores[k])}"
            )
    scores = explained.scores.tolist()
    probabilities = explained.probability.tolist()
    all_points = explained.points.tolist()
    schema = model.meta["schema_version"]
    out: list[dict[str, Any]] = []
    with _gc_paused():
        reasons = reason_rows(
            explained.points, [v.observed for v in vectors], [v.details for v in vectors]
        )
        for k, vec in enumerate(vectors):
            if vec.schema_version != schema:
                raise ValueError(f"features {vec.schema_version} != model {schema}")
            if policy.thin_file(vec.facts):
                out.append(_insufficient(vec, explained, model, policy).model_dump(mode="json"))
                continue
            out.append(
                _response_dict(
                    vec, scores[k], probabilities[k], all_points[k], reasons[k], base, model,
                    policy, with_what_if, with_evidence_ids,
                )
            )  # fmt: skip
    return out


def _response_dict(
    vec: FeatureVector,
    score: float,
    probability: float,
    pts: list[float],
    reasons: list[ReasonRow],
    base: float,
    model: CreditModel,
    policy: GatePolicy,
    with_what_if: bool,
    with_evidence_ids: bool,
) -> dict[str, Any]:
    """One response's JSON: the same fields, in the same order, as ``_response`` dumps."""
    observed = vec.observed
    values = vec.values
    gate = policy.evaluate_json(score, vec.facts, observed)
    target = _reason_target_json(score, policy)
    changes = what_if(model, vec.as_array(), score, policy.min_score) if with_what_if else []
    return {
        "response_version": RESPONSE_VERSION,
        "supplier_id": vec.supplier_id,
        "as_of": vec.as_of,
        "window_days": vec.window_days,
        "status": "scored",
        "reading": _reading(vec, policy),
        "score": score,
        "band": band_of(score),
        "incident_probability": probability,
        "base_value": base,
        "contributions": [
            {
                "feature": name,
                "unit": unit,
                "direction": direction,
                "value": value,
                "observed": observed.get(name) is not None,
                "points": p,
            }
            for (name, unit, direction), value, p in zip(
                _CONTRIBUTION_STATIC, values, pts, strict=True
            )
        ],
        "reason_codes": [
            {"code": code, "text": text, "features": list(features), "points": p}
            for code, text, features, p in reasons
        ],
        "reasons_for": target,
        "stand_ins": [
            {"feature": name, "value": value, "points": p, "adds_points": p > 0}
            for (name, _, _), value, p in zip(_CONTRIBUTION_STATIC, values, pts, strict=True)
            if observed.get(name) is None
        ],
        "model_version": model.version,
        "feature_schema_version": vec.schema_version,
        "evidence_root": vec.evidence_root,
        "evidence_count": len(vec.evidence_ids),
        "evidence_ids": list(vec.evidence_ids) if with_evidence_ids else [],
        "missing_evidence": list(vec.missing),
        "repairs_applied": list(vec.repairs),
        "gate": gate,
        "what_if": [
            {
                "feature": c.feature,
                "unit": c.unit,
                "current": c.current,
                "comparison": c.comparison,
                "threshold": c.threshold,
                "delta": c.delta,
                "score_after": c.score_after,
            }
            for c in changes
        ],
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


def _reason_target_json(score: float, policy: GatePolicy) -> dict[str, Any] | None:
    """``_reason_target(...).model_dump(mode="json")`` without the object."""
    if score < policy.min_score:
        return {
            "target": "gate",
            "name": policy.ref,
            "threshold": policy.min_score,
            "short_by": policy.min_score - score,
        }
    higher = [(name, floor) for name, floor in BANDS if floor > score]
    if not higher:
        return None
    name, floor = higher[-1]
    return {"target": "next_band", "name": name, "threshold": floor, "short_by": floor - score}


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
            ReasonCode(code="INSUFFICIENT_OEM_EVIDENCE", text=b.reason, features=[], points=0.0)
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
    return "0x" + keccak(canonical_json(resp.model_dump(mode="json"))).hex()


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
