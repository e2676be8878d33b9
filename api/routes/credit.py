from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from sqlalchemy import select

from api.auth import Principal
from api.credit_service import (
    AsOfOutOfBounds,
    check_as_of,
    default_as_of,
    publish_scores,
    publish_scores_isolated,
    score_json,
    score_responses,
    supplier_ids,
)
from api.deps import Ctx, CurrentUser
from api.errors import ApiError
from api.schemas import History, Ranking, ScoreDocument, documented
from api.store.models import Commitment, Score
from credit.gates import default_policy
from credit.score import CreditResponse
from credit.waterfall import plot_waterfall
from ledger.records import HEX32_PATTERN, ID_MAX_LENGTH, ID_PATTERN, UINT64_MAX, Role

router = APIRouter(prefix="/v1", tags=["credit"])

PURCHASING = (Role.OEM, Role.AUDITOR, Role.ADMIN)

SupplierId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
# Bounded here so no client value overflows a database integer; the service refuses an as-of in
# the future beyond the clock skew (api.credit_service.check_as_of).
AsOf = Annotated[int | None, Query(ge=1, le=UINT64_MAX, description="Unix seconds, not future")]


def _may_see(user: Principal, supplier_id: str) -> None:
    if user.role in PURCHASING:
        return
    if user.role is Role.SUPPLIER and user.org_id == supplier_id:
        return
    raise ApiError(
        403,
        "forbidden_supplier",
        "a supplier sees only its own credit",
        expected=user.org_id,
        got=supplier_id,
    )


def _known(ctx: Ctx, supplier_id: str) -> None:
    with ctx.sessions() as s:
        if supplier_id not in supplier_ids(s):
            raise ApiError(404, "supplier_not_found", "no such supplier", got=supplier_id)


@router.get("/suppliers", responses=documented(Ranking))
def ranking(
    ctx: Ctx,
    user: CurrentUser,
    sort: Literal["score", "-score", "supplier"] = "score",
    window_days: Annotated[int | None, Query(ge=30, le=730)] = None,
) -> dict[str, Any]:
    """Suppliers ranked by their published credit score with band, gate outcome and trend
    (purchasing view). The window is the gate policy's; ``window_days`` other than that is
    refused here (a what-if is a per-supplier reading). Thin files (no number) come last."""
    user.require(*PURCHASING)
    policy_window = default_policy().window_days
    if window_days is not None and window_days != policy_window:
        raise ApiError(
            422,
            "window_fixed_by_policy",
            "the ranking uses the gate policy's window; ask a supplier's credit for a what-if",
            expected=policy_window,
            got=window_days,
        )
    with ctx.sessions() as s:
        ids = supplier_ids(s)
    rows, unavailable = publish_scores_isolated(ctx, ids)
    order = {
        "score": lambda r: (r.score is None, -(r.score or 0.0), r.supplier_id),
        "-score": lambda r: (r.score is None, r.score or 0.0, r.supplier_id),
        "supplier": lambda r: (r.supplier_id,),
    }[sort]
    out = []
    for row in sorted(rows, key=order):
        resp = row.response
        trend = next((c for c in resp["contributions"] if c["feature"] == "cpk_trend"), None)
        gate = resp.get("gate") or {}
        out.append(
            {
                "supplierId": row.supplier_id,
                "score": row.score,
                "status": resp.get("status", "scored"),
                "band": row.band,
                "gate": {
                    "outcome": gate.get("outcome"),
                    "policy": gate.get("policy"),
                    "distance": gate.get("distance"),
                },
                "trend": trend["value"] if trend and trend["observed"] else None,
                "reasonCodes": [r["code"] for r in resp["reason_codes"]],
                "evidenceCount": resp["evidence_count"],
                "asOf": row.as_of,
                "responseHash": row.response_hash,
            }
        )
    # A supplier whose score cannot be computed is listed with the reason, not ranked: it never
    # takes the ranking down for everyone.
    return {
        "suppliers": out,
        "count": len(out),
        "unavailable": [u.to_json() for u in unavailable],
    }


@router.get("/suppliers/{supplier_id}/credit", responses=documented(ScoreDocument))
def credit(
    supplier_id: SupplierId,
    ctx: Ctx,
    user: CurrentUser,
    as_of: AsOf = None,
    window_days: Annotated[int | None, Query(ge=30, le=730)] = None,
) -> dict[str, Any]:
    """Score 0-100 with band, exact SHAP contributions (base + sum == score, asserted), up to
    4 reason codes, the gate outcome with distance, a what-if, and the on-chain commitment.

    Without ``as_of``/``window_days`` this is the published reading (newest anchor, the policy's
    window), stored and committed. Any other instant or window is a what-if: ``reading`` says
    so, it is never stored, never committed and never in history. ``as_of`` may not lie in the
    future nor before the ledger's first record. A thin file answers ``status``
    "insufficient_evidence" with no score."""
    _may_see(user, supplier_id)
    _known(ctx, supplier_id)
    policy_window = default_policy().window_days
    with ctx.sessions() as s:
        newest = default_as_of(s)
        if as_of is not None:
            try:
                check_as_of(s, as_of, int(time.time()), ctx.settings.clock_skew_seconds)
            except AsOfOutOfBounds as exc:
                raise ApiError(422, exc.code, str(exc), expected=exc.expected, got=exc.got) from exc
    if (as_of is None or as_of == newest) and window_days in (None, policy_window):
        row = publish_scores(ctx, [supplier_id], with_what_if=True)[0]
        with ctx.sessions() as s:
            return score_json(s, row)
    body = score_responses(
        ctx, [supplier_id], as_of=as_of, window_days=window_days, with_what_if=True
    )[0]
    body["reading"] = "what_if"  # another instant or window: labelled, never committed
    body["commitment"] = None
    return body


@router.get("/suppliers/{supplier_id}/credit/history", responses=documented(History))
def history(
    supplier_id: SupplierId,
    ctx: Ctx,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """One published score per (policy, UTC day): a later reading of the same day supersedes
    the earlier one, which leaves the history (what-ifs are never in it). Of one state's
    responses (a ranking's and a detail view's) the newest stands for it."""
    _may_see(user, supplier_id)
    with ctx.sessions() as s:
        current = s.scalars(
            select(Score)
            .where(Score.supplier_id == supplier_id, Score.superseded_by.is_(None))
            .order_by(Score.id.desc())
            .limit(limit * 2)
        )
        days: set[tuple[str, int]] = set()
        newest_first = []
        for row in current:
            if (row.policy, row.day) not in days:
                days.add((row.policy, row.day))
                newest_first.append(row)
        newest_first = newest_first[:limit]
        return {
            "supplierId": supplier_id,
            "history": [
                {
                    "score": r.score,
                    "band": r.band,
                    "gate": r.gate_outcome,
                    "asOf": r.as_of,
                    "day": r.day,
                    "policy": r.policy,
                    "trigger": r.trigger,
                    "modelVersion": r.model_version,
                    "responseHash": r.response_hash,
                    "publishedAt": r.created_at.isoformat(),
                    "committed": r.commitment_id is not None and r.proof is not None,
                }
                for r in reversed(newest_first)
            ],
        }


class PngResponse(Response):
    media_type = "image/png"


@router.get(
    "/suppliers/{supplier_id}/credit/waterfall.png",
    response_class=PngResponse,
    responses={
        200: {
            "description": "the SHAP waterfall chart",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def waterfall(supplier_id: SupplierId, ctx: Ctx, user: CurrentUser) -> PngResponse:
    """The SHAP waterfall of the current score as a PNG."""
    _may_see(user, supplier_id)
    _known(ctx, supplier_id)
    row = publish_scores(ctx, [supplier_id])[0]
    if row.score is None:
        raise ApiError(
            409,
            "insufficient_evidence",
            "too little OEM-signed evidence to score: there is no number to explain",
            got=supplier_id,
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_waterfall(
            CreditResponse.model_validate(row.response), Path(tmp) / "waterfall.png"
        )
        return PngResponse(path.read_bytes())


@router.get("/scores/{response_hash}", responses=documented(ScoreDocument))
def published_score(
    response_hash: Annotated[str, PathParam(pattern=HEX32_PATTERN)], ctx: Ctx, user: CurrentUser
) -> dict[str, Any]:
    """A published response by its hash, with its commitment proof and an on-chain check."""
    with ctx.sessions() as s:
        row = s.scalar(select(Score).where(Score.response_hash == response_hash.lower()))
        if row is None:
            raise ApiError(
                404, "score_not_found", "no published score with this hash", got=response_hash
            )
        _may_see(user, row.supplier_id)
        out = score_json(s, row)
        commitment = s.get(Commitment, row.commitment_id) if row.commitment_id else None
    if commitment is not None and commitment.status == "committed" and row.proof:
        out["commitment"]["verifiedOnChain"] = ctx.chain.verify_commitment_on_chain(
            bytes.fromhex(commitment.root[2:]),
            [bytes.fromhex(p[2:]) for p in row.proof],
            bytes.fromhex(row.response_hash[2:]),
        )
    return out
