from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from sqlalchemy import select

from api.auth import Principal
from api.credit_service import (
    publish_scores,
    publish_scores_isolated,
    score_json,
    supplier_ids,
)
from api.deps import Ctx, CurrentUser
from api.errors import ApiError
from api.store.models import Commitment, Score
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


@router.get("/suppliers")
def ranking(
    ctx: Ctx,
    user: CurrentUser,
    sort: Literal["score", "-score", "supplier"] = "score",
    window_days: Annotated[int, Query(ge=30, le=730)] = 180,
) -> dict[str, Any]:
    """Suppliers ranked by credit score with band, gate outcome and trend (purchasing view)."""
    user.require(*PURCHASING)
    with ctx.sessions() as s:
        ids = supplier_ids(s)
    rows, unavailable = publish_scores_isolated(ctx, ids, window_days=window_days)
    order = {
        "score": lambda r: (-r.score, r.supplier_id),
        "-score": lambda r: (r.score, r.supplier_id),
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


@router.get("/suppliers/{supplier_id}/credit")
def credit(
    supplier_id: SupplierId,
    ctx: Ctx,
    user: CurrentUser,
    as_of: AsOf = None,
    window_days: Annotated[int, Query(ge=30, le=730)] = 180,
) -> dict[str, Any]:
    """Score 0-100 with band, exact SHAP contributions (base + sum == score, asserted), up to
    4 reason codes, the gate outcome with distance, a what-if, and the on-chain commitment."""
    _may_see(user, supplier_id)
    _known(ctx, supplier_id)
    row = publish_scores(
        ctx, [supplier_id], as_of=as_of, window_days=window_days, with_what_if=True
    )[0]
    with ctx.sessions() as s:
        return score_json(s, row)


@router.get("/suppliers/{supplier_id}/credit/history")
def history(
    supplier_id: SupplierId,
    ctx: Ctx,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """One entry per state the score was in: responses published for the same instant,
    evidence and model (a ranking's and a detail view's) are one point of history."""
    _may_see(user, supplier_id)
    with ctx.sessions() as s:
        newest_first = list(
            s.scalars(
                select(Score)
                .where(Score.supplier_id == supplier_id)
                .order_by(Score.id.desc())
                .limit(limit * 2)
            )
        )
        seen: set[tuple[int, str, str]] = set()
        rows = []
        for r in newest_first:
            state = (r.as_of, r.evidence_root, r.model_version)
            if state not in seen:
                seen.add(state)
                rows.append(r)
        rows = rows[:limit]
        return {
            "supplierId": supplier_id,
            "history": [
                {
                    "score": r.score,
                    "band": r.band,
                    "gate": r.gate_outcome,
                    "asOf": r.as_of,
                    "trigger": r.trigger,
                    "modelVersion": r.model_version,
                    "responseHash": r.response_hash,
                    "publishedAt": r.created_at.isoformat(),
                    "committed": r.commitment_id is not None and r.proof is not None,
                }
                for r in reversed(rows)
            ],
        }


@router.get(
    "/suppliers/{supplier_id}/credit/waterfall.png", responses={200: {"content": {"image/png": {}}}}
)
def waterfall(supplier_id: SupplierId, ctx: Ctx, user: CurrentUser) -> Response:
    """The SHAP waterfall of the current score as a PNG."""
    _may_see(user, supplier_id)
    _known(ctx, supplier_id)
    row = publish_scores(ctx, [supplier_id])[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_waterfall(
            CreditResponse.model_validate(row.response), Path(tmp) / "waterfall.png"
        )
        return Response(path.read_bytes(), media_type="image/png")


@router.get("/scores/{response_hash}")
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
