"""Annotated FastAPI dependencies (the full-stack-template way)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Principal, decode_token, token_revoked
from api.context import ServiceContext
from api.errors import ApiError
from api.intake import GroupCommitter
from ledger.records import Role

_bearer = HTTPBearer(auto_error=False)


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


Ctx = Annotated[ServiceContext, Depends(get_ctx)]


def get_committer(request: Request) -> GroupCommitter | None:
    """The app's intake writer (None when the app runs without its lifespan: records are then
    stored one request per transaction)."""
    return getattr(request.app.state, "committer", None)


Committer = Annotated[GroupCommitter | None, Depends(get_committer)]


def get_principal(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise ApiError(
            401,
            "not_authenticated",
            "send 'Authorization: Bearer <token>' (POST /v1/auth/challenge, then /v1/auth/token)",
        )
    principal = decode_token(ctx.settings.token_secret_value, credentials.credentials)
    if token_revoked(ctx.read_sessions, principal):
        raise ApiError(401, "token_revoked", "this access token was signed out; sign in again")
    # A token outlives nothing: a key revoked on chain loses access within the role mirror's
    # bound (api/roles.py), read from the store, never from the chain.
    role, _ = ctx.roles.get(principal.address)
    if role is None:
        raise ApiError(401, "key_revoked", "this key no longer holds a role on chain")
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


def require_admin(user: CurrentUser) -> Principal:
    return user.require(Role.ADMIN)


AdminUser = Annotated[Principal, Depends(require_admin)]
