"""What each page shows, built from the service layer (the same calls and role rules as the
API's routes, never an HTTP round trip to ourselves)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.batch_trees import record_proof
from api.context import ServiceContext
from api.credit_service import (
    Unavailable,
    publish_scores,
    publish_scores_isolated,
    score_json,
    supplier_ids,
)
from api.errors import ApiError
from api.routes.credit import PURCHASING, _known, _may_see
from api.routes.incidents import _matrix_json, _visible
from api.routes.models import list_models
from api.routes.records import _load, list_records
from api.store.models import (
    Batch,
    Decision,
    Incident,
    Participant,
    Reconciliation,
    Record,
    Responsibility,
    Score,
    SupersededReceipt,
)
from api.views import receipt, record_summary
from credit.features import DEFAULT_WINDOW_DAYS
from credit.gates import GateResult, gate_reasons
from ledger.errors import ChainError
from ledger.records import RecordKind, Role
from ledger.verify import verify_receipt

KINDS = ("inspection", "delivery", "complaint", "corrective_action", "audit", "improvement")


@dataclass
class RankRow:
    supplier_id: str
    score: float | None  # None: insufficient evidence
    band: str
    outcome: str | None
    policy: str | None
    threshold: float | None
    distance: float | None
    trend: float | None  # points since the previous published score (earlier as-of)
    history: list[float]
    reasons: list[dict[str, Any]]
    evidence_count: int
    gate_reasons: list[str]  # the gate's own (credit.gates.gate_reasons), shown first
    as_of: int


def score_history(
    session: Session, suppliers: Sequence[str], window_days: int
) -> dict[str, list[tuple[int, float]]]:
    """Published scores per supplier, one per as-of instant (same window), oldest first.

    A ranking response and a detail response (with what-if) for the same instant are two
    published rows with the same score; the chart shows the instant once.
    """
    window = Score.response["window_days"].as_integer()
    rows = session.execute(
        select(Score.supplier_id, Score.as_of, Score.score)
        .where(Score.supplier_id.in_(list(suppliers)), window == window_days)
        .order_by(Score.as_of, Score.id)
    )
    by_supplier: dict[str, dict[int, float]] = defaultdict(dict)
    for sid, as_of, score in rows:
        if score is not None:  # a thin file's answer has no number to plot
            by_supplier[sid][int(as_of)] = float(score)
    return {sid: sorted(points.items()) for sid, points in by_supplier.items()}


def _trend(points: list[tuple[int, float]], as_of: int, score: float) -> float | None:
    earlier = [v for t, v in points if t < as_of]
    return score - earlier[-1] if earlier else None


def ranking(
    ctx: ServiceContext,
    user: Principal,
    window_days: int = DEFAULT_WINDOW_DAYS,
    unavailable: list[Unavailable] | None = None,
) -> list[RankRow]:
    """The purchasing ranking (GET /v1/suppliers): best score first, ties by supplier id.
    Suppliers whose score cannot be computed are appended to ``unavailable`` (not ranked)."""
    user.require(*PURCHASING)
    with ctx.sessions() as s:
        ids = supplier_ids(s)
    # the policy's window: other windows are what-ifs
    published, failed = publish_scores_isolated(ctx, ids)
    if unavailable is not None:
        unavailable.extend(failed)
    with ctx.sessions() as s:
        history = score_history(s, ids, window_days)
    out = []
    # Thin files (no number) rank after every scored supplier.
    for row in sorted(published, key=lambda r: (r.score is None, -(r.score or 0.0), r.supplier_id)):
        resp = row.response
        gate = resp.get("gate") or {}
        points = history.get(row.supplier_id, [])
        out.append(
            RankRow(
                supplier_id=row.supplier_id,
                score=row.score,
                band=row.band,
                outcome=gate.get("outcome"),
                policy=gate.get("policy"),
                threshold=gate.get("threshold"),
                distance=gate.get("distance"),
                trend=_trend(points, row.as_of, row.score) if row.score is not None else None,
                history=[v for _, v in points][-12:],
                reasons=resp["reason_codes"],
                evidence_count=resp["evidence_count"],
                as_of=row.as_of,
                gate_reasons=gate_reasons(GateResult.model_validate(gate)) if gate else [],
            )
        )
    return out


@dataclass
class EvidenceCount:
    kind: str
    anchored: int = 0  # in a confirmed batch: has a receipt, counts for credit
    anchoring: int = 0  # in a batch not yet confirmed
    pending: int = 0  # waiting for a batch

    @property
    def total(self) -> int:
        return self.anchored + self.anchoring + self.pending


def evidence_counts(session: Session, supplier_id: str) -> list[EvidenceCount]:
    rows = session.execute(
        select(Record.kind, Batch.status, func.count())
        .outerjoin(Batch, Record.batch_id == Batch.id)
        .where(Record.subject == supplier_id)
        .group_by(Record.kind, Batch.status)
    )
    counts = {k: EvidenceCount(k) for k in KINDS}
    for kind, status, n in rows:
        entry = counts.setdefault(kind, EvidenceCount(kind))
        if status == "confirmed":
            entry.anchored += n
        elif status is None:
            entry.pending += n
        else:
            entry.anchoring += n
    return list(counts.values())


@dataclass
class SupplierView:
    credit: dict[str, Any]  # GET /v1/suppliers/{id}/credit
    history: list[tuple[int, float]]
    evidence: list[EvidenceCount]
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def evidence_total(self) -> EvidenceCount:
        total = EvidenceCount("all")
        for e in self.evidence:
            total.anchored += e.anchored
            total.anchoring += e.anchoring
            total.pending += e.pending
        return total


def supplier(
    ctx: ServiceContext, user: Principal, supplier_id: str, window_days: int = DEFAULT_WINDOW_DAYS
) -> SupplierView:
    """GET /v1/suppliers/{id}/credit (+ history), with the same role rule: purchasing roles
    see every supplier, a supplier only itself."""
    _may_see(user, supplier_id)
    _known(ctx, supplier_id)
    row = publish_scores(ctx, [supplier_id], with_what_if=True)[0]
    with ctx.sessions() as s:
        credit = score_json(s, row)
        history = score_history(s, [supplier_id], window_days).get(supplier_id, [])
        evidence = evidence_counts(s, supplier_id)
        keys = [
            {"address": p.address, "role": p.role, "active": p.active}
            for p in s.scalars(
                select(Participant)
                .where(Participant.org_id == supplier_id)
                .order_by(Participant.address)
            )
        ]
    return SupplierView(credit=credit, history=history, evidence=evidence, keys=keys)


# -- incidents -------------------------------------------------------------------------------


def incidents(ctx: ServiceContext, user: Principal) -> list[dict[str, Any]]:
    """GET /v1/incidents (a supplier sees incidents involving its lots) with each incident's
    latest published matrix version and how many suppliers have signed a decision on it."""
    with ctx.sessions() as s:
        rows = [
            r
            for r in s.scalars(select(Incident).order_by(Incident.created_at.desc()))
            if _visible(user, r.body)
        ]
        ids = [r.incident_id for r in rows]
        latest: dict[str, Responsibility] = {}
        for m in s.scalars(
            select(Responsibility)
            .where(Responsibility.incident_id.in_(ids))
            .order_by(Responsibility.id)
        ):
            latest[m.incident_id] = m
        decided: dict[str, int] = dict(
            s.execute(
                select(Decision.matrix_hash, func.count()).group_by(Decision.matrix_hash)
            ).all()
        )
        out = []
        for r in rows:
            matrix = latest.get(r.incident_id)
            top = max(matrix.matrix["rows"], key=lambda x: x["weight"]) if matrix else None
            out.append(
                {
                    **r.body,
                    "openedBy": r.opened_by,
                    "createdAt": r.created_at,
                    "suppliers": sorted({lot["supplier_id"] for lot in r.body["lots"]}),
                    "top": top,
                    "decisions": decided.get(matrix.matrix_hash, 0) if matrix else 0,
                }
            )
    return out


def incident(ctx: ServiceContext, user: Principal, incident_id: str) -> dict[str, Any]:
    """GET /v1/incidents/{id}/responsibility: recomputed from the evidence anchored now."""
    with ctx.sessions() as s:
        row = s.get(Incident, incident_id)
        if row is None or not _visible(user, row.body):
            raise ApiError(404, "incident_not_found", "no such incident", got=incident_id)
        body = {**row.body, "openedBy": row.opened_by, "createdAt": row.created_at}
    return {"incident": body, "matrix": _matrix_json(ctx, incident_id)}


# -- records ---------------------------------------------------------------------------------


def records(
    ctx: ServiceContext,
    user: Principal,
    *,
    subject: str | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """GET /v1/records: a supplier sees records about itself, an OEM what it signed, an
    auditor or admin everything."""
    return list_records(
        ctx,
        user,
        subject=subject or None,
        kind=RecordKind(kind) if kind else None,
        limit=limit,
        offset=offset,
    )


def may_get_receipt(user: Principal) -> bool:
    """GET /v1/records/{hash}/receipt is for suppliers (their own records) and auditors."""
    return user.role is not Role.OEM


def record(ctx: ServiceContext, user: Principal, struct_hash: str) -> dict[str, Any]:
    """A record (GET /v1/records/{hash}), and for those who may see receipts the receipt,
    every verification check against the service's chain, and the on-chain anchor."""
    row, batch = _load(ctx, user, struct_hash)
    out: dict[str, Any] = {
        "summary": record_summary(row, batch),
        "payload": row.payload,
        "signature": row.signature,
        "nonce": row.nonce,
        "salt": row.salt,
        "payloadHash": row.payload_hash,
        "chainId": row.chain_id,
        "contract": row.contract,
        "receipt": None,
        "verification": None,
        "batch": None,
        "receiptAllowed": may_get_receipt(user),
    }
    with ctx.sessions() as s:
        # Batches the chain lost under this record, and why: the old receipts stay valid
        # evidence of what the service once said, and the page says they were withdrawn.
        out["reconciliations"] = [
            {"id": r.id, "reason": r.reason, "lostBatch": r.lost_chain_batch_id}
            for r in s.scalars(
                select(Reconciliation)
                .join(SupersededReceipt, SupersededReceipt.reconciliation_id == Reconciliation.id)
                .where(SupersededReceipt.struct_hash == row.struct_hash)
                .order_by(Reconciliation.id)
            )
        ]
    if batch is not None:
        out["batch"] = {
            "id": batch.chain_batch_id,
            "status": batch.status,
            "root": batch.root,
            "leafCount": batch.leaf_count,
            "tx": batch.tx_hash,
            "block": batch.block_number,
            "blockTimestamp": batch.block_timestamp,
        }
    if out["receiptAllowed"] and batch is not None and batch.status == "confirmed":
        rc = receipt(row, batch, record_proof(ctx, batch, row.struct_hash))
        out["receipt"] = rc
        out["verification"] = verify_receipt(None, rc, ctx.chain).to_json()
    return out


# -- federated models ------------------------------------------------------------------------


def models(ctx: ServiceContext, user: Principal) -> list[dict[str, Any]]:
    """GET /v1/models, each round's model hash checked against the ModelRegistry on chain."""
    runs = list_models(ctx, user)["runs"]
    for run in runs:
        run_bytes = bytes.fromhex(run["runId"][2:])
        for rnd in run["rounds"]:
            try:
                onchain = ctx.chain.model_round(run_bytes, rnd["round"])
            except ChainError:
                rnd["onChain"] = None  # unknown: the chain did not answer
                continue
            rnd["onChain"] = (
                onchain is not None and "0x" + onchain["model_hash"].hex() == rnd["modelHash"]
            )
    return runs
