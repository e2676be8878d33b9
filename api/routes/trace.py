"""Containment (issue 19): where-used, where-from and recall scope over the as-built genealogy.

Every answer lists the records it rests on with their anchoring state: fetch each receipt
(``GET /v1/records/{structHash}/receipt``) and verify it offline (``qledger verify``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import Ctx, CurrentUser
from api.errors import problems
from api.genealogy_service import MAX_LIST, MAX_SUSPECTS, TraceQuery, may_trace, trace
from ledger.records import ID_MAX_LENGTH, ID_PATTERN, UINT64_MAX, Identifier
from traceability.genealogy import Direction, Filters, Node

router = APIRouter(prefix="/v1/trace", tags=["trace"])

IdQuery = Annotated[str, Query(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
Time = Annotated[int | None, Query(ge=0, le=UINT64_MAX, description="event time, Unix seconds")]
Site = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIST, description="nodes and records listed")]


class NodeRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    maker: Identifier
    partNumber: Identifier
    lotId: Identifier

    @property
    def node(self) -> Node:
        return (self.maker, self.partNumber, self.lotId)


class TracedNode(NodeRef):
    depth: int = Field(description="links from the nearest queried lot")
    via: list[str] = Field(description="struct hashes of the records that link it")


class Level(BaseModel):
    depth: int
    count: int
    parts: dict[str, int] = Field(description="how many of each part number at this level")


class RestsOn(BaseModel):
    structHash: str
    kind: str
    signer: str
    subject: str
    eventTime: int
    anchoring: Literal["pending", "built", "sent", "anchored", "confirmed"]
    batchRoot: str | None
    chainBatchId: int | None


class TraceFilters(BaseModel):
    since: int | None
    until: int | None
    site: str | None


class TraceAnswer(BaseModel):
    direction: Direction
    roots: list[NodeRef]
    filters: TraceFilters
    total: int = Field(description="nodes that pass the filters")
    levels: list[Level]
    nodes: list[TracedNode]
    records: list[RestsOn] = Field(description="every record a followed link rests on")
    recordCount: int
    truncated: bool = Field(description="more nodes or records than `limit` were found")
    depthLimited: bool = Field(description="the walk stopped at its depth bound")


class ScopeRequest(BaseModel):
    """Suspect lots and the window/site of the products that count."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lots: list[NodeRef] = Field(min_length=1, max_length=MAX_SUSPECTS)
    since: int | None = Field(None, ge=0, le=UINT64_MAX)
    until: int | None = Field(None, ge=0, le=UINT64_MAX)
    site: Identifier | None = None
    limit: int = Field(1000, ge=1, le=MAX_LIST)

    @model_validator(mode="after")
    def _window(self) -> ScopeRequest:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since is after until")
        return self


def _one(
    ctx: Ctx,
    user: CurrentUser,
    direction: Direction,
    node: Node,
    since: int | None,
    until: int | None,
    site: str | None,
    limit: int,
) -> TraceAnswer:
    may_trace(user, [node])
    query = TraceQuery([node], direction, Filters(since, until, site), limit)
    with ctx.sessions() as s:
        return TraceAnswer.model_validate(trace(s, query))


@router.get("/where-used", response_model=TraceAnswer, responses=problems(401, 403, 422))
def where_used(
    ctx: Ctx,
    user: CurrentUser,
    maker: IdQuery,
    partNumber: IdQuery,
    lotId: IdQuery,
    since: Time = None,
    until: Time = None,
    site: Site = None,
    limit: Limit = 1000,
) -> TraceAnswer:
    """Every product downstream of a lot, any depth (as-built: what it went into)."""
    return _one(ctx, user, "where-used", (maker, partNumber, lotId), since, until, site, limit)


@router.get("/where-from", response_model=TraceAnswer, responses=problems(401, 403, 422))
def where_from(
    ctx: Ctx,
    user: CurrentUser,
    maker: IdQuery,
    partNumber: IdQuery,
    lotId: IdQuery,
    since: Time = None,
    until: Time = None,
    site: Site = None,
    limit: Limit = 1000,
) -> TraceAnswer:
    """Every lot upstream of a product, any depth (its as-built part tree)."""
    return _one(ctx, user, "where-from", (maker, partNumber, lotId), since, until, site, limit)


@router.post("/scope", response_model=TraceAnswer, responses=problems(400, 401, 403, 422))
def recall_scope(body: ScopeRequest, ctx: Ctx, user: CurrentUser) -> TraceAnswer:
    """Recall scope of suspect lots: every product they went into, counted per level (and
    part number), only products assembled in the window at the site when those are given."""
    roots = [lot.node for lot in body.lots]
    may_trace(user, roots)
    query = TraceQuery(roots, "where-used", Filters(body.since, body.until, body.site), body.limit)
    with ctx.sessions() as s:
        return TraceAnswer.model_validate(trace(s, query))
