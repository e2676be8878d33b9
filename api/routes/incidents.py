from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.credit_service import commitment_json, matrix_of, publish_matrix
from api.deps import Ctx, CurrentUser
from api.errors import ApiError
from api.schemas import IncidentList, IncidentOpened, MatrixDocument, documented
from api.store.models import Decision, Incident, Responsibility
from credit.responsibility import Incident as IncidentBody
from credit.responsibility import ResponsibilityDecision, verify_decision
from ledger.records import ID_MAX_LENGTH, ID_PATTERN, Role

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

IncidentId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]


def _visible(user: Any, body: dict[str, Any]) -> bool:
    if user.role in (Role.OEM, Role.AUDITOR, Role.ADMIN):
        return True
    return any(lot["supplier_id"] == user.org_id for lot in body["lots"])


@router.post("", status_code=201, responses=documented(IncidentOpened, 201))
def open_incident(body: IncidentBody, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """An OEM opens a field incident on a product built from several suppliers' lots; the
    responsibility matrix is computed at once from their anchored evidence."""
    user.require(Role.OEM, Role.ADMIN)
    # The service's clock says when the incident was reported: evidence anchored after that
    # (a supplier's filings once it knows) never counts in the matrix (issue 16).
    body = body.model_copy(update={"reported_at": int(time.time())})
    try:
        with ctx.sessions() as s, s.begin():
            s.add(
                Incident(
                    incident_id=body.incident_id,
                    body=body.model_dump(mode="json"),
                    opened_by=user.address,
                )
            )
    except IntegrityError as exc:
        raise ApiError(
            409, "incident_exists", "an incident with this id exists", got=body.incident_id
        ) from exc
    return {
        "incident": body.model_dump(mode="json"),
        "responsibility": _matrix_json(ctx, body.incident_id),
    }


@router.get("", responses=documented(IncidentList))
def list_incidents(ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    with ctx.sessions() as s:
        rows = list(s.scalars(select(Incident).order_by(Incident.created_at.desc())))
        return {
            "incidents": [
                {**r.body, "openedBy": r.opened_by, "createdAt": r.created_at.isoformat()}
                for r in rows
                if _visible(user, r.body)
            ]
        }


def _matrix_json(ctx: Ctx, incident_id: str) -> dict[str, Any]:
    row = publish_matrix(ctx, incident_id)
    if row is None:
        raise ApiError(404, "incident_not_found", "no such incident", got=incident_id)
    with ctx.sessions() as s:
        row = s.get(Responsibility, row.id)
        assert row is not None
        decisions = list(s.scalars(select(Decision).where(Decision.matrix_hash == row.matrix_hash)))
        return {
            **row.matrix,
            "matrixHash": row.matrix_hash,
            "decisions": [d.body for d in decisions],
            "commitment": commitment_json(s, row.commitment_id, row.proof, row.matrix_hash),
        }


@router.get("/{incident_id}/responsibility", responses=documented(MatrixDocument))
def responsibility(incident_id: IncidentId, ctx: Ctx, user: CurrentUser) -> dict[str, Any]:
    """The responsibility weight matrix (sums to 1), its method and version, the evidence it
    rests on, the suppliers' signed decisions and the on-chain commitment."""
    with ctx.sessions() as s:
        incident = s.get(Incident, incident_id)
        if incident is None or not _visible(user, incident.body):
            raise ApiError(404, "incident_not_found", "no such incident", got=incident_id)
    return _matrix_json(ctx, incident_id)


@router.post(
    "/{incident_id}/responsibility/decisions",
    status_code=201,
    responses=documented(ResponsibilityDecision, 201),
)
def decide(
    incident_id: IncidentId, body: dict[str, Any], ctx: Ctx, user: CurrentUser
) -> dict[str, Any]:
    """A supplier signs (EIP-712) acceptance or dispute of one version of the matrix."""
    user.require(Role.SUPPLIER)
    try:
        decision = ResponsibilityDecision.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_decision", str(exc.errors()[0]["msg"])) from exc
    if decision.incidentId != incident_id or decision.supplier != user.org_id:
        raise ApiError(
            403,
            "forbidden_supplier",
            "sign decisions for your own share only",
            expected={"incidentId": incident_id, "supplier": user.org_id},
            got={"incidentId": decision.incidentId, "supplier": decision.supplier},
        )
    with ctx.sessions() as s:
        row = s.scalar(
            select(Responsibility).where(
                Responsibility.matrix_hash == decision.matrixHash.lower(),
                Responsibility.incident_id == incident_id,
            )
        )
        if row is None:
            raise ApiError(
                404,
                "matrix_not_found",
                "no published matrix with this hash",
                got=decision.matrixHash,
            )
        matrix = matrix_of(row)
    try:
        signer = verify_decision(ctx.domain, decision, matrix)
    except ValueError as exc:
        raise ApiError(401, "invalid_signature", str(exc)) from exc
    role, org = ctx.roles.get(signer)
    if role is not Role.SUPPLIER or org != decision.supplier:
        raise ApiError(
            403,
            "signer_not_supplier",
            "the signing key is not this supplier's",
            expected=decision.supplier,
            got={"role": role and role.value, "org": org},
        )
    try:
        with ctx.sessions() as s, s.begin():
            s.add(
                Decision(
                    matrix_hash=row.matrix_hash,
                    incident_id=incident_id,
                    supplier_id=decision.supplier,
                    decision=decision.decision,
                    body=decision.model_dump(mode="json"),
                )
            )
    except IntegrityError as exc:
        raise ApiError(
            409, "decision_exists", "this supplier already decided on this version"
        ) from exc
    return decision.model_dump(mode="json")
