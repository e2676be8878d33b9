from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.auth import Principal
from api.deps import Ctx, CurrentUser
from api.edges import ENVELOPE_OVERHEAD_BYTES
from api.errors import ApiError
from api.intake import submit_many
from api.store.models import Batch, Record
from api.views import envelope, receipt, record_summary
from ledger.records import HEX32_PATTERN, ID_MAX_LENGTH, ID_PATTERN, RecordKind, Role

router = APIRouter(prefix="/v1", tags=["records"])

# Page offsets stay far below every database's 64-bit integer (a larger one was a 500).
MAX_OFFSET = 2**31 - 1
StructHash = Annotated[str, Path(pattern=HEX32_PATTERN)]


async def _json_body(request: Request, limit: int) -> Any:
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


@router.post("/records", status_code=202, responses={202: {"description": "accepted"}})
async def submit_record(request: Request, ctx: Ctx) -> JSONResponse:
    """Submit one signed record. Idempotent: the same record again gets the same answer."""
    data = await _json_body(request, ctx.settings.max_record_bytes + ENVELOPE_OVERHEAD_BYTES)
    outcome = (await run_in_threadpool(submit_many, ctx, [data]))[0]
    if outcome.error is not None:
        raise outcome.error
    return JSONResponse(
        {
            "structHash": outcome.struct_hash,
            "status": "pending",
            "duplicate": outcome.status == "duplicate",
        },
        status_code=202,
    )


@router.post("/records:batch", status_code=207)
async def submit_batch(request: Request, ctx: Ctx) -> JSONResponse:
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
    outcomes = await run_in_threadpool(submit_many, ctx, records)
    accepted = sum(o.status != "rejected" for o in outcomes)
    return JSONResponse(
        {
            "accepted": accepted,
            "rejected": len(outcomes) - accepted,
            "results": [o.to_json() for o in outcomes],
        },
        status_code=202 if accepted == len(outcomes) else 207,
    )


def _may_read(user: Principal, row: Record) -> bool:
    if user.role in (Role.AUDITOR, Role.ADMIN):
        return True
    if user.role is Role.SUPPLIER:
        return row.subject == user.org_id
    return row.signer == user.address  # OEM: what it signed itself (its complaints)


def _load(ctx: Ctx, user: Principal, struct_hash: str) -> tuple[Record, Batch | None]:
    with ctx.sessions() as s:
        row = s.get(Record, struct_hash.lower())
        if row is None or not _may_read(user, row):
            # Same answer for "absent" and "not yours": existence is not leaked.
            raise ApiError(404, "record_not_found", "no such record", got=struct_hash)
        batch = s.get(Batch, row.batch_id) if row.batch_id is not None else None
        return row, batch


@router.get("/records")
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
            "records": [record_summary(r, batches.get(r.batch_id)) for r in rows],
            "limit": limit,
            "offset": offset,
        }


@router.get("/records/{struct_hash}")
def get_record(struct_hash: StructHash, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    row, batch = _load(ctx, user, struct_hash)
    return {**record_summary(row, batch), "signed": envelope(row)}


@router.get("/records/{struct_hash}/receipt", responses={202: {"description": "pending"}})
def get_receipt(struct_hash: StructHash, ctx: Ctx, user: CurrentUser) -> JSONResponse:
    """The receipt once the record's batch is anchored and confirmed; 202 while pending."""
    if user.role is Role.OEM:
        raise ApiError(
            403,
            "forbidden_role",
            "receipts are for suppliers and auditors",
            expected=["SUPPLIER", "AUDITOR", "ADMIN"],
            got=user.role.value,
        )
    row, batch = _load(ctx, user, struct_hash)
    if batch is None or batch.status != "confirmed" or row.proof is None:
        return JSONResponse({"structHash": row.struct_hash, "status": "pending"}, status_code=202)
    return JSONResponse(receipt(row, batch))
