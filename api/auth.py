"""Authentication: sign in with the participant's own Ethereum key (EIP-4361 message signed
with EIP-191 personal_sign), receive a short-lived HS256 JWT carrying address, role and org.

No unauthenticated data reads: every read route depends on :data:`CurrentUser`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from api.store.models import RevokedToken
from ledger.errors import InvalidSignature
from ledger.keys import personal_sign_digest, recover_digest
from ledger.records import Role

CHALLENGE_TTL_SECONDS = 300  # a sign-in message is good for 5 minutes, then ask again


@dataclass(frozen=True)
class Principal:
    address: str
    role: Role
    org_id: str | None
    # The bearer token this principal came from (its ``jti`` and ``exp``), so it can be revoked.
    token_id: str = field(default="", compare=False)
    token_expires: int = field(default=0, compare=False)

    def require(self, *roles: Role) -> Principal:
        if self.role not in roles:
            raise ApiError(
                403,
                "forbidden_role",
                "this endpoint is not for your role",
                expected=[r.value for r in roles],
                got=self.role.value,
            )
        return self


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def challenge_message(url: str, address: str, chain_id: int, nonce: str, issued: int) -> str:
    """An EIP-4361 (Sign-In with Ethereum) message; wallets render it for the user and check
    that its domain is the site they are on, so it names the public URL."""
    authority = url.split("://", 1)[-1].rstrip("/")
    return (
        f"{authority} wants you to sign in with your Ethereum account:\n{address}\n\n"
        f"Sign in to the qledger quality ledger.\n\n"
        f"URI: {url}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\n"
        f"Issued At: {_iso(issued)}\nExpiration Time: {_iso(issued + CHALLENGE_TTL_SECONDS)}"
    )


def new_nonce() -> str:
    return secrets.token_hex(16)


def recover_personal(message: str, signature: str) -> str:
    try:
        return recover_digest(personal_sign_digest(message), signature)
    except InvalidSignature as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from exc


def issue_token(secret: str, principal: Principal, ttl: int) -> tuple[str, int]:
    expires = int(time.time()) + ttl
    token = jwt.encode(
        {
            "sub": principal.address,
            "role": principal.role.value,
            "org": principal.org_id,
            "exp": expires,
            "iat": int(time.time()),
            "jti": secrets.token_hex(16),
        },
        secret,
        algorithm="HS256",
    )
    return token, expires


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "jti"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise ApiError(401, "token_expired", "access token expired; sign in again") from exc
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, "invalid_token", f"access token rejected: {exc}") from exc
    try:
        return Principal(
            address=claims["sub"],
            role=Role(claims["role"]),
            org_id=claims.get("org"),
            token_id=str(claims["jti"]),
            token_expires=int(claims["exp"]),
        )
    except (KeyError, ValueError) as exc:
        raise ApiError(401, "invalid_token", "access token lacks address or role") from exc


def revoke_token(sessions: sessionmaker[Session], principal: Principal) -> None:
    """End the token ``principal`` came from now rather than at its expiry (sign-out)."""
    now = int(time.time())
    try:
        with sessions() as s, s.begin():
            s.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
            s.add(RevokedToken(jti=principal.token_id, expires_at=principal.token_expires))
    except IntegrityError:
        pass  # two sign-outs of one token raced; the other one revoked it


def token_revoked(sessions: sessionmaker[Session], principal: Principal) -> bool:
    with sessions() as s:
        return s.get(RevokedToken, principal.token_id) is not None
