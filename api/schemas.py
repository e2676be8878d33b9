"""Response documents: the schema of each route's 200/201 answer, as OpenAPI publishes it.

Routes build their answers as plain JSON (no model object per response on the hot path: a
ranking of 10,000 suppliers is built once, not validated 10,000 times) and name these models in
``responses=`` so that clients and generators see every field. That the answers match is checked
where it is cheap and complete: schemathesis validates every response against these schemas
(tests/api/test_schemathesis.py), and tests/api/test_response_schemas.py validates each route's
answer on real evidence.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from credit.responsibility import Incident, ResponsibilityDecision, ResponsibilityMatrix
from credit.score import CreditResponse
from ledger.receipts import Receipt


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
