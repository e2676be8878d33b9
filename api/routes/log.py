"""The transparency log: signed checkpoints, proofs, the log key, witness cosignatures, and
portable score certificates. Everything but the certificate is public: it reveals counts and
hashes only (record entries are salted struct hashes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.credit_service import commitment_json
from api.deps import Ctx, CurrentUser
from api.errors import ApiError
from api.routes.credit import _may_see
from api.schemas import (
    ConsistencyProof,
    CosignatureStored,
    LogKey,
    ScoreCertificate,
    documented,
)
from api.store.models import Commitment, Score
from api.tlog_service import (
    add_cosignature,
    checkpoint_note,
    consistency_proof,
    log_proof,
    log_signer,
    origin_of,
)
from ledger.canonical import canonical_json
from ledger.chain.types import topic_id
from ledger.tlog import LogProof, commitment_entry
from ledger.tlog.verify import CERTIFICATE_FORMAT

router = APIRouter(prefix="/v1/log", tags=["log"])
certificates = APIRouter(prefix="/v1", tags=["credit"])

NOTE_MEDIA_TYPE = "text/plain; charset=utf-8"  # C2SP notes are UTF-8 text
HEX32 = r"^0x[0-9a-fA-F]{64}$"
SizeParam = Annotated[int, Query(ge=1, le=2**62)]


@router.get("/key", responses=documented(LogKey))
def log_key(ctx: Ctx) -> dict[str, str]:
    """The log's verifier key (C2SP vkey) and origin: what an auditor pins."""
    return {"origin": origin_of(ctx), "vkey": log_signer(ctx).verifier.vkey}


@router.get("/checkpoint", response_class=PlainTextResponse)
def latest_checkpoint(ctx: Ctx) -> PlainTextResponse:
    """The latest signed checkpoint (C2SP tlog-checkpoint note) with its cosignatures."""
    return PlainTextResponse(checkpoint_note(ctx), media_type=NOTE_MEDIA_TYPE)


@router.get("/checkpoint/{size}", response_class=PlainTextResponse)
def checkpoint_at(size: int, ctx: Ctx) -> PlainTextResponse:
    if not 1 <= size <= 2**62:
        raise ApiError(404, "checkpoint_not_found", "no checkpoint at this tree size", got=size)
    return PlainTextResponse(checkpoint_note(ctx, size), media_type=NOTE_MEDIA_TYPE)


@router.get("/consistency", responses=documented(ConsistencyProof))
def consistency(
    ctx: Ctx,
    from_size: Annotated[int, Query(alias="from", ge=0, le=2**62)],
    to_size: Annotated[int, Query(alias="to", ge=0, le=2**62)],
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two tree sizes (0x-hex hashes, RFC order)."""
    proof = consistency_proof(ctx, from_size, to_size)
    return {"from": from_size, "to": to_size, "proof": ["0x" + h.hex() for h in proof]}


@router.get("/inclusion/{struct_hash}", responses=documented(LogProof))
def inclusion(
    struct_hash: str,
    ctx: Ctx,
    size: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """A record's log entry, its inclusion proof and the checkpoint at ``size`` (default: the
    newest cosigned checkpoint covering it, else the newest)."""
    if len(struct_hash) != 66 or not struct_hash.startswith("0x"):
        raise ApiError(422, "invalid_hash", "a struct hash is 0x + 64 hex digits", got=struct_hash)
    try:
        bytes.fromhex(struct_hash[2:])
    except ValueError as exc:
        raise ApiError(422, "invalid_hash", "a struct hash is 0x + 64 hex digits") from exc
    proof = log_proof(ctx, "record", struct_hash, size)
    if proof is None:
        raise ApiError(404, "not_logged", "no log entry for this struct hash (yet)")
    return proof.model_dump()


class CosignatureIn(BaseModel):
    size: Annotated[int, Field(ge=1, le=2**62)]
    vkey: Annotated[str, Field(min_length=1, max_length=300)]
    cosignature: Annotated[str, Field(min_length=1, max_length=1000)]


@router.post("/cosignatures", status_code=201, responses=documented(CosignatureStored, 201))
async def submit_cosignature(body: CosignatureIn, ctx: Ctx) -> dict[str, Any]:
    """A witness's cosignature line (C2SP tlog-cosignature) for the checkpoint at ``size``.
    Anyone may submit; only one that verifies against that checkpoint is kept."""
    return await run_in_threadpool(add_cosignature, ctx, body.size, body.vkey, body.cosignature)


# -- portable score certificates -------------------------------------------------------------


@certificates.get(
    "/suppliers/{supplier_id}/credit/certificate",
    responses=documented(ScoreCertificate),
)
def score_certificate(
    supplier_id: str,
    ctx: Ctx,
    user: CurrentUser,
    response_hash: Annotated[str | None, Query(pattern=HEX32)] = None,
) -> Response:
    """The supplier's newest committed score (or the one with ``response_hash``) as one file:
    the response, its commitment proof and a cosigned checkpoint covering the commitment.
    Canonical JSON (RFC 8785): ``qledger verify-score`` checks it byte for byte, offline."""
    _may_see(user, supplier_id)
    with ctx.sessions() as s:
        query = (
            select(Score, Commitment)
            .join(Commitment, Score.commitment_id == Commitment.id)
            .where(
                Score.supplier_id == supplier_id,
                Commitment.status == "committed",
                Score.proof.is_not(None),
            )
        )
        if response_hash is not None:
            query = query.where(Score.response_hash == response_hash.lower())
        found = s.execute(query.order_by(Score.id.desc()).limit(1)).first()
        if found is None:
            raise ApiError(
                404,
                "score_not_committed",
                "no committed score for this supplier yet (scores are committed with the next "
                "anchoring round)",
                got=supplier_id,
            )
        score, commitment = found
        committed = commitment_json(s, score.commitment_id, score.proof, score.response_hash)
    entry = commitment_entry(topic_id(commitment.topic), commitment.root)
    proof = log_proof(ctx, "commitment", commitment.root, data=entry)
    if proof is None:
        raise ApiError(404, "score_not_committed", "the score's commitment is not in the log yet")
    body = {
        "format": CERTIFICATE_FORMAT,
        "score": score.response,
        "responseHash": score.response_hash,
        "commitment": {
            "topic": commitment.topic,
            "root": committed["root"],
            "proof": committed["proof"],
        },
        "log": proof.model_dump(),
    }
    return Response(
        canonical_json(body),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="score-{supplier_id}.qcert.json"'},
    )
