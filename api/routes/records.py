from __future__ import annotations

import functools
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.deps import Committer, Ctx, CurrentUser
from api.edges import ENVELOPE_OVERHEAD_BYTES, read_parsed_json
from api.errors import ApiError, Problem, problems
from api.intake import submit_many
from api.metrics import record_intake
from api.notification_views import may_read as may_read_notification
from api.schemas import (
    ReceiptHistory,
    ReceiptPending,
    RecordDocument,
    RecordList,
    documented,
)
from api.store.models import Batch, Notification, Reconciliation, Record, SupersededReceipt
from api.tlog_service import served_receipt
from api.views import envelope, record_summary
from credit.gates import GatePolicy, default_policy
from ledger.receipts import Receipt
from ledger.records import HEX32_PATTERN, ID_MAX_LENGTH, ID_PATTERN, RecordKind, Role

router = APIRouter(prefix="/v1", tags=["records"])

# Page offsets stay far below every database's 64-bit integer (a larger one was a 500).
MAX_OFFSET = 2**31 - 1
StructHash = Annotated[str, Path(pattern=HEX32_PATTERN)]


async def _json_body(request: Request, limit: int) -> Any:
    parsed, value = read_parsed_json(request.scope)
    if parsed:  # the strict-JSON edge read and parsed these bytes already (within the bound)
        return value
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            "request_too_large",
            "request body is too large",
            expected=f"<= {limit} bytes",
            got=int(declared),
        )
    body = bytearray()  # appending to bytes would copy the whole body on every chunk
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413,
                "request_too_large",
                "request body is too large",
                expected=f"<= {limit} bytes",
                got=f"> {limit}",
            )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc


class IntakeWarning(BaseModel):
    code: Literal["outside_scoring_window"]
    detail: str
    expected: Any = None
    got: Any = None


class SubmitAccepted(BaseModel):
    structHash: str
    status: Literal["pending"] = Field(description="anchoring follows; poll the receipt")
    duplicate: bool = Field(description="the same record was accepted before")
    warnings: list[IntakeWarning] = Field(
        default_factory=list,
        description="accepted, but probably not what the signer meant (docs/api.md)",
    )


def scoring_warnings(data: Any, now: int | None = None) -> list[dict[str, Any]]:
    """Warnings for an accepted record: its eventTime lies before the published score's
    window (the gate policy's ``window_days``), so it is stored and anchored but no score
    counts it. Possible wherever ``max_event_age_seconds`` is longer than the window."""
    struct = data.get("record") if isinstance(data, dict) else None
    event_time = struct.get("eventTime") if isinstance(struct, dict) else None
    if not isinstance(event_time, int):
        return []
    now = int(time.time()) if now is None else now
    window_days = _policy().window_days
    start = now - window_days * 86_400
    if event_time >= start:
        return []
    return [
        {
            "code": "outside_scoring_window",
            "detail": f"eventTime lies before the {window_days}-day scoring window: the record "
            "is stored and anchored, but no credit score counts it",
            "expected": f">= {start}",
            "got": event_time,
        }
    ]


@functools.cache
def _policy() -> GatePolicy:
    return default_policy()


class BatchItem(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    structHash: str | None = None
    error: Problem | None = Field(None, description="why a rejected record was refused")
    warnings: list[IntakeWarning] | None = Field(None, description="as for a single record")


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItem]


@router.post(
    "/records",
    status_code=202,
    responses={
        202: {"model": SubmitAccepted, "description": "accepted"},
        **problems(400, 401, 403, 409, 413, 422),
    },
)
async def submit_record(request: Request, ctx: Ctx, committer: Committer) -> JSONResponse:
    """Submit one signed record. Idempotent: the same record again gets the same answer."""
    started = time.perf_counter()
    data = await _json_body(request, ctx.settings.max_record_bytes + ENVELOPE_OVERHEAD_BYTES)
    ctx.limits.intake_check([data])
    outcome = (await run_in_threadpool(submit_many, ctx, [data], committer))[0]
    record_intake([data], [outcome], "record", started)
    ctx.limits.intake_charge([data], [0] if outcome.status == "accepted" else [])
    if outcome.error is not None:
        raise outcome.error
    return JSONResponse(
        {
            "structHash": outcome.struct_hash,
            "status": "pending",
            "duplicate": outcome.status == "duplicate",
            "warnings": scoring_warnings(data),
        },
        status_code=202,
    )


@router.post(
    "/records:batch",
    status_code=207,
    responses={
        202: {"model": BatchResult, "description": "every record accepted"},
        207: {"model": BatchResult, "description": "some records rejected (see results)"},
        **problems(400, 409, 413, 422),
    },
)
async def submit_batch(request: Request, ctx: Ctx, committer: Committer) -> Response:
    """Up to 1,000 signed records; each accepted or rejected on its own, stored in one
    transaction. Answers 202 if all were accepted, 207 (multi-status) otherwise."""
    data = await _json_body(request, ctx.settings.max_batch_bytes)
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ApiError(422, "invalid_request", 'body must be {"records": [...]}')
    if not 1 <= len(records) <= ctx.settings.max_batch_records:
        raise ApiError(
            413 if records else 422,
            "batch_size",
            "a batch holds between 1 and max_batch_records records",
            expected=f"1..{ctx.settings.max_batch_records}",
            got=len(records),
        )
    ctx.limits.intake_check(records)
    started = time.perf_counter()
    outcomes = await run_in_threadpool(submit_many, ctx, records, committer)
    record_intake(records, outcomes, "batch", started)
    ctx.limits.intake_charge(records, [o.index for o in outcomes if o.status == "accepted"])
    accepted = sum(o.status != "rejected" for o in outcomes)
    now = int(time.time())
    results = []
    for o in outcomes:
        item = o.to_json()
        if o.status != "rejected" and (found := scoring_warnings(records[o.index], now)):
            item["warnings"] = found
        results.append(item)
    body = {"accepted": accepted, "rejected": len(outcomes) - accepted, "results": results}
    status = 202 if accepted == len(outcomes) else 207
    try:
        # orjson: ~10x faster than JSONResponse's json.dumps for 1,000 results.
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")
    except TypeError:  # a value orjson does not write (an integer beyond 64 bits in an error)
        return JSONResponse(body, status_code=status)


def _may_read(user: Principal, row: Record) -> bool:
    if user.role in (Role.AUDITOR, Role.ADMIN):
        return True
    if user.role is Role.SUPPLIER:
        return row.subject == user.org_id
    return row.signer == user.address  # OEM: what it signed itself (its complaints)


def _notification_party(s: Session, user: Principal, row: Record) -> bool:
    """A notification's transitions are read by the parties its thread is shown to."""
    if row.kind != RecordKind.NOTIFICATION.value:
        return False
    thread = s.get(Notification, row.lot_id)  # a notification record's lotId is its id
    return thread is not None and may_read_notification(s, user, thread)


def _load(ctx: Ctx, user: Principal, struct_hash: str) -> tuple[Record, Batch | None]:
    with ctx.sessions() as s:
        return _load_in(s, user, struct_hash)


def _load_in(s: Session, user: Principal, struct_hash: str) -> tuple[Record, Batch | None]:
    row = s.get(Record, struct_hash.lower())
    if row is None or not (_may_read(user, row) or _notification_party(s, user, row)):
        # Same answer for "absent" and "not yours": existence is not leaked.
        raise ApiError(404, "record_not_found", "no such record", got=struct_hash)
    batch = s.get(Batch, row.batch_id) if row.batch_id is not None else None
    return row, batch


@router.get("/records", responses=documented(RecordList))
def list_records(
    ctx: Ctx,
    user: CurrentUser,
    subject: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)] = None,
    kind: RecordKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    query = select(Record).order_by(Record.event_time.desc(), Record.struct_hash)
    if user.role is Role.SUPPLIER:
        query = query.where(Record.subject == user.org_id)
    elif user.role is Role.OEM:
        query = query.where(Record.signer == user.address)
    if subject:
        query = query.where(Record.subject == subject)
    if kind:
        query = query.where(Record.kind == str(kind))  # StrEnum: its value
    with ctx.sessions() as s:
        rows = list(s.scalars(query.limit(limit).offset(offset)))
        batches = {
            b.id: b
            for b in s.scalars(
                select(Batch).where(
                    Batch.id.in_({r.batch_id for r in rows if r.batch_id is not None})
                )
            )
        }
        return {
            "records": [
                record_summary(r, batches.get(r.batch_id) if r.batch_id is not None else None)
                for r in rows
            ],
            "limit": limit,
            "offset": offset,
        }


@router.get("/records/{struct_hash}", responses=documented(RecordDocument))
def get_record(struct_hash: StructHash, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    row, batch = _load(ctx, user, struct_hash)
    return {**record_summary(row, batch), "signed": envelope(row)}


def _receipt_reader(user: Principal) -> None:
    if user.role is Role.OEM:
        raise ApiError(
            403,
            "forbidden_role",
            "receipts are for suppliers and auditors",
            expected=["SUPPLIER", "AUDITOR", "ADMIN"],
            got=user.role.value,
        )


@router.get(
    "/records/{struct_hash}/receipt",
    responses={**documented(Receipt), **documented(ReceiptPending, 202)},
)
def get_receipt(
    struct_hash: StructHash,
    ctx: Ctx,
    user: CurrentUser,
    log_size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> JSONResponse:
    """The receipt once the record's batch is anchored and confirmed; 202 while pending (also
    while a batch the chain lost is being re-anchored).

    It always carries ``log``: the record's transparency-log entry, its inclusion proof and
    the checkpoint at ``log_size`` (default: the newest cosigned checkpoint covering it, else
    the newest), so it verifies with no RPC against pinned log and witness keys."""
    _receipt_reader(user)
    # One transaction for the record, its proof and its log proof: on SQLite each takes the
    # one write lock, and under load every extra wait for it showed in receipt latency.
    with ctx.sessions() as s:
        row, batch = _load_in(s, user, struct_hash)
        if batch is None or batch.status != "confirmed":
            body = {"structHash": row.struct_hash, "status": "pending"}
            return JSONResponse(body, status_code=202)
        return JSONResponse(served_receipt(ctx, row, batch, log_size, session=s))


@router.get("/records/{struct_hash}/receipts", responses=documented(ReceiptHistory))
def get_receipts(struct_hash: StructHash, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Every receipt ever issued for the record: the current one (null while pending) and the
    superseded ones, each with the reconciliation that withdrew it (oldest first)."""
    _receipt_reader(user)
    row, batch = _load(ctx, user, struct_hash)
    current = None
    if batch is not None and batch.status == "confirmed":
        current = served_receipt(ctx, row, batch)
    with ctx.sessions() as s:
        old = s.execute(
            select(SupersededReceipt, Reconciliation)
            .join(Reconciliation, Reconciliation.id == SupersededReceipt.reconciliation_id)
            .where(SupersededReceipt.struct_hash == row.struct_hash)
            .order_by(SupersededReceipt.id)
        ).all()
    return {
        "structHash": row.struct_hash,
        "current": current,
        "superseded": [
            {
                "receipt": sup.receipt,
                "supersededAt": sup.superseded_at.isoformat(),
                "reconciliationId": rec.id,
                "reason": rec.reason,
                "detail": rec.detail,
            }
            for sup, rec in old
        ],
    }
