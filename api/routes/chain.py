from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from api.deps import Ctx
from api.store.models import Batch, Outbox, Record
from ledger.verify import verify_receipt

router = APIRouter(prefix="/v1", tags=["chain"])


class ServiceCounts(BaseModel):
    records: int
    pending: int
    confirmedBatches: int


class CheckpointView(BaseModel):
    chainId: int
    contract: str
    batchCount: int
    accumulator: str = Field(description="0x-prefixed 32-byte hex")
    leafTotal: int
    service: ServiceCounts


@router.get("/checkpoint")
def checkpoint(ctx: Ctx) -> CheckpointView:
    """The chain's checkpoint (batch count, accumulator, leaf total) beside the service's view.

    Public: it reveals only counts and a hash, and lets anyone detect a forked log.
    """
    cp = ctx.chain.checkpoint()
    with ctx.sessions() as s:
        records = s.scalar(select(func.count()).select_from(Record)) or 0
        pending = s.scalar(select(func.count()).select_from(Outbox)) or 0
        confirmed = (
            s.scalar(select(func.count()).select_from(Batch).where(Batch.status == "confirmed"))
            or 0
        )
    return CheckpointView(
        chainId=ctx.deployment.chain_id,
        contract=ctx.deployment.ledger,
        batchCount=cp.batch_count,
        accumulator="0x" + cp.accumulator.hex(),
        leafTotal=cp.leaf_total,
        service=ServiceCounts(records=records, pending=pending, confirmedBatches=confirmed),
    )


class VerifyRequest(BaseModel):
    receipt: dict[str, Any]
    record: dict[str, Any] | None = None


@router.post("/verify")
def verify(body: VerifyRequest, ctx: Ctx) -> dict[str, Any]:
    """The offline verifier's checks, run against this service's chain connection.

    An auditor who trusts no service runs ``qledger verify`` against its own RPC endpoint;
    this endpoint is the convenience for everyone else.
    """
    return verify_receipt(body.record, body.receipt, ctx.chain).to_json()
