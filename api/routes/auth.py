from __future__ import annotations

import time

from eth_utils import to_checksum_address
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import delete, or_, select, update

from api.auth import (
    CHALLENGE_TTL_SECONDS,
    Principal,
    challenge_message,
    issue_token,
    new_nonce,
    recover_personal,
    revoke_token,
)
from api.deps import Ctx, CurrentUser
from api.errors import ApiError, problems
from api.store.models import AuthChallenge

router = APIRouter(prefix="/v1/auth", tags=["auth"])

ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class ChallengeRequest(BaseModel):
    address: str = Field(pattern=ADDRESS)


class ChallengeResponse(BaseModel):
    message: str
    nonce: str
    expiresAt: int


class TokenRequest(BaseModel):
    address: str = Field(pattern=ADDRESS)
    nonce: str = Field(min_length=8, max_length=64)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class TokenResponse(BaseModel):
    accessToken: str
    tokenType: str = "bearer"
    expiresAt: int
    address: str
    role: str
    orgId: str | None


# rate_limited: too many sign-in requests (answered with Retry-After).
RATE_LIMITED = problems(429)


@router.post(
    "/challenge",
    response_model=ChallengeResponse,
    responses={
        403: {"description": "signer_not_registered: the address holds no role"},
        **RATE_LIMITED,
    },
)
def challenge(body: ChallengeRequest, request: Request, ctx: Ctx) -> ChallengeResponse:
    """An EIP-4361 sign-in message for this address, valid for 5 minutes and once.

    Only registered participants get one (roles are public on chain, so this reveals nothing
    new), so a flood of made-up addresses stores nothing. Each call purges expired and used
    challenges, and an account keeps at most ``max_open_challenges_per_account`` open ones:
    the table stays bounded by the number of participants.
    """
    address = to_checksum_address(body.address)
    ctx.limits.auth(request, address)
    role, _ = ctx.roles.get(address)
    if role is None:
        raise ApiError(403, "signer_not_registered", "this key holds no role on chain", got=address)
    nonce, issued = new_nonce(), int(time.time())
    url = ctx.settings.public_url or f"http://{ctx.settings.host}:{ctx.settings.port}"
    message = challenge_message(url, address, ctx.deployment.chain_id, nonce, issued)
    with ctx.sessions() as s, s.begin():
        s.execute(
            delete(AuthChallenge).where(
                or_(AuthChallenge.expires_at < issued, AuthChallenge.used.is_(True))
            )
        )
        # Room for the new one; the rest go, latest expiry kept first (same-second ties in
        # nonce order: which of them goes does not matter, only how many stay).
        keep = ctx.settings.max_open_challenges_per_account - 1
        older = (
            s.execute(
                select(AuthChallenge.nonce)
                .where(AuthChallenge.address == address)
                .order_by(AuthChallenge.expires_at.desc(), AuthChallenge.nonce)
                .offset(keep)
            )
            .scalars()
            .all()
        )
        if older:
            s.execute(delete(AuthChallenge).where(AuthChallenge.nonce.in_(older)))
        s.add(
            AuthChallenge(
                nonce=nonce,
                address=address,
                message=message,
                expires_at=issued + CHALLENGE_TTL_SECONDS,
            )
        )
    return ChallengeResponse(message=message, nonce=nonce, expiresAt=issued + CHALLENGE_TTL_SECONDS)


@router.post("/logout", status_code=204, responses=RATE_LIMITED)
def logout(user: CurrentUser, request: Request, ctx: Ctx) -> Response:
    """Sign out: the bearer token of this request stops working now, not at its expiry."""
    ctx.limits.auth(request, user.address)
    revoke_token(ctx.sessions, user)
    return Response(status_code=204)


@router.post(
    "/token", response_model=TokenResponse, responses={**problems(401, 403), **RATE_LIMITED}
)
def token(body: TokenRequest, request: Request, ctx: Ctx) -> TokenResponse:
    """Exchange the signed challenge (EIP-191 personal_sign) for a short-lived bearer token."""
    address = to_checksum_address(body.address)
    ctx.limits.auth(request, address)
    now = int(time.time())
    with ctx.sessions() as s, s.begin():
        row = s.get(AuthChallenge, body.nonce)
        if row is None or row.address != address:
            raise ApiError(
                401, "unknown_challenge", "no challenge with this nonce for this address"
            )
        if row.used or row.expires_at < now:
            raise ApiError(401, "challenge_expired", "challenge used or expired; ask again")
        # Single use: mark it before checking the signature so a replay cannot race us.
        s.execute(update(AuthChallenge).where(AuthChallenge.nonce == body.nonce).values(used=True))
        message = row.message
    signer = recover_personal(message, body.signature)
    if signer != address:
        raise ApiError(
            401,
            "invalid_signature",
            "challenge not signed by this address",
            expected=address,
            got=signer,
        )
    role, org = ctx.roles.get(address)
    if role is None:
        raise ApiError(403, "signer_not_registered", "this key holds no role on chain", got=address)
    principal = Principal(address=address, role=role, org_id=org)
    token, expires = issue_token(
        ctx.settings.token_secret_value, principal, ctx.settings.token_ttl_seconds
    )
    return TokenResponse(
        accessToken=token, expiresAt=expires, address=address, role=role.value, orgId=org
    )
