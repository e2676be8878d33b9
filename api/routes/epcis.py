"""Records as GS1 EPCIS 2.0 events (issue 19): what an EPCIS repository or a partner's
traceability system reads without knowing qledger's record format (docs/epcis.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import Ctx, CurrentUser
from api.errors import problems
from api.routes.records import MAX_OFFSET, StructHash, _load
from api.schemas import EpcisDocument
from api.store.models import Record
from api.views import envelope
from ledger.records import ID_MAX_LENGTH, ID_PATTERN, RecordKind, Role, load_signed_record
from traceability.epcis import export_document

router = APIRouter(prefix="/v1", tags=["epcis"])

# EPCIS 2.0 section 12.1: a JSON-LD document is served as application/ld+json.
LD_JSON = "application/ld+json"


class LdJsonResponse(JSONResponse):
    media_type = LD_JSON


_DOC = {"model": EpcisDocument, "description": "an EPCIS 2.0 EPCISDocument (GS1 JSON schema)"}
# One page of events: a document stays a few megabytes at most (a record's payload <= 64 KiB).
MAX_EVENTS_PAGE = 200


def _document(rows: list[Record]) -> LdJsonResponse:
    records = [load_signed_record(envelope(r)) for r in rows]
    return LdJsonResponse(export_document(records))


@router.get(
    "/records/{struct_hash}/epcis",
    response_class=LdJsonResponse,
    responses={200: _DOC, **problems(401, 404, 422)},
)
def record_epcis(struct_hash: StructHash, ctx: Ctx, user: CurrentUser) -> LdJsonResponse:
    """The record as an EPCIS 2.0 document of one event (ObjectEvent, AggregationEvent or
    TransformationEvent); readable by whoever may read the record."""
    row, _ = _load(ctx, user, struct_hash)
    return _document([row])


@router.get(
    "/epcis/events", response_class=LdJsonResponse, responses={200: _DOC, **problems(401, 422)}
)
def epcis_events(
    ctx: Ctx,
    user: CurrentUser,
    subject: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)] = None,
    kind: RecordKind | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> LdJsonResponse:
    """The records the caller may read (as ``GET /v1/records`` lists them), newest first, as
    one EPCIS 2.0 document; page with ``limit``/``offset``."""
    query = select(Record).order_by(Record.event_time.desc(), Record.struct_hash)
    if user.role is Role.SUPPLIER:
        query = query.where(Record.subject == user.org_id)
    elif user.role is Role.OEM:
        query = query.where(Record.signer == user.address)
    if subject:
        query = query.where(Record.subject == subject)
    if kind:
        query = query.where(Record.kind == str(kind))
    with ctx.sessions() as s:
        rows = list(s.scalars(query.limit(limit).offset(offset)))
    return _document(rows)
