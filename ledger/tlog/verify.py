"""Verification with no RPC: a receipt, or a score certificate, against a pinned log key and
k-of-n pinned witness keys; and a receipt's checkpoint against a newer one (append-only).

What is checked offline: the signature and struct hash of the record, the OpenZeppelin proof
to the batch root, that ``record || batch root`` is an entry of the log at the checkpoint the
receipt names, that the pinned log key signed that checkpoint for this ledger's origin, and
that ``quorum`` of the pinned witnesses cosigned it (each witness checked that the log only
ever grew). What is not: the signer's role on chain at signing time (an RPC check; offline it
rests on the service having checked it and on the witnesses' view being the only one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from ledger._hash import keccak
from ledger.canonical import canonical_json
from ledger.errors import InvalidRecord, LedgerError
from ledger.merkle import leaf_hash as oz_leaf_hash
from ledger.merkle import process_proof
from ledger.receipts import Receipt
from ledger.records import SignedRecord
from ledger.tlog.entries import (
    LogProof,
    check_consistent,
    check_inclusion,
    commitment_entry,
    ledger_origin,
    record_entry,
)
from ledger.tlog.errors import LogError
from ledger.tlog.note import SignedCheckpoint, Verifier, open_checkpoint
from ledger.trust import TrustRoot
from ledger.verify import Check, VerificationReport, check_record, parse_receipt

CERTIFICATE_FORMAT = "qledger-score-certificate/v1"

_CODE_TO_CHECK = {
    "note_format": Check.NOTE_FORMAT,
    "entry_format": Check.NOTE_FORMAT,
    "checkpoint_signature": Check.CHECKPOINT_SIGNATURE,
    "log_origin": Check.LOG_ORIGIN,
    "witness_key": Check.WITNESS_KEY,
    "key_type": Check.WITNESS_KEY,
    "cosignature": Check.COSIGNATURE,
    "witness_quorum": Check.WITNESS_QUORUM,
    "inclusion_proof": Check.LOG_INCLUSION,
    "log_inclusion": Check.LOG_INCLUSION,
    "tree_size": Check.LOG_INCLUSION,
    "leaf_index": Check.LOG_INCLUSION,
    "hash_size": Check.LOG_INCLUSION,
    "consistency_proof": Check.CONSISTENCY,
    "consistency_sizes": Check.CONSISTENCY,
}


def check_of(exc: LogError) -> Check:
    return _CODE_TO_CHECK.get(exc.code, Check.NOTE_FORMAT)


class CheckpointCache:
    """Each distinct checkpoint note opened once (its signatures are the costly part), for
    verifying many receipts that share checkpoints. Failures are remembered too."""

    def __init__(self) -> None:
        self._opened: dict[tuple[Any, ...], SignedCheckpoint | LogError] = {}

    def open(
        self,
        note: str,
        log_key: Verifier,
        origin: str,
        witnesses: Sequence[Verifier] = (),
        quorum: int = 0,
    ) -> SignedCheckpoint:
        key = self._key(note, log_key, origin, witnesses, quorum)
        found = self._opened.get(key)
        if found is None:
            try:
                found = open_checkpoint(
                    note, log_key, origin=origin, witnesses=witnesses, quorum=quorum
                )
            except LogError as exc:
                found = exc
            self._opened[key] = found
        if isinstance(found, LogError):
            raise found
        return found

    def opened(
        self,
        note: str,
        log_key: Verifier,
        origin: str,
        witnesses: Sequence[Verifier] = (),
        quorum: int = 0,
    ) -> SignedCheckpoint | LogError | None:
        """What :meth:`open` found for these arguments, without opening anything: None when it
        has not been asked (bulk verification's fast path reads, never opens)."""
        return self._opened.get(self._key(note, log_key, origin, witnesses, quorum))

    @staticmethod
    def _key(
        note: str, log_key: Verifier, origin: str, witnesses: Sequence[Verifier], quorum: int
    ) -> tuple[Any, ...]:
        return (note, log_key.vkey, origin, tuple(w.vkey for w in witnesses), quorum)

    def __len__(self) -> int:
        return len(self._opened)


def _log_checks(
    report: VerificationReport,
    entry: bytes,
    proof: LogProof,
    log_key: Verifier,
    origin: str,
    witnesses: Sequence[Verifier],
    quorum: int,
    checkpoints: CheckpointCache | None = None,
) -> bool:
    """Checkpoint (signature, origin), witness quorum, then inclusion: each its own check."""
    opener = checkpoints if checkpoints is not None else CheckpointCache()
    try:
        signed = opener.open(proof.checkpoint, log_key, origin)
        report.add(
            Check.CHECKPOINT_SIGNATURE,
            True,
            f"checkpoint {origin} size {signed.checkpoint.size} signed by {log_key.vkey}",
        )
        cosigned = opener.open(proof.checkpoint, log_key, origin, witnesses, quorum)
        report.add(
            Check.WITNESS_QUORUM,
            True,
            f"{len(cosigned.cosigned_by)} of {len(witnesses)} pinned witnesses cosigned "
            f"(quorum {quorum})",
        )
        check_inclusion(entry, proof, signed)
    except LogError as exc:
        report.add(check_of(exc), False, str(exc))
        return False
    report.add(
        Check.LOG_INCLUSION,
        True,
        f"entry {proof.index} of {proof.treeSize} folds to the checkpoint's root",
    )
    return True


def verify_receipt_offline(
    record: SignedRecord | dict[str, Any] | None,
    receipt: Receipt | dict[str, Any],
    *,
    log_key: Verifier,
    witnesses: Sequence[Verifier] = (),
    quorum: int = 0,
    trust: TrustRoot | None = None,
    checkpoints: CheckpointCache | None = None,
) -> VerificationReport:
    """Every check that needs no chain: see the module docstring.

    With ``trust`` (the auditor's pinned trust root) the receipt must name the pinned chain and
    ledger, and the log's origin is the pinned ledger's, never the one the receipt names.
    ``checkpoints`` shares opened checkpoints between calls (bulk verification).
    """
    report = VerificationReport()
    parsed = parse_receipt(report, receipt)
    if parsed is None:
        return report
    receipt = parsed
    chain_id, ledger = receipt.chainId, receipt.contract
    if trust is not None:
        chain_id, ledger = trust.chain_id, trust.ledger
        report.add(
            Check.TRUST_ROOT,
            receipt.chainId == trust.chain_id and receipt.contract.lower() == trust.ledger.lower(),
            f"receipt names {receipt.chainId}/{receipt.contract}, the pinned ledger is "
            f"{trust.chain_id}/{trust.ledger}",
        )
    checked = check_record(report, record, receipt)
    if checked is None:
        return report
    signed, struct_hash = checked
    report.add(
        Check.DOMAIN,
        signed.domain.chainId == receipt.chainId
        and signed.domain.verifyingContract.lower() == receipt.contract.lower(),
        f"domain {signed.domain.chainId}/{signed.domain.verifyingContract}, "
        f"receipt {receipt.chainId}/{receipt.contract}",
    )
    root = bytes.fromhex(receipt.root[2:])
    folded = process_proof(oz_leaf_hash(struct_hash), [bytes.fromhex(p[2:]) for p in receipt.proof])
    report.add(
        Check.PROOF,
        folded == root,
        "proof folds to the batch root"
        if folded == root
        else f"proof folds to 0x{folded.hex()}, not the receipt's root {receipt.root}",
    )
    if receipt.log is None:
        report.add(Check.LOG_INCLUSION, False, "the receipt carries no log proof")
        return report
    _log_checks(
        report,
        record_entry(struct_hash, root),
        receipt.log,
        log_key,
        ledger_origin(chain_id, ledger),
        witnesses,
        quorum,
        checkpoints,
    )
    return report


def check_against(
    report: VerificationReport,
    proof: LogProof | None,
    newer_note: str,
    consistency: Sequence[bytes],
    log_key: Verifier,
) -> bool:
    """The receipt's checkpoint is extended by ``newer_note`` (``consistency_proof``)."""
    if proof is None:
        return report.add(Check.CONSISTENCY, False, "the receipt carries no checkpoint")
    try:
        older, newer = check_consistent(
            proof.checkpoint, newer_note, list(consistency), log_key, origin=log_key.name
        )
    except LogError as exc:
        return report.add(check_of(exc), False, str(exc))
    return report.add(
        Check.CONSISTENCY,
        True,
        f"checkpoint {newer.checkpoint.size} extends the receipt's checkpoint "
        f"{older.checkpoint.size}",
    )


# -- score certificates ----------------------------------------------------------------------


def verify_certificate(
    raw: bytes,
    *,
    log_key: Verifier,
    witnesses: Sequence[Verifier] = (),
    quorum: int = 0,
) -> VerificationReport:
    """A portable score certificate, byte for byte: canonical JSON (RFC 8785) whose score
    hashes to ``responseHash``, which an OpenZeppelin proof puts under the commitment root,
    which is a log entry (with its topic) in a checkpoint the log key signed for this ledger
    and ``quorum`` pinned witnesses cosigned."""
    report = VerificationReport()
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise InvalidRecord("a certificate is a JSON object", got=type(data).__name__)
        if canonical_json(data) != raw:
            raise InvalidRecord("a certificate is exactly its RFC 8785 canonical JSON")
        if data.get("format") != CERTIFICATE_FORMAT:
            raise InvalidRecord("unknown certificate format", expected=CERTIFICATE_FORMAT)
        expected_keys = {"format", "score", "responseHash", "commitment", "log"}
        if set(data) != expected_keys:
            raise InvalidRecord("unexpected members", expected=sorted(expected_keys))
        commitment = data["commitment"]
        if not isinstance(commitment, dict) or set(commitment) != {"topic", "root", "proof"}:
            raise InvalidRecord("commitment is {topic, root, proof}")
        if not isinstance(commitment["topic"], str) or not isinstance(commitment["proof"], list):
            raise InvalidRecord("commitment topic is a string, proof a list")
        root = _hash32(commitment["root"])
        proof = [_hash32(p) for p in commitment["proof"]]
        response_hash = _hash32(data["responseHash"])
        log = LogProof.model_validate(data["log"])
        signed = open_checkpoint(log.checkpoint, log_key)  # origin = the pinned key's name
    except (ValueError, TypeError, KeyError, LedgerError, ValidationError) as exc:
        report.add(Check.CERTIFICATE_FORMAT, False, _reason(exc))
        return report
    report.add(Check.CERTIFICATE_FORMAT, True, CERTIFICATE_FORMAT)
    computed = keccak(canonical_json(data["score"]))
    report.add(
        Check.RESPONSE_HASH,
        computed == response_hash,
        f"keccak256(JCS(score)) = 0x{computed.hex()}, certificate says {data['responseHash']}",
    )
    folded = process_proof(oz_leaf_hash(response_hash), proof)
    report.add(
        Check.COMMITMENT_PROOF,
        folded == root,
        f"proof folds to 0x{folded.hex()}, commitment root {commitment['root']}",
    )
    _log_checks(
        report,
        commitment_entry(keccak(str(commitment["topic"]).encode()), root),
        log,
        log_key,
        signed.checkpoint.origin,
        witnesses,
        quorum,
    )
    return report


def _hash32(value: object) -> bytes:
    """A 0x + 64 lowercase hex digits hash: one spelling only, so no byte can change unseen."""
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-f]{64}", value):
        raise InvalidRecord("a hash is 0x + 64 lowercase hex digits", got=str(value)[:80])
    return bytes.fromhex(value[2:])


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
