"""Webhook subscriptions (OEM purchasing, admin) and their delivery log (docs/webhooks.md).

An OEM manages its own organisation's subscriptions; an admin sees and manages all. Anyone
else is a 403; another organisation's subscription is a 404 (its existence is not shown).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update

from api.auth import Principal
from api.deps import Ctx, CurrentUser
from api.errors import ApiError, problems
from api.schemas import DeliveryList, WebhookCreated, WebhookDeleted, WebhookList, documented
from api.store.models import WebhookDelivery, WebhookSubscription, utcnow
from api.webhooks import (
    EVENT_TYPES,
    MAX_URL_LENGTH,
    EventType,
    UrlRefused,
    check_url,
    delivery_json,
    new_id,
    new_secret,
    subscription_json,
)
from ledger.records import Role

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

SubscriptionId = Annotated[str, Path(pattern=r"^wh_[0-9a-f]{24}$")]


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=MAX_URL_LENGTH)
    event_types: list[EventType] = Field(
        default=list(EVENT_TYPES), alias="eventTypes", min_length=1, max_length=len(EVENT_TYPES)
    )
    # Points on the 0-100 score: a move by more than this is a supplier.score.moved event.
    score_threshold: float = Field(5.0, alias="scoreThreshold", gt=0, le=100, allow_inf_nan=False)


def _manager(user: Principal) -> Principal:
    return user.require(Role.OEM, Role.ADMIN)


def _owned(ctx: Ctx, user: Principal, subscription_id: str) -> WebhookSubscription:
    with ctx.sessions() as s:
        row = s.get(WebhookSubscription, subscription_id)
    if row is None or not row.active or (user.role != Role.ADMIN and row.owner_org != user.org_id):
        raise ApiError(
            404, "webhook_not_found", "no such webhook subscription", got=subscription_id
        )
    return row


@router.post(
    "", status_code=201, responses={**documented(WebhookCreated, 201), **problems(403, 409, 422)}
)
def create(body: NewSubscription, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Subscribe a URL to supplier events. The answer carries the signing secret: the only
    time it is shown."""
    _manager(user)
    try:
        url = check_url(body.url)
    except UrlRefused as exc:
        raise ApiError(422, "webhook_url_refused", str(exc)) from exc
    org = user.org_id or user.role.value
    limit = ctx.settings.webhook_max_subscriptions_per_org
    secret = new_secret()
    with ctx.sessions() as s, s.begin():
        count = s.scalar(
            select(func.count())
            .select_from(WebhookSubscription)
            .where(WebhookSubscription.owner_org == org, WebhookSubscription.active)
        )
        if (count or 0) >= limit:
            raise ApiError(
                409,
                "too_many_webhooks",
                "this organisation has as many webhook subscriptions as allowed; delete one",
                expected=f"<= {limit}",
                got=count,
            )
        row = WebhookSubscription(
            id=new_id("wh_"),
            owner_org=org,
            created_by=user.address,
            url=url,
            event_types=sorted(set(body.event_types)),
            score_threshold=body.score_threshold,
            secret=secret,
            active=True,
            created_at=utcnow(),
        )
        s.add(row)
        s.flush()
        shown = subscription_json(row)
    return {**shown, "secret": secret}


@router.get("", responses={**documented(WebhookList), **problems(403)})
def list_subscriptions(ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Your organisation's subscriptions (an admin: all), without secrets."""
    _manager(user)
    query = select(WebhookSubscription).where(WebhookSubscription.active)
    if user.role != Role.ADMIN:
        query = query.where(WebhookSubscription.owner_org == user.org_id)
    with ctx.sessions() as s:
        rows = list(s.scalars(query.order_by(WebhookSubscription.created_at)))
    return {"webhooks": [subscription_json(r) for r in rows]}


@router.delete("/{subscription_id}", responses={**documented(WebhookDeleted), **problems(403, 404)})
def delete(subscription_id: SubscriptionId, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """Stop a subscription; its pending deliveries are cancelled, its log is kept."""
    _manager(user)
    _owned(ctx, user, subscription_id)
    with ctx.sessions() as s, s.begin():
        s.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription_id)
            .values(active=False, deleted_at=utcnow())
        )
        cancelled = s.scalars(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.subscription_id == subscription_id,
                WebhookDelivery.status == "pending",
            )
            .values(status="cancelled")
            .returning(WebhookDelivery.id)
        ).all()
    return {"id": subscription_id, "deleted": True, "cancelledDeliveries": len(cancelled)}


@router.get(
    "/{subscription_id}/deliveries",
    responses={**documented(DeliveryList), **problems(403, 404)},
)
def deliveries(
    subscription_id: SubscriptionId,
    ctx: Ctx,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Annotated[
        Literal["pending", "delivered", "failed", "cancelled"] | None, Query()
    ] = None,
) -> dict[str, Any]:
    """The delivery log, newest first: attempts, last HTTP status, last error, next attempt."""
    _manager(user)
    _owned(ctx, user, subscription_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    with ctx.sessions() as s:
        rows = list(s.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))
    return {"deliveries": [delivery_json(r) for r in rows]}
