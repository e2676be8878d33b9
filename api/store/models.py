"""Tables. A record and its outbox row are written in one transaction before the API answers;
the anchorer moves outbox rows into exactly one batch (``outbox.batch_id`` is set once, under a
row lock / SQLite's single writer) and deletes them only after the batch is confirmed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Participant(Base):
    """The keys this service registered (names, organisation), their status kept true to the
    chain from the mirrored ``role_events`` (a revocation made on chain directly shows here).
    Intake answers which role a key holds from ``role_events`` itself, for every key."""

    __tablename__ = "participants"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)


class RoleEventRow(Base):
    """Mirror of the ledger's role and registration events (chain order: block, log index).

    Written by the role follower from the chain's logs and by the service right after its own
    register/revoke transactions; a (block, log index) is stored once, whoever saw it first.
    Intake answers "which role does this key hold" from these rows, never from the chain.
    """

    __tablename__ = "role_events"
    __table_args__ = (
        UniqueConstraint("block_number", "log_index", name="uq_role_events_block_log"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(42), index=True)
    role: Mapped[str] = mapped_column(String(16))
    org_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ChainCursor(Base):
    """How far a chain follower has read: every block up to ``block_number`` is applied.

    ``block_hash`` detects a reorganisation deeper than the follower's confirmations;
    ``tip`` and ``synced_at`` (the last successful poll) give its lag."""

    __tablename__ = "chain_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    tip: Mapped[int] = mapped_column(BigInteger)
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped when the follower rebuilds from scratch, so every process drops what it folded.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # The chain answers but the ledger contract is gone (a reset chain): the mirror is kept as
    # it was and intake answers 503 ledger_contract_missing until the chain is restored.
    ledger_missing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Batch(Base):
    """One Merkle tree. Status: built -> sent -> anchored -> confirmed. A confirmed batch the
    chain lost goes back to built (same root, re-anchored as a new on-chain batch); its old
    receipts are kept in ``superseded_receipts``, the event in ``reconciliations``. Its leaves
    are the outbox rows with its id until it is confirmed, then the records with its id: the
    tree (and each receipt's proof) is derived from those, never stored."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("chain_batch_id", name="uq_batches_chain_batch_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(String(66), unique=True)
    leaf_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True, default="built")
    # The on-chain batch id: one store batch per chain batch (a chain that forgot batches hands
    # their ids out again; the store must not then hold two batches claiming one id).
    chain_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gas_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# Partial indexes (migration 0018): intake writes every record with batch_id NULL and the
# anchorer sets it later, so an index of the anchored rows only costs intake nothing; the
# outbox's queue order is needed only for the rows not yet claimed. Both SQLite and PostgreSQL
# use a partial index where the query's WHERE implies its condition (batch_id = ?, a join on
# batch_id, batch_id IS NULL), which is every query on these columns.
ANCHORED = text("batch_id IS NOT NULL")
UNCLAIMED = text("batch_id IS NULL")


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (
        # Its leading column also answers every query by signer (migration 0018 dropped the
        # separate ix_records_signer).
        UniqueConstraint("signer", "nonce", name="uq_records_signer_nonce"),
        Index("ix_records_subject_kind", "subject", "kind"),
        Index("ix_records_batch_id", "batch_id", sqlite_where=ANCHORED, postgresql_where=ANCHORED),
    )

    struct_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    signer: Mapped[str] = mapped_column(String(42))
    signer_role: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    part_number: Mapped[str] = mapped_column(String(64))
    lot_id: Mapped[str] = mapped_column(String(64))
    event_time: Mapped[int] = mapped_column(BigInteger)
    signed_at: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(BigInteger)
    defects: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[int] = mapped_column(BigInteger)
    salt: Mapped[str] = mapped_column(String(66))
    payload_hash: Mapped[str] = mapped_column(String(66))
    payload: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(132))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(42))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set in the transaction that confirms the record's batch, and never changed after (a
    # batch the chain lost is re-anchored with the same records). A batch's leaves are exactly
    # its records, so every receipt's proof is derived from them (api.batch_trees). Indexed
    # for the anchored rows only (ix_records_batch_id above, migration 0018).
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    # Retired by migration 0017 (proofs derived on demand, not stored): always NULL; intake
    # leaves it to its default. A later migration can drop the column.
    proof: Mapped[list | None] = mapped_column(JSON, nullable=True)


class Reconciliation(Base):
    """A confirmed batch the chain no longer held as anchored (rolled back, reset, reorganised
    deeper than the confirmation depth), and its re-anchoring."""

    __tablename__ = "reconciliations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    root: Mapped[str] = mapped_column(String(66))
    leaf_count: Mapped[int] = mapped_column(Integer)
    # root_missing | batch_id_mismatch | block_not_canonical
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    lost_chain_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lost_tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    lost_block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lost_block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    new_chain_batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    new_tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    reanchored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SupersededReceipt(Base):
    """A receipt the service issued and then withdrew because the chain lost its batch. Kept
    as issued, forever: whoever holds it can learn why it no longer verifies."""

    __tablename__ = "superseded_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    struct_hash: Mapped[str] = mapped_column(ForeignKey("records.struct_hash"), index=True)
    reconciliation_id: Mapped[int] = mapped_column(ForeignKey("reconciliations.id"), index=True)
    receipt: Mapped[dict] = mapped_column(JSON)
    superseded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Outbox(Base):
    """Pending leaves. A row exists from intake until its batch is confirmed on chain."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The queue the anchorer claims from, in order; and a claimed batch's rows.
        Index("ix_outbox_seq", "seq", sqlite_where=UNCLAIMED, postgresql_where=UNCLAIMED),
        Index("ix_outbox_batch_id", "batch_id", sqlite_where=ANCHORED, postgresql_where=ANCHORED),
    )

    struct_hash: Mapped[str] = mapped_column(ForeignKey("records.struct_hash"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuthChallenge(Base):
    """Single-use sign-in challenges (EIP-4361 messages). Expired and used ones are purged
    whenever a challenge is issued (indexes: expiry for the purge, address for the cap)."""

    __tablename__ = "auth_challenges"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    message: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class RevokedToken(Base):
    """Bearer tokens ended before their expiry (sign-out). A row can go once the token has
    expired anyway; revoking prunes those."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class Commitment(Base):
    """A Merkle root of published artefacts (score responses, responsibility matrices)
    committed through CommitmentLog. Status: built -> committed."""

    __tablename__ = "commitments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(40))
    root: Mapped[str] = mapped_column(String(66), unique=True)
    count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="built")
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Score(Base):
    """Every published credit response (score history); committed on chain in batches."""

    __tablename__ = "scores"
    __table_args__ = (
        Index("ix_scores_supplier_created", "supplier_id", "id"),
        Index("ix_scores_supplier_policy_day", "supplier_id", "policy", "day"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    supplier_id: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[float | None] = mapped_column(nullable=True)  # None: insufficient evidence
    band: Mapped[str] = mapped_column(String(32))
    gate_outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_version: Mapped[str] = mapped_column(String(80))
    evidence_root: Mapped[str] = mapped_column(String(66))
    trigger: Mapped[str] = mapped_column(String(16), default="request")
    response: Mapped[dict] = mapped_column(JSON)
    response_hash: Mapped[str] = mapped_column(String(66), unique=True)
    commitment_id: Mapped[int | None] = mapped_column(
        ForeignKey("commitments.id"), nullable=True, index=True
    )
    proof: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # One published score per (supplier, policy, UTC day of as_of) (issue 16): a later reading
    # of the same day (newer anchors) supersedes the earlier one, which stays stored and, if
    # committed, verifiable, but leaves the history.
    policy: Mapped[str] = mapped_column(String(80), default="")
    day: Mapped[int] = mapped_column(Integer, default=0)
    superseded_by: Mapped[str | None] = mapped_column(String(66), nullable=True)


class Incident(Base):
    __tablename__ = "incidents"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[dict] = mapped_column(JSON)
    opened_by: Mapped[str] = mapped_column(String(42))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Responsibility(Base):
    """A published responsibility matrix version for an incident."""

    __tablename__ = "responsibility"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.incident_id"), index=True)
    version: Mapped[str] = mapped_column(String(80))
    matrix: Mapped[dict] = mapped_column(JSON)
    matrix_hash: Mapped[str] = mapped_column(String(66), unique=True)
    commitment_id: Mapped[int | None] = mapped_column(
        ForeignKey("commitments.id"), nullable=True, index=True
    )
    proof: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Decision(Base):
    """A supplier's signed acceptance or dispute of one matrix version."""

    __tablename__ = "responsibility_decisions"
    __table_args__ = (
        UniqueConstraint("matrix_hash", "supplier_id", name="uq_decision_matrix_supplier"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    matrix_hash: Mapped[str] = mapped_column(String(66), index=True)
    incident_id: Mapped[str] = mapped_column(String(64))
    supplier_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelRound(Base):
    """One federated round as anchored in ModelRegistry, with who took part (the server knows
    which suppliers replied even under SecAgg+); participation feeds the credit feature."""

    __tablename__ = "model_rounds"
    __table_args__ = (UniqueConstraint("run_id", "round", name="uq_model_round"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(66), index=True)
    round: Mapped[int] = mapped_column(Integer)
    model_hash: Mapped[str] = mapped_column(String(66))
    participants: Mapped[list] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)


class LogEntry(Base):
    """One leaf of the transparency log, in the order things became final (ledger.tlog)."""

    __tablename__ = "log_entries"
    # One entry per leaf data: a record re-anchored in another batch (a chain that lost the
    # first) gets a second entry naming the new batch root; the old one stays (append-only).
    __table_args__ = (
        UniqueConstraint("data", name="uq_log_entries_data"),
        Index("ix_log_entries_ref", "ref"),
    )

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # "record" | "commitment"
    ref: Mapped[str] = mapped_column(String(66))  # struct hash, or commitment root
    data: Mapped[str] = mapped_column(String(140))  # hex of the leaf data (65 bytes)
    leaf_hash: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LogCheckpoint(Base):
    """A checkpoint the service signed (C2SP tlog-checkpoint note, log signature only)."""

    __tablename__ = "log_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(66))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LogCosignature(Base):
    """A witness's verified cosignature line (C2SP tlog-cosignature) on one checkpoint."""

    __tablename__ = "log_cosignatures"
    __table_args__ = (UniqueConstraint("size", "vkey", name="uq_log_cosignatures_size_vkey"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(ForeignKey("log_checkpoints.size"), index=True)
    vkey: Mapped[str] = mapped_column(String(300))
    line: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookSubscription(Base):
    """An OEM's (purchasing's) or an admin's webhook endpoint (docs/webhooks.md).

    ``secret`` is the Standard Webhooks signing key (``whsec_`` + base64). It is a symmetric
    HMAC key, so it is stored as issued (the service must sign with it); it is shown once, at
    creation, and never answered, listed nor logged afterwards. A deleted subscription keeps its
    row (``active`` false) so its delivery log stays explainable."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_org: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(42))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list] = mapped_column(JSON)
    score_threshold: Mapped[float] = mapped_column()
    secret: Mapped[str] = mapped_column(String(120))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookDelivery(Base):
    """One event to one subscription, and its delivery log: written in the transaction that
    publishes the score, so a restart loses nothing; the dispatcher claims due rows, posts the
    exact stored ``body`` (a retry sends the same bytes and ``msg_id``) and records the outcome."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class GenealogyLink(Base):
    """One as-built link (issue 19): ``child`` went into ``parent``, as the record
    ``struct_hash`` (an aggregation or transformation) says. Written in the same transaction as
    the record; a (child, parent) pair is stored once (a second record stating it is refused).
    Node keys are ``maker|partNumber|lotId`` (traceability.genealogy.node_key)."""

    __tablename__ = "genealogy_links"
    __table_args__ = (
        UniqueConstraint("child", "parent", name="uq_genealogy_links_child_parent"),
        # Covering indexes, one per direction (where-used reads child -> parents, where-from
        # parent -> children): a walk step reads every column it needs from the index alone,
        # never the table row (on SQLite a second B-tree search per link; scripts/bench_trace).
        Index(
            "ix_genealogy_links_child_cover",
            "child",
            "parent",
            "struct_hash",
            "kind",
            "event_time",
            "site",
        ),
        Index(
            "ix_genealogy_links_parent_cover",
            "parent",
            "child",
            "struct_hash",
            "kind",
            "event_time",
            "site",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    child: Mapped[str] = mapped_column(String(194))
    parent: Mapped[str] = mapped_column(String(194))
    struct_hash: Mapped[str] = mapped_column(ForeignKey("records.struct_hash"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    event_time: Mapped[int] = mapped_column(BigInteger)
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Notification(Base):
    """One quality notification (issue 19) and its state: the fold of its transitions, written
    in the same transaction as the record that moved it (api/notification_intake.py)."""

    __tablename__ = "notifications"

    notification_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(64), index=True)
    recipient: Mapped[str] = mapped_column(String(64), index=True)
    origin_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The sender's due date for an answer (accepted or declined); compared with chain time.
    deadline: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_hash: Mapped[str] = mapped_column(String(66))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotificationEvent(Base):
    """One transition of a notification: the record that took it, in intake order. The unique
    (notification, seq) makes two concurrent writers of one thread collide, so the second is
    re-checked against the first's state instead of both passing."""

    __tablename__ = "notification_events"
    __table_args__ = (
        UniqueConstraint("notification_id", "seq", name="uq_notification_events_seq"),
    )

    struct_hash: Mapped[str] = mapped_column(ForeignKey("records.struct_hash"), primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    transition: Mapped[str] = mapped_column(String(16))
    signer_org: Mapped[str] = mapped_column(String(64))
