"""Response documents: the schema of each route's 200/201 answer, as OpenAPI publishes it.

Routes build their answers as plain JSON (no model object per response on the hot path: a
ranking of 10,000 suppliers is built once, not validated 10,000 times) and name these models in
``responses=`` so that clients and generators see every field. That the answers match is checked
where it is cheap and complete: schemathesis validates every response against these schemas
(tests/api/test_schemathesis.py), and each route's own tests validate its answer on real evidence
with ``tests.helpers.assert_documented`` (valid, and no member the schema does not name);
tests/api/test_errors.py checks that no 2xx answer is published as a bare object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.webhooks import EventType
from credit.responsibility import Incident, ResponsibilityDecision, ResponsibilityMatrix
from credit.score import CreditResponse
from ledger.receipts import Receipt
from ledger.tlog import LogProof


def documented(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry naming ``model`` as the schema of the ``status`` answer."""
    return {status: {"model": model}}


class Commitment(BaseModel):
    """Where a published value (score, matrix) stands on chain: pending, or in a committed
    CommitmentLog batch with its Merkle proof."""

    status: Literal["pending", "committed"]
    valueHash: str
    topic: str | None = None
    root: str | None = None
    proof: list[str] | None = None
    count: int | None = None
    seq: int | None = None
    transactionHash: str | None = None
    blockNumber: int | None = None
    blockTimestamp: int | None = None
    verifiedOnChain: bool | None = Field(
        None, description="GET /v1/scores/{hash} only: the proof checked against the chain now"
    )


class ScoreDocument(CreditResponse):
    """A credit reading. Published: stored, with its hash, day and commitment. What-if (another
    window or instant): ``reading`` "what_if", ``commitment`` null, none of the stored fields."""

    responseHash: str | None = None
    trigger: str | None = None
    publishedAt: str | None = None
    day: int | None = Field(None, description="UTC day (days since 1970-01-01) of as_of")
    supersededBy: str | None = Field(
        None, description="a later reading of the same day that replaced this one"
    )
    commitment: Commitment | None = None


class RankingGate(BaseModel):
    outcome: Literal["pass", "fail"] | None
    policy: str | None
    distance: float | None


class RankingRow(BaseModel):
    supplierId: str
    score: float | None
    status: Literal["scored", "insufficient_evidence"]
    band: str
    gate: RankingGate
    trend: float | None
    reasonCodes: list[str]
    evidenceCount: int
    asOf: int
    responseHash: str


class Unavailable(BaseModel):
    supplierId: str
    code: str
    reason: str


class Ranking(BaseModel):
    suppliers: list[RankingRow]
    count: int
    unavailable: list[Unavailable] = Field(
        description="suppliers whose score cannot be computed now, with the reason"
    )


class HistoryEntry(BaseModel):
    score: float | None
    band: str
    gate: Literal["pass", "fail"] | None
    asOf: int
    day: int
    policy: str
    trigger: str
    modelVersion: str
    responseHash: str
    publishedAt: str
    committed: bool


class History(BaseModel):
    supplierId: str
    history: list[HistoryEntry] = Field(description="one per (policy, day), oldest first")


class MatrixDocument(ResponsibilityMatrix):
    matrixHash: str
    decisions: list[ResponsibilityDecision]
    commitment: Commitment


class IncidentOpened(BaseModel):
    incident: Incident
    responsibility: MatrixDocument


class IncidentListed(Incident):
    openedBy: str
    createdAt: str


class IncidentList(BaseModel):
    incidents: list[IncidentListed]


class RoundRecorded(BaseModel):
    runId: str
    round: int
    modelHash: str
    participants: list[str]


class ModelRoundView(BaseModel):
    round: int
    modelHash: str
    participants: int
    suppliers: list[str]
    metrics: dict[str, float]
    anchoredAt: int


class ModelRun(BaseModel):
    runId: str
    rounds: list[ModelRoundView]
    finalModelHash: str
    modelFileHeld: bool


class ModelList(BaseModel):
    runs: list[ModelRun]


class ModelFileStored(BaseModel):
    runId: str
    round: int
    modelHash: str


class Prediction(BaseModel):
    modelHash: str
    runId: str
    round: int
    risks: list[float]


class RecordSummary(BaseModel):
    structHash: str
    kind: str
    subject: str
    signer: str
    signerRole: str
    partNumber: str
    lotId: str
    eventTime: int
    signedAt: int
    quantity: int
    defects: int
    status: Literal["pending", "anchored"]
    batchId: int | None
    receivedAt: str | None


class RecordList(BaseModel):
    records: list[RecordSummary]
    limit: int
    offset: int


class RecordDocument(RecordSummary):
    signed: dict[str, Any] = Field(description="the signed envelope exactly as submitted")


class ReceiptPending(BaseModel):
    structHash: str
    status: Literal["pending"]


class SupersededReceiptView(BaseModel):
    receipt: dict[str, Any]
    supersededAt: str
    reconciliationId: int
    reason: str
    detail: str


class ReceiptHistory(BaseModel):
    structHash: str
    current: Receipt | None
    superseded: list[SupersededReceiptView]


class CheckView(BaseModel):
    check: str
    ok: bool
    detail: str
    skipped: bool | None = None


class VerificationDocument(BaseModel):
    ok: bool
    failedCheck: str | None
    reason: str | None
    checks: list[CheckView]


# -- chain ------------------------------------------------------------------------------------


class LostAnchor(BaseModel):
    """Where the batch stood on chain before the chain lost it (null where it was not seen)."""

    batchId: int | None
    transactionHash: str | None
    blockNumber: int | None
    blockHash: str | None


class Reanchored(BaseModel):
    batchId: int | None
    transactionHash: str | None
    at: str


class ReconciliationView(BaseModel):
    id: int
    batch: int = Field(description="the service's batch id")
    root: str
    leafCount: int
    reason: str = Field(description="root_missing | batch_id_mismatch | block_not_canonical")
    detail: str
    detectedAt: str
    lost: LostAnchor
    reanchored: Reanchored | None = Field(description="null until the batch is anchored again")


class ReconciliationList(BaseModel):
    reconciliations: list[ReconciliationView] = Field(description="newest first")
    limit: int
    offset: int


# -- transparency log -------------------------------------------------------------------------


class LogKey(BaseModel):
    origin: str = Field(description="the checkpoints' origin line")
    vkey: str = Field(description="the log's C2SP verifier key")


class ConsistencyProof(BaseModel):
    from_: int = Field(alias="from")
    to: int
    proof: list[str] = Field(description="RFC 9162 consistency proof, 0x-hex, RFC order")


class CosignatureStored(BaseModel):
    size: int
    witness: str = Field(description="the witness's verifier key")
    stored: bool
    duplicate: bool = Field(description="this witness had already cosigned this checkpoint")


class CertificateCommitment(BaseModel):
    topic: str
    root: str
    proof: list[str]


class ScoreCertificate(BaseModel):
    """A portable score certificate: RFC 8785 canonical JSON, verified offline by
    ``qledger verify-score`` (ledger/tlog/verify.py reads exactly these members)."""

    format: Literal["qledger-score-certificate/v1"]  # ledger.tlog.verify.CERTIFICATE_FORMAT
    score: CreditResponse = Field(description="the published response, as hashed")
    responseHash: str = Field(description="keccak256 of the score's canonical JSON")
    commitment: CertificateCommitment
    log: LogProof


# -- health -----------------------------------------------------------------------------------


class RoleFollowerStatus(BaseModel):
    """All null before the follower's first read; the last two appear once it has read."""

    cursorBlock: int | None
    chainTip: int | None
    lagBlocks: int | None
    syncedAt: str | None
    secondsSinceSync: float | None = None
    stale: bool | None = Field(
        None, description="not synced for longer than a poll, a refresh and one backoff"
    )


class ServiceStatus(BaseModel):
    roles: RoleFollowerStatus


# -- webhooks ---------------------------------------------------------------------------------


class WebhookView(BaseModel):
    id: str
    ownerOrg: str
    createdBy: str
    url: str
    eventTypes: list[EventType]
    scoreThreshold: float
    createdAt: str


class WebhookCreated(WebhookView):
    secret: str = Field(description="the signing secret (whsec_...): shown only in this answer")


class WebhookList(BaseModel):
    webhooks: list[WebhookView]


class WebhookDeleted(BaseModel):
    id: str
    deleted: Literal[True]
    cancelledDeliveries: int


class DeliveryView(BaseModel):
    id: int
    msgId: str
    eventType: str
    status: Literal["pending", "delivered", "failed", "cancelled"]
    attempts: int
    lastStatus: int | None
    lastError: str | None
    nextAttemptAt: str | None = Field(description="null unless pending")
    createdAt: str
    deliveredAt: str | None
    payload: dict[str, Any] = Field(description="the event body as sent (docs/webhooks.md)")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView] = Field(description="newest first")


# -- EPCIS ------------------------------------------------------------------------------------
# The shape qledger writes (traceability/epcis/mapping.py): every document also validates against
# GS1's vendored EPCIS 2.0 JSON schema (traceability/epcis/schema), which stays the authority
# on the event fields; this is its top level and the members each exported event carries.


class EpcisId(BaseModel):
    id: str


class EpcisEvent(BaseModel):
    """One EPCIS 2.0 event. Beyond the members named here, qledger's extension members
    (``qledger:<payload field>``) carry what EPCIS has no field for."""

    model_config = ConfigDict(extra="allow")

    type: Literal["ObjectEvent", "AggregationEvent", "TransformationEvent"]
    eventTime: str
    eventTimeZoneOffset: str
    recordTime: str
    eventID: str = Field(description="urn:qledger:record:<struct hash>")
    action: Literal["ADD", "OBSERVE", "DELETE"] | None = None
    bizStep: str | None = None
    disposition: str | None = None
    readPoint: EpcisId | None = None
    bizLocation: EpcisId | None = None
    quantityList: list[dict[str, Any]] | None = None
    bizTransactionList: list[dict[str, Any]] | None = None
    sensorElementList: list[dict[str, Any]] | None = None
    parentID: str | None = None
    childEPCs: list[str] | None = None
    childQuantityList: list[dict[str, Any]] | None = None
    inputEPCList: list[str] | None = None
    inputQuantityList: list[dict[str, Any]] | None = None
    outputEPCList: list[str] | None = None
    outputQuantityList: list[dict[str, Any]] | None = None
    transformationID: str | None = None
    record: dict[str, Any] = Field(
        alias="qledger:record", description="the signed record's fields and its structHash"
    )
    signature: str = Field(alias="qledger:signature")
    domain: dict[str, Any] = Field(alias="qledger:domain")
    lots: dict[str, Any] | None = Field(
        None, alias="qledger:lots", description="what a lot's URI alone does not say"
    )


class EpcisBody(BaseModel):
    eventList: list[EpcisEvent]


class EpcisDocument(BaseModel):
    """An EPCIS 2.0 EPCISDocument (JSON-LD), valid against GS1's EPCIS 2.0 JSON schema."""

    context: list[Any] = Field(
        alias="@context", description="GS1's EPCIS 2.0 context and qledger's extension terms"
    )
    type: Literal["EPCISDocument"]
    schemaVersion: Literal["2.0"]  # traceability.epcis.mapping.SCHEMA_VERSION
    creationDate: str
    epcisBody: EpcisBody
