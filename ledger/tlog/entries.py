"""What the transparency log holds, and the proof a receipt or certificate carries.

Entries (the RFC 6962 leaf data, in the order things became final):
- a record, once its batch is confirmed: ``0x01 || structHash || batch root`` (the batch
  root binds the receipt's OpenZeppelin proof to the log, so offline the whole path is checked);
- a commitment of published artefacts (scores, responsibility matrices), once committed on
  chain: ``0x02 || topic id || commitment root``.
The tag byte keeps the two kinds apart; tree size = entries so far.
"""

from __future__ import annotations

import base64
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ledger.tlog.errors import LogError
from ledger.tlog.note import (
    SignedCheckpoint,
    Verifier,
    open_checkpoint,
)
from ledger.tlog.tree import leaf_hash, verify_consistency, verify_inclusion

RECORD_ENTRY = 0x01
COMMITMENT_ENTRY = 0x02
HEX32 = r"^0x[0-9a-f]{64}$"
# The origin line's host part: a schema-less name, not a reachable URL (tlog-checkpoint allows
# that); chain id and lowercase contract address make it unique per ledger deployment, the same
# pair the EIP-712 domain names.
ORIGIN_HOST = "qledger.local"


def ledger_origin(chain_id: int, contract: str) -> str:
    return f"{ORIGIN_HOST}/{chain_id}/{contract.lower()}"


def _b32(value: bytes | str) -> bytes:
    raw = bytes.fromhex(value[2:]) if isinstance(value, str) else value
    if len(raw) != 32:
        raise LogError("entry_format", "expected a 32-byte hash", got=len(raw))
    return raw


def record_entry(struct_hash: bytes | str, batch_root: bytes | str) -> bytes:
    return bytes([RECORD_ENTRY]) + _b32(struct_hash) + _b32(batch_root)


def commitment_entry(topic_id: bytes | str, root: bytes | str) -> bytes:
    return bytes([COMMITMENT_ENTRY]) + _b32(topic_id) + _b32(root)


class LogProof(BaseModel):
    """A log entry's inclusion proof and the signed (cosigned) checkpoint it leads to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: Annotated[int, Field(ge=0)]
    treeSize: Annotated[int, Field(gt=0)]
    inclusion: list[Annotated[str, Field(pattern=HEX32)]]
    checkpoint: Annotated[str, Field(min_length=1, max_length=64 * 1024)]


def check_inclusion(entry: bytes, proof: LogProof, signed: SignedCheckpoint) -> None:
    """``entry`` is at ``proof.index`` in the tree of the (already opened) checkpoint, of the
    size the proof names. Raises ``LogError``."""
    if signed.checkpoint.size != proof.treeSize:
        raise LogError(
            "log_inclusion",
            "the proof is for another tree size than the checkpoint",
            expected=signed.checkpoint.size,
            got=proof.treeSize,
        )
    verify_inclusion(
        proof.index,
        proof.treeSize,
        leaf_hash(entry),
        [bytes.fromhex(h[2:]) for h in proof.inclusion],
        signed.checkpoint.root,
    )


def check_log_proof(
    entry: bytes,
    proof: LogProof,
    log_key: Verifier,
    *,
    origin: str,
    witnesses: list[Verifier] | tuple[Verifier, ...] = (),
    quorum: int = 0,
) -> SignedCheckpoint:
    """Checkpoint signed by the log key for ``origin``, cosigned by ``quorum`` witnesses, of
    the size the proof names, and ``entry`` at ``proof.index`` in it. Raises ``LogError``."""
    signed = open_checkpoint(
        proof.checkpoint, log_key, origin=origin, witnesses=witnesses, quorum=quorum
    )
    check_inclusion(entry, proof, signed)
    return signed


def check_consistent(
    older_note: str,
    newer_note: str,
    proof: list[bytes],
    log_key: Verifier,
    *,
    origin: str | None = None,
) -> tuple[SignedCheckpoint, SignedCheckpoint]:
    """Both checkpoints signed by the log key (same origin) and the newer extends the older
    (``consistency_proof``); raises ``LogError`` naming the failed check."""
    older = open_checkpoint(older_note, log_key, origin=origin)
    newer = open_checkpoint(newer_note, log_key, origin=origin)
    verify_consistency(
        older.checkpoint.size,
        newer.checkpoint.size,
        proof,
        older.checkpoint.root,
        newer.checkpoint.root,
    )
    return older, newer


def hex_hashes(hashes: list[bytes]) -> list[str]:
    return ["0x" + h.hex() for h in hashes]


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()
