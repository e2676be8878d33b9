from __future__ import annotations

from eth_utils import to_checksum_address
from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from api.deps import AdminUser, Ctx, CurrentUser
from api.errors import ApiError, problems
from api.store.models import Participant, utcnow
from ledger.records import Identifier, Role

router = APIRouter(prefix="/v1/participants", tags=["participants"])

REGISTRABLE = (Role.SUPPLIER, Role.OEM, Role.AUDITOR)


ZERO_ADDRESS = "0x" + "0" * 40


class RegisterRequest(BaseModel):
    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")

    @field_validator("address")
    @classmethod
    def _not_zero(cls, value: str) -> str:
        # No key signs for the zero address, and the contract refuses it (ZeroAddress): a
        # client's mistake, answered 422 here rather than as a reverted transaction.
        if value.lower() == ZERO_ADDRESS:
            raise ValueError("the zero address cannot hold a role")
        return value

    role: Role
    orgId: Identifier
    name: str = Field("", max_length=200)


class ParticipantView(BaseModel):
    address: str
    role: str
    orgId: str
    name: str
    active: bool
    registeredAt: str = Field(description="ISO 8601")
    revokedAt: str | None = Field(description="ISO 8601; null while active")
    txHash: str | None = Field(description="the registering or revoking transaction")


class ParticipantList(BaseModel):
    participants: list[ParticipantView]


def _json(p: Participant) -> ParticipantView:
    return ParticipantView(
        address=p.address,
        role=p.role,
        orgId=p.org_id,
        name=p.name,
        active=p.active,
        registeredAt=p.registered_at.isoformat(),
        revokedAt=p.revoked_at.isoformat() if p.revoked_at else None,
        txHash=p.tx_hash,
    )


@router.post("", status_code=201, responses=problems(409))
def register(body: RegisterRequest, ctx: Ctx, _: AdminUser) -> ParticipantView:
    """Register a key with a role and organisation: written on chain, then mirrored here."""
    if body.role not in REGISTRABLE:
        raise ApiError(
            422,
            "invalid_role",
            "participants are suppliers, OEMs or auditors",
            expected=[r.value for r in REGISTRABLE],
            got=body.role.value,
        )
    address = to_checksum_address(body.address)
    current, org = ctx.roles.get(address)
    if current is not None:
        raise ApiError(
            409,
            "already_registered",
            "this key already holds a role",
            got={"role": current.value, "orgId": org},
        )
    tx = ctx.chain.register_participant(address, body.role, body.orgId)
    # Mirror our own transaction's events now, rather than after the follower's next poll.
    ctx.roles.record(ctx.chain.role_events_in(tx))
    with ctx.sessions() as s, s.begin():
        row = s.get(Participant, address) or Participant(address=address)
        row.org_id, row.role, row.name = body.orgId, body.role.value, body.name
        row.active, row.revoked_at, row.tx_hash = True, None, tx
        row.registered_at = utcnow()
        s.add(row)
        s.flush()
        return _json(row)


@router.delete("/{address}")
def revoke(address: str, ctx: Ctx, _: AdminUser) -> ParticipantView:
    """Revoke a key's role on chain. What it signed before stays valid; later signatures fail."""
    try:
        address = to_checksum_address(address)
    except ValueError as exc:
        raise ApiError(422, "invalid_address", "not an address", got=address) from exc
    role, _org = ctx.roles.get(address)
    if role not in REGISTRABLE:
        raise ApiError(
            404, "participant_not_found", "no active participant with this key", got=address
        )
    tx = ctx.chain.revoke_participant(address, role)
    ctx.roles.record(ctx.chain.role_events_in(tx))
    with ctx.sessions() as s, s.begin():
        row = s.get(Participant, address)
        if row is None:
            row = Participant(address=address, org_id=_org or "", role=role.value)
            s.add(row)
        row.active, row.revoked_at, row.tx_hash = False, utcnow(), tx
        s.flush()
        return _json(row)


@router.get("")
def list_participants(ctx: Ctx, user: CurrentUser) -> ParticipantList:
    """Admins, auditors and OEMs see the registry; a supplier sees its own keys."""
    query = select(Participant).order_by(Participant.org_id, Participant.address)
    if user.role is Role.SUPPLIER:
        query = query.where(Participant.org_id == user.org_id)
    with ctx.sessions() as s:
        return ParticipantList(participants=[_json(p) for p in s.scalars(query)])
