"""Credit, incidents and model provenance on top of the store.

Evidence reaches the credit code only from confirmed batches; every published score response
and responsibility matrix is stored (score history) and committed on chain in Merkle batches
(CommitmentLog), so a purchasing decision can later be checked against what was shown.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.errors import ApiError
from api.fl_service import current_model
from api.store.models import (
    Batch,
    Commitment,
    Incident,
    ModelRound,
    Participant,
    Record,
    Responsibility,
    Score,
)
from api.webhooks import enqueue_score_events
from credit.evidence import EvidenceItem
from credit.features import compute_features
from credit.gates import default_policy
from credit.responsibility import Incident as IncidentBody
from credit.responsibility import ResponsibilityMatrix, matrix_hash, responsibility_matrix
from credit.score import response_dict_hash, response_dicts
from federated.model import predict_defect_risk
from ledger.errors import InvalidRecord
from ledger.evidence import DAY
from ledger.records import SELF_SUBJECT_KINDS, validated_payload

log = logging.getLogger("qledger.credit")

RESPONSIBILITY_TOPIC = "responsibility-matrix"  # CommitmentLog topic of published matrices


def evidence_items(
    session: Session,
    subjects: Collection[str] | None = None,
    unreadable: dict[str, str] | None = None,
) -> list[EvidenceItem]:
    """Every stored record as credit evidence; ``anchored`` only once its batch is confirmed.

    Stored as signed, read as validated: each payload reaches the credit code through its kind's
    model with the schema's defaults applied (``validated_payload``), so a field the schema calls
    optional is never a missing key to a reader. A stored payload that no longer validates (a
    row from before a schema change) is left out and its subject named in ``unreadable``."""
    query = select(Record, Batch.status, Batch.block_timestamp).outerjoin(
        Batch, Record.batch_id == Batch.id
    )
    if subjects is not None:
        query = query.where(Record.subject.in_(list(subjects)))
    items = []
    for r, status, ts in session.execute(query):
        try:
            payload = validated_payload(r.kind, r.payload)
        except (InvalidRecord, ValueError) as exc:
            log.warning("stored record %s does not validate: %s", r.struct_hash, exc)
            if unreadable is not None:
                unreadable.setdefault(r.subject, f"stored record {r.struct_hash}: {exc}")
            continue
        confirmed = status == "confirmed"
        items.append(
            EvidenceItem(
                struct_hash=r.struct_hash,
                kind=r.kind,
                subject=r.subject,
                signer=r.signer,
                signer_role=r.signer_role,
                part_number=r.part_number,
                lot_id=r.lot_id,
                event_time=r.event_time,
                signed_at=r.signed_at,
                quantity=r.quantity,
                defects=r.defects,
                payload=payload,
                anchored=confirmed,
                anchored_at=ts if confirmed else None,
            )
        )
    return items


def latest_anchor_time(session: Session) -> int | None:
    return session.scalar(
        select(func.max(Batch.block_timestamp)).where(Batch.status == "confirmed")
    )


def default_as_of(session: Session) -> int:
    """Scores are computed as of the newest anchor (an evidence batch or a federated round):
    the score moves only when something new is anchored, and asking twice returns the same
    (already committed) response."""
    latest = [
        t
        for t in (
            latest_anchor_time(session),
            session.scalar(select(func.max(ModelRound.timestamp))),
        )
        if t
    ]
    return max(latest) if latest else int(time.time())


def supplier_ids(session: Session) -> list[str]:
    registered = set(
        session.scalars(select(Participant.org_id).where(Participant.role == "SUPPLIER"))
    )
    # Subjects of quality evidence only: a genealogy or notification record is about its signer,
    # and an OEM assembling vehicles or opening an investigation is not a supplier to score.
    filed = set(
        session.scalars(
            select(Record.subject)
            .where(Record.kind.not_in([k.value for k in SELF_SUBJECT_KINDS]))
            .distinct()
        )
    )
    return sorted(registered | filed)


def fl_rounds_in_window(session: Session, as_of: int, window_days: int) -> list[list[str]]:
    """Participant lists of the federated rounds anchored in the scoring window."""
    return list(
        session.scalars(
            select(ModelRound.participants).where(
                ModelRound.timestamp <= as_of, ModelRound.timestamp > as_of - window_days * 86_400
            )
        )
    )


def fl_participation(rounds: Sequence[list[str]], supplier_id: str) -> float | None:
    """Share of the window's federated rounds the supplier took part in; None when no
    federated training ran in the window (missing, not zero)."""
    if not rounds:
        return None
    return sum(supplier_id in participants for participants in rounds) / len(rounds)


@dataclass(frozen=True)
class Unavailable:
    """A supplier whose score could not be computed now, and why (shown, never a 500)."""

    supplier_id: str
    code: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"supplierId": self.supplier_id, "code": self.code, "reason": self.reason}


# What scoring one supplier's evidence can raise when that evidence is unusable; anything
# else is a bug and still propagates.
_SCORING_ERRORS = (KeyError, TypeError, ValueError, ArithmeticError, IndexError, InvalidRecord)


class AsOfOutOfBounds(ValueError):
    """A requested scoring instant lies in the future or before the ledger's first record."""

    def __init__(self, code: str, message: str, expected: str, got: int) -> None:
        super().__init__(message)
        self.code, self.expected, self.got = code, expected, got


def check_as_of(session: Session, as_of: int, now: int, skew: int) -> None:
    """as_of must not lie in the future, nor before the ledger's first record was signed."""
    if as_of > now + skew:
        raise AsOfOutOfBounds(
            "as_of_in_future", "as_of is in the future", f"<= {now + skew}", as_of
        )
    first = session.scalar(select(func.min(Record.signed_at)))
    if first is None or as_of < first:
        raise AsOfOutOfBounds(
            "as_of_before_ledger",
            "as_of lies before the ledger's first record",
            f">= {first}" if first is not None else "a ledger with records",
            as_of,
        )


def _score_isolated(
    ctx: ServiceContext,
    suppliers: Sequence[str],
    as_of: int | None,
    window_days: int | None,
    with_what_if: bool,
) -> tuple[list[dict[str, Any]], list[Unavailable]]:
    """Responses for ``suppliers`` (not stored), plus those whose score cannot be computed: one
    supplier's unusable evidence never takes the others' scores down. The window defaults to
    the gate policy's, ``as_of`` to the newest anchor.

    Each response is ``CreditResponse``'s JSON built by ``credit.score.response_dicts`` (the
    whole batch in columns, no model object per supplier; equal to the validated response's
    dump, tested), so a ranking of many suppliers costs about what their scores cost."""
    policy = default_policy()
    window_days = policy.window_days if window_days is None else window_days
    unavailable: dict[str, Unavailable] = {}
    with ctx.sessions() as s:
        as_of = as_of or default_as_of(s)
        by_subject: dict[str, list[EvidenceItem]] = defaultdict(list)
        unreadable: dict[str, str] = {}
        for item in evidence_items(s, suppliers, unreadable):
            by_subject[item.subject].append(item)
        for sid, reason in unreadable.items():
            unavailable[sid] = Unavailable(sid, "evidence_unreadable", reason)
        rounds = fl_rounds_in_window(s, as_of, window_days)
        vectors = []
        for sid in suppliers:
            if sid in unavailable:
                continue
            try:
                vectors.append(
                    compute_features(
                        by_subject[sid],
                        sid,
                        as_of,
                        window_days,
                        fl_participation=fl_participation(rounds, sid),
                    )
                )
            except _SCORING_ERRORS as exc:
                log.warning("features of %s failed: %r", sid, exc)
                unavailable[sid] = Unavailable(sid, "features_failed", f"{type(exc).__name__}")
    responses: list[dict[str, Any]] = []
    if vectors:
        try:
            responses = response_dicts(vectors, with_what_if=with_what_if, policy=policy)
        except _SCORING_ERRORS:
            # One vector broke the batch: score them one by one to find it.
            for vec in vectors:
                try:
                    responses.extend(
                        response_dicts([vec], with_what_if=with_what_if, policy=policy)
                    )
                except _SCORING_ERRORS as exc:
                    log.warning("score of %s failed: %r", vec.supplier_id, exc)
                    unavailable[vec.supplier_id] = Unavailable(
                        vec.supplier_id, "score_failed", type(exc).__name__
                    )
    return responses, [unavailable[sid] for sid in suppliers if sid in unavailable]


def _refuse_unavailable(unavailable: Sequence[Unavailable]) -> None:
    if unavailable:
        first = unavailable[0]
        raise ApiError(
            409,
            "score_unavailable",
            f"the score of {first.supplier_id} cannot be computed now ({first.code})",
            got=[u.to_json() for u in unavailable],
        )


def score_responses(
    ctx: ServiceContext,
    suppliers: Sequence[str],
    *,
    as_of: int | None = None,
    window_days: int | None = None,
    with_what_if: bool = False,
) -> list[dict[str, Any]]:
    """Responses (``CreditResponse``'s JSON) for ``suppliers`` without storing them (a what-if
    reading, or before storing); a supplier whose score cannot be computed is a 409
    ``score_unavailable``."""
    responses, unavailable = _score_isolated(ctx, suppliers, as_of, window_days, with_what_if)
    _refuse_unavailable(unavailable)
    return responses


def publish_scores_isolated(
    ctx: ServiceContext,
    suppliers: Sequence[str],
    *,
    with_what_if: bool = False,
    trigger: str = "request",
) -> tuple[list[Score], list[Unavailable]]:
    """Score ``suppliers`` at the newest anchor over the policy's window (the published reading),
    store each response not stored before (score history) and return the rows, plus the
    suppliers whose score cannot be computed now. An identical response (same evidence, model,
    policy and instant) is one row. Any other instant or window is a what-if
    (``score_responses``): never stored, never committed."""
    responses, unavailable = _score_isolated(ctx, suppliers, None, None, with_what_if)
    rows = [_store_score(ctx, r, trigger) for r in responses if r["reading"] == "published"]
    return rows, unavailable


def publish_scores(
    ctx: ServiceContext,
    suppliers: Sequence[str],
    *,
    with_what_if: bool = False,
    trigger: str = "request",
) -> list[Score]:
    """``publish_scores_isolated``, where any supplier whose score cannot be computed is a 409
    ``score_unavailable`` naming it and the reason."""
    rows, unavailable = publish_scores_isolated(
        ctx, suppliers, with_what_if=with_what_if, trigger=trigger
    )
    _refuse_unavailable(unavailable)
    return rows


def score_day(as_of: int) -> int:
    """The UTC day (days since 1970-01-01) a published score belongs to."""
    return as_of // DAY


def _store_score(ctx: ServiceContext, resp: dict[str, Any], trigger: str) -> Score:
    """Store a published response (``CreditResponse``'s JSON) once; it supersedes the day's
    earlier published one."""
    digest = response_dict_hash(resp)
    gate = resp["gate"]
    policy = gate["policy"] if gate else default_policy().ref
    supplier_id, as_of = resp["supplier_id"], resp["as_of"]
    day = score_day(as_of)
    with ctx.sessions() as s, s.begin():
        # Only another state of the score (instant, evidence, model) supersedes: the ranking's
        # and the detail view's responses of one state are one score, and reading them in turn
        # writes nothing.
        s.execute(
            update(Score)
            .where(
                Score.supplier_id == supplier_id,
                Score.policy == policy,
                Score.day == day,
                Score.superseded_by.is_(None),
                or_(
                    Score.as_of != as_of,
                    Score.evidence_root != resp["evidence_root"],
                    Score.model_version != resp["model_version"],
                ),
            )
            .values(superseded_by=digest)
        )
        row = s.scalar(select(Score).where(Score.response_hash == digest))
        if row is not None:
            if row.superseded_by is not None:
                row.superseded_by = None  # the day's reading is back at this state (a reorg)
        else:
            previous = s.scalar(
                select(Score)
                .where(Score.supplier_id == supplier_id)
                .order_by(Score.id.desc())
                .limit(1)
            )
            row = Score(
                supplier_id=supplier_id,
                as_of=as_of,
                score=resp["score"],
                band=resp["band"],
                gate_outcome=gate["outcome"] if gate else None,
                model_version=resp["model_version"],
                evidence_root=resp["evidence_root"],
                trigger=trigger,
                response=resp,
                response_hash=digest,
                policy=policy,
                day=day,
            )
            s.add(row)
            s.flush()
            # Purchasing's webhooks, in this same transaction: a published change is never
            # stored without its notifications (api/webhooks.py).
            enqueue_score_events(s, previous, row)
        return row


def commitment_json(
    session: Session, commitment_id: int | None, proof: list | None, value_hash: str
) -> dict[str, Any]:
    commitment = session.get(Commitment, commitment_id) if commitment_id else None
    if commitment is None or commitment.status != "committed":
        return {"status": "pending", "valueHash": value_hash}
    return {
        "status": "committed",
        "valueHash": value_hash,
        "topic": commitment.topic,
        "root": commitment.root,
        "proof": proof,
        "count": commitment.count,
        "seq": commitment.seq,
        "transactionHash": commitment.tx_hash,
        "blockNumber": commitment.block_number,
        "blockTimestamp": commitment.block_timestamp,
    }


def score_json(session: Session, row: Score) -> dict[str, Any]:
    return {
        **row.response,
        "responseHash": row.response_hash,
        "trigger": row.trigger,
        "publishedAt": row.created_at.isoformat(),
        "day": row.day,
        "supersededBy": row.superseded_by,
        "commitment": commitment_json(session, row.commitment_id, row.proof, row.response_hash),
    }


# -- incidents and responsibility ------------------------------------------------------------


def publish_matrix(ctx: ServiceContext, incident_id: str) -> Responsibility | None:
    """(Re)compute the incident's matrix from the evidence anchored now; store a new version
    only when it differs from the stored ones."""
    with ctx.sessions() as s:
        incident = s.get(Incident, incident_id)
        if incident is None:
            return None
        body = IncidentBody.model_validate(incident.body)
        items = evidence_items(s, {lot.supplier_id for lot in body.lots})
    matrix = responsibility_matrix(body, items, **_defect_model(ctx, body))
    digest = matrix_hash(matrix)
    with ctx.sessions() as s, s.begin():
        row = s.scalar(select(Responsibility).where(Responsibility.matrix_hash == digest))
        if row is None:
            row = Responsibility(
                incident_id=incident_id,
                version=matrix.version,
                matrix=matrix.model_dump(mode="json"),
                matrix_hash=digest,
            )
            s.add(row)
            s.flush()
        return row


def _defect_model(ctx: ServiceContext, incident: IncidentBody) -> dict[str, Any]:
    """The anchored federated model as the matrix's risk model, for the suppliers that shared
    process readings of their incident lots; nothing when no model or no readings."""
    readings: dict[str, list[dict[str, float | str]]] = defaultdict(list)
    for lot in incident.lots:
        readings[lot.supplier_id].extend(lot.process)
    held = current_model(ctx) if any(readings.values()) else None
    if held is None:
        return {}
    model = held[0]

    def risk(supplier_id: str, _items: Sequence[EvidenceItem]) -> float | None:
        rows = readings.get(supplier_id)
        return float(predict_defect_risk(model, rows).mean()) if rows else None

    return {"risk_model": risk, "risk_model_id": model.hash_hex}


def matrix_of(row: Responsibility) -> ResponsibilityMatrix:
    return ResponsibilityMatrix.model_validate(row.matrix)
