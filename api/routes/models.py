from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import AdminUser, Ctx, CurrentUser
from api.edges import read_bounded
from api.errors import ApiError
from api.fl_service import current_model, model_path, store_model_file
from api.schemas import (
    ModelFileStored,
    ModelList,
    Prediction,
    RoundRecorded,
    documented,
)
from api.store.models import ModelRound
from federated.model import predict_defect_risk
from federated.provenance import participants_root
from ledger.records import HEX32_PATTERN, ID_MAX_LENGTH, ID_PATTERN, UINT32_MAX

MAX_MODEL_BYTES = 64 * 1024 * 1024  # a tabular MLP is tens of KiB; this only bounds abuse

router = APIRouter(prefix="/v1/models", tags=["federated models"])


class RoundReport(BaseModel):
    # strict: a round number is one canonical JSON integer (uint32 on chain), never "5" or 5.0
    model_config = ConfigDict(strict=True)

    runId: str = Field(pattern=HEX32_PATTERN)
    round: int = Field(ge=0, le=UINT32_MAX)
    participants: list[Annotated[str, Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]] = Field(
        min_length=1, max_length=1000
    )
    metrics: dict[Annotated[str, Field(max_length=100)], float] = Field(
        default_factory=dict, max_length=100
    )


@router.post("/rounds", status_code=201, responses=documented(RoundRecorded, 201))
def report_round(body: RoundReport, ctx: Ctx, _: AdminUser) -> dict[str, Any]:
    """Record who took part in an anchored federated round (participation is credit
    evidence). The chain is the authority: the round must be in ModelRegistry and the
    participant list must hash to its anchored participantsRoot."""
    onchain = ctx.chain.model_round(bytes.fromhex(body.runId[2:]), body.round)
    if onchain is None:
        raise ApiError(
            404,
            "round_not_anchored",
            "no such round in the ModelRegistry",
            got={"runId": body.runId, "round": body.round},
        )
    root = participants_root(body.participants)
    if root != onchain["participants_root"]:
        raise ApiError(
            422,
            "participants_mismatch",
            "participant list does not hash to the anchored participantsRoot",
            expected="0x" + onchain["participants_root"].hex(),
            got="0x" + root.hex(),
        )
    row = ModelRound(
        run_id=body.runId.lower(),
        round=body.round,
        model_hash="0x" + onchain["model_hash"].hex(),
        participants=sorted(set(body.participants)),
        metrics=body.metrics,
        timestamp=onchain["timestamp"],
    )
    try:
        with ctx.sessions() as s, s.begin():
            s.add(row)
    except IntegrityError as exc:
        raise ApiError(409, "round_exists", "this round is already recorded") from exc
    return {
        "runId": row.run_id,
        "round": row.round,
        "modelHash": row.model_hash,
        "participants": row.participants,
    }


@router.get("", responses=documented(ModelList))
def list_models(ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Federated model versions: each run's rounds with anchored model hashes."""
    with ctx.sessions() as s:
        rows = list(s.scalars(select(ModelRound).order_by(ModelRound.run_id, ModelRound.round)))
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        runs.setdefault(r.run_id, []).append(
            {
                "round": r.round,
                "modelHash": r.model_hash,
                "participants": len(r.participants),
                "suppliers": r.participants
                if user.role.value != "SUPPLIER"
                else [p for p in r.participants if p == user.org_id],
                "metrics": r.metrics,
                "anchoredAt": r.timestamp,
            }
        )
    return {
        "runs": [
            {
                "runId": k,
                "rounds": v,
                "finalModelHash": v[-1]["modelHash"],
                "modelFileHeld": model_path(ctx, v[-1]["modelHash"]).exists(),
            }
            for k, v in runs.items()
        ]
    }


@router.put("/{run_id}/file", status_code=201, responses=documented(ModelFileStored, 201))
async def upload_model(run_id: str, request: Request, ctx: Ctx, _: AdminUser) -> dict[str, Any]:
    """The run's final model file (.qlm); kept only if its keccak256 is the hash anchored for
    the run's latest round. From then on the service predicts with it."""
    if re.fullmatch(HEX32_PATTERN, run_id) is None:
        raise ApiError(422, "invalid_run_id", "run ids are 0x-prefixed 32-byte hex", got=run_id)
    body = await read_bounded(request, MAX_MODEL_BYTES)  # never more than the bound in memory
    return await run_in_threadpool(store_model_file, ctx, run_id.lower(), body)


class PredictRequest(BaseModel):
    rows: list[dict[str, float | str]] = Field(min_length=1, max_length=10_000)


@router.post("/predict", responses=documented(Prediction))
def predict(body: PredictRequest, ctx: Ctx, _: CurrentUser) -> dict[str, Any]:
    """Defect probability per row of process readings, from the anchored federated model."""
    held = current_model(ctx)
    if held is None:
        raise ApiError(404, "no_model", "no anchored federated model file is held yet")
    model, row = held
    try:
        risks = predict_defect_risk(model, body.rows)
    except ValueError as exc:
        raise ApiError(422, "invalid_rows", str(exc)) from exc
    return {
        "modelHash": model.hash_hex,
        "runId": row.run_id,
        "round": row.round,
        "risks": [float(r) for r in risks],
    }
