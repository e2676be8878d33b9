from __future__ import annotations

import time

from eth_utils import to_checksum_address
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import update

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


@router.post("/challenge", response_model=ChallengeResponse)
def challenge(body: ChallengeRequest, ctx: Ctx) -> ChallengeResponse:
    """An EIP-4361 sign-in message for this address, valid for 5 minutes and once."""
    address = to_checksum_address(body.address)
    nonce, issued = new_nonce(), int(time.time())
    url = ctx.settings.public_url or f"http://{ctx.settings.host}:{ctx.settings.port}"
    message = challenge_message(url, address, ctx.deployment.chain_id, nonce, issued)
    with ctx.sessions() as s, s.begin():
        s.add(
            AuthChallenge(
                nonce=nonce,
                address=address,
                message=message,
                expires_at=issued + CHALLENGE_TTL_SECONDS,
            )
        )
    return ChallengeResponse(message=message, nonce=nonce, expiresAt=issued + CHALLENGE_TTL_SECONDS)


@router.post("/logout", status_code=204)
def logout(user: CurrentUser, ctx: Ctx) -> Response:
    """Sign out: the bearer token of this request stops working now, not at its expiry."""
    revoke_token(ctx.sessions, user)
    return Response(status_code=204)


@router.post("/token", response_model=TokenResponse, responses=problems(401, 403))
def token(body: TokenRequest, ctx: Ctx) -> TokenResponse:
    """Exchange the signed challenge (EIP-191 personal_sign) for a short-lived bearer token."""
    address = to_checksum_address(body.address)
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
        ctx.settings.resolved_token_secret(), principal, ctx.settings.token_ttl_seconds
    )
    return TokenResponse(
        accessToken=token, expiresAt=expires, address=address, role=role.value, orgId=org
    )
