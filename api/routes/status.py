"""Readiness detail that needs no chain: how far the role mirror has followed the chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Ctx
from api.schemas import ServiceStatus, documented

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/status", responses=documented(ServiceStatus))
def status(ctx: Ctx) -> dict[str, Any]:
    """The role follower's cursor and lag, read from the store (answers while the node is down).

    Public: block numbers and a time only. ``roles.stale`` is true when the follower has not
    reached the chain for longer than a poll and one backoff: intake goes on meanwhile, with
    the roles as last seen.
    """
    return {"roles": ctx.follower.status()}
