from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from api.deps import Ctx, CurrentUser
from api.schemas import ReconciliationList, VerificationDocument, documented
from api.store.models import Batch, Outbox, Reconciliation, Record
from ledger.verify import verify_receipt

router = APIRouter(prefix="/v1", tags=["chain"])


class ServiceCounts(BaseModel):
    records: int
    pending: int
    confirmedBatches: int
    # Monotonic counters for monitoring (checkpoint-monitor exports them): batches the chain
    # lost after confirming them, and those not yet anchored again.
    reconciliations: int
    reanchoring: int


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
        reconciliations = s.scalar(select(func.count()).select_from(Reconciliation)) or 0
        reanchoring = (
            s.scalar(
                select(func.count())
                .select_from(Reconciliation)
                .where(Reconciliation.reanchored_at.is_(None))
            )
            or 0
        )
    return CheckpointView(
        chainId=ctx.deployment.chain_id,
        contract=ctx.deployment.ledger,
        batchCount=cp.batch_count,
        accumulator="0x" + cp.accumulator.hex(),
        leafTotal=cp.leaf_total,
        service=ServiceCounts(
            records=records,
            pending=pending,
            confirmedBatches=confirmed,
            reconciliations=reconciliations,
            reanchoring=reanchoring,
        ),
    )


def reconciliation_json(row: Reconciliation) -> dict[str, Any]:
    return {
        "id": row.id,
        "batch": row.batch_id,
        "root": row.root,
        "leafCount": row.leaf_count,
        "reason": row.reason,
        "detail": row.detail,
        "detectedAt": row.detected_at.isoformat(),
        "lost": {
            "batchId": row.lost_chain_batch_id,
            "transactionHash": row.lost_tx_hash,
            "blockNumber": row.lost_block_number,
            "blockHash": row.lost_block_hash,
        },
        "reanchored": None
        if row.reanchored_at is None
        else {
            "batchId": row.new_chain_batch_id,
            "transactionHash": row.new_tx_hash,
            "at": row.reanchored_at.isoformat(),
        },
    }


@router.get("/reconciliations", responses=documented(ReconciliationList))
def reconciliations(
    ctx: Ctx,
    _user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Confirmed batches the chain lost, newest first, and whether each is anchored again."""
    with ctx.sessions() as s:
        rows = list(
            s.scalars(
                select(Reconciliation)
                .order_by(Reconciliation.id.desc())
                .limit(limit)
                .offset(offset)
            )
        )
        return {
            "reconciliations": [reconciliation_json(r) for r in rows],
            "limit": limit,
            "offset": offset,
        }


class VerifyRequest(BaseModel):
    receipt: dict[str, Any]
    record: dict[str, Any] | None = None


@router.post("/verify", responses=documented(VerificationDocument))
def verify(body: VerifyRequest, ctx: Ctx) -> dict[str, Any]:
    """The offline verifier's checks, run against this service's chain connection.

    An auditor who trusts no service runs ``qledger verify`` against its own RPC endpoint;
    this endpoint is the convenience for everyone else.
    """
    return verify_receipt(body.record, body.receipt, ctx.chain).to_json()
