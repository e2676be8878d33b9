"""Offline verification of a record and its receipt against the chain, trusting no service.

Every check runs and reports; the first failure is the reason given. Check names are stable
strings (the CLI and the API print them, tests assert them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from ledger.eip712 import record_struct_hash
from ledger.errors import ChainError, InvalidRecord, InvalidSignature
from ledger.merkle import leaf_hash, process_proof
from ledger.receipts import Receipt
from ledger.records import (
    KIND_SIGNER_ROLES,
    SELF_SUBJECT_KINDS,
    Role,
    SignedRecord,
    allowed_roles_text,
    load_signed_record,
)
from ledger.signing import check_signature
from ledger.trust import TrustRoot

# A signer's clock may run ahead of the chain's block timestamps by this much before a record
# counts as "signed after it was anchored" (5 minutes, the usual NTP-less office tolerance).
CLOCK_SKEW_SECONDS = 300

PARTICIPANT_ROLES = (Role.SUPPLIER, Role.OEM, Role.AUDITOR)


class Check(StrEnum):
    RECEIPT_FORMAT = "receipt_format"
    RECORD_FORMAT = "record_format"
    RECORD_MATCHES_RECEIPT = "record_matches_receipt"
    SIGNATURE = "signature"
    STRUCT_HASH = "struct_hash"
    DOMAIN = "domain_matches_contract"
    TRUST_ROOT = "trust_root"
    CHAIN_ID = "chain_id"
    PINNED_CHAIN = "rpc_serves_pinned_chain"
    SIGNER_ROLE = "signer_role_at_signing"
    KIND_ALLOWED = "kind_allowed_for_role"
    SUBJECT = "supplier_files_about_itself"
    PROOF = "merkle_proof"
    BLOCK_CANONICAL = "block_canonical"
    ANCHORED = "root_anchored"
    ANCHOR_DETAILS = "anchor_matches_receipt"
    SIGNED_BEFORE_ANCHOR = "signed_before_anchor"
    # Transparency-log checks (ledger.tlog.verify): offline, against a pinned log key and
    # witness keys instead of an RPC endpoint.
    NOTE_FORMAT = "note_format"
    CHECKPOINT_SIGNATURE = "checkpoint_signature"
    LOG_ORIGIN = "log_origin"
    WITNESS_KEY = "witness_key"
    COSIGNATURE = "cosignature"
    WITNESS_QUORUM = "witness_quorum"
    LOG_INCLUSION = "log_inclusion"
    CONSISTENCY = "consistency_proof"
    CERTIFICATE_FORMAT = "certificate_format"
    RESPONSE_HASH = "response_hash"
    COMMITMENT_PROOF = "commitment_proof"


class ChainReader(Protocol):
    """What verification needs from a chain (``ledger.chain.ChainClient`` provides it)."""

    @property
    def chain_id(self) -> int: ...

    @property
    def ledger_address(self) -> str | None:
        """The QualityLedger this reader asks (the pinned one, never the receipt's)."""
        ...

    def block_hash(self, number: int) -> str | None:
        """0x-hex hash of the canonical block at ``number``; None beyond the tip."""
        ...

    def role_history(self, account: str, role: Role) -> list[tuple[int, int]]: ...

    def org_of(self, account: str) -> str | None: ...

    def anchored_at(self, root: bytes) -> Any: ...

    def verify_record_on_chain(
        self, root: bytes, proof: list[bytes], struct_hash: bytes
    ) -> bool: ...

    def transaction_block(self, tx_hash: str) -> tuple[int, str] | None:
        """(block number, ``to`` address) of a successful transaction, None if unknown/failed."""
        ...


@dataclass(frozen=True)
class CheckResult:
    check: Check
    ok: bool
    detail: str
    # A check that could not be run (e.g. an old receipt without blockHash): it fails nothing,
    # and says so, so that nobody reads "ok" as "checked".
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check.value, "ok": self.ok, "detail": self.detail}
        if self.skipped:
            out["skipped"] = True
        return out


@dataclass
class VerificationReport:
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def first_failure(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.ok), None)

    def add(self, check: Check, ok: bool, detail: str) -> bool:
        self.checks.append(CheckResult(check, ok, detail))
        return ok

    def skip(self, check: Check, why: str) -> None:
        self.checks.append(CheckResult(check, True, f"not performed: {why}", skipped=True))

    def to_json(self) -> dict[str, Any]:
        failure = self.first_failure
        return {
            "ok": self.ok,
            "failedCheck": failure.check.value if failure else None,
            "reason": failure.detail if failure else None,
            "checks": [c.to_json() for c in self.checks],
        }


def _held_at(history: list[tuple[int, int]], timestamp: int) -> bool:
    """Whether a role interval covers ``timestamp``.

    The grant side tolerates the signer's clock running behind the chain's by the skew (a key
    used right after registration); the revocation side tolerates nothing, because a signature
    dated after revocation is exactly what a stolen key would produce.
    """
    return any(
        granted - CLOCK_SKEW_SECONDS <= timestamp and (revoked == 0 or timestamp < revoked)
        for granted, revoked in history
    )


def _check_signature(signed: SignedRecord, report: VerificationReport) -> bytes | None:
    """Reports the signature check; returns the struct hash it computed on the way (None when
    the signature fails, so the caller computes it itself)."""
    try:
        struct_hash = check_signature(signed)
    except InvalidSignature as exc:
        report.add(Check.SIGNATURE, False, str(exc))
        return None
    report.add(Check.SIGNATURE, True, f"recovers to {signed.record.signer}")
    return struct_hash


def parse_receipt(report: VerificationReport, receipt: Receipt | dict[str, Any]) -> Receipt | None:
    """The receipt as a model, its format check reported; None when it does not parse."""
    if not isinstance(receipt, Receipt):
        try:
            receipt = Receipt.model_validate(receipt)
        except (ValidationError, InvalidRecord) as exc:
            report.add(Check.RECEIPT_FORMAT, False, _reason(exc))
            return None
    report.add(Check.RECEIPT_FORMAT, True, f"receipt v{receipt.version}")
    return receipt


def check_record(
    report: VerificationReport,
    record: SignedRecord | dict[str, Any] | None,
    receipt: Receipt,
) -> tuple[SignedRecord, bytes] | None:
    """The checks of a receipt's record that need no chain, for both verifiers (this one and
    ``ledger.tlog.verify``): the record file parses and equals the receipt's record, its
    signature recovers to its signer, and its struct hash is the receipt's. Returns the record
    checked and its struct hash; None when the record file does not parse (reported)."""
    signed = receipt.record
    if record is not None:
        if not isinstance(record, SignedRecord):
            try:
                record = load_signed_record(record)
            except InvalidRecord as exc:
                report.add(Check.RECORD_FORMAT, False, str(exc))
                return None
        report.add(Check.RECORD_FORMAT, True, "record parses and its payloadHash matches")
        same = record.model_dump(mode="json") == signed.model_dump(mode="json")
        report.add(
            Check.RECORD_MATCHES_RECEIPT,
            same,
            "record file equals the receipt's record"
            if same
            else "the record differs from the one the receipt covers",
        )
        signed = record
    computed = _check_signature(signed, report) or record_struct_hash(signed.record)
    report.add(
        Check.STRUCT_HASH,
        computed.hex() == receipt.structHash[2:],
        f"hashStruct = 0x{computed.hex()}, receipt says {receipt.structHash}",
    )
    return signed, computed


def verify_receipt(
    record: SignedRecord | dict[str, Any] | None,
    receipt: Receipt | dict[str, Any],
    chain: ChainReader,
    trust: TrustRoot | None = None,
) -> VerificationReport:
    """Run every check of ``record`` + ``receipt`` against ``chain``.

    ``record`` may be None to verify the record embedded in the receipt alone. ``trust`` is
    the auditor's pinned trust root: the receipt must name its chain and ledger, and ``chain``
    must serve that chain (same chain id, same hash at the pinned block) and read that ledger.
    Without it the ledger ``chain`` is attached to is the pin (the service's own endpoint
    uses that); the address a receipt names is never trusted either way.
    """
    report = VerificationReport()
    parsed = parse_receipt(report, receipt)
    if parsed is None:
        return report
    receipt = parsed

    checked = check_record(report, record, receipt)
    if checked is None:
        return report
    signed, computed = checked

    # The signature's domain must name this receipt's chain and contract, or a signature made
    # for a test deployment could be replayed against production.
    domain_ok = (
        signed.domain.chainId == receipt.chainId
        and signed.domain.verifyingContract.lower() == receipt.contract.lower()
    )
    report.add(
        Check.DOMAIN,
        domain_ok,
        f"domain {signed.domain.chainId}/{signed.domain.verifyingContract}, "
        f"receipt {receipt.chainId}/{receipt.contract}",
    )

    pinned_chain = trust.chain_id if trust is not None else chain.chain_id
    pinned_ledger = trust.ledger if trust is not None else (chain.ledger_address or "")
    pinned = receipt.chainId == pinned_chain and receipt.contract.lower() == pinned_ledger.lower()
    report.add(
        Check.TRUST_ROOT,
        pinned,
        f"receipt names {receipt.chainId}/{receipt.contract}, the pinned ledger is "
        f"{pinned_chain}/{pinned_ledger}"
        + ("" if trust is not None else " (pinned by the verifier's chain connection)"),
    )

    try:
        _verify_on_chain(signed, receipt, computed, chain, report, trust)
    except ChainError as exc:
        report.add(Check.CHAIN_ID, False, f"chain unreachable or refused: {exc}")
    return report


def _serves_pinned_chain(
    chain: ChainReader, trust: TrustRoot | None, report: VerificationReport
) -> bool:
    """Whether the endpoint is the pinned chain (chain id, pinned block) and reads the pinned
    ledger, which must have code there (a reset chain has none)."""
    if trust is None:
        report.skip(Check.PINNED_CHAIN, "no trust root given; the connection itself is the pin")
        return True
    if chain.chain_id != trust.chain_id:
        return report.add(
            Check.PINNED_CHAIN,
            False,
            f"RPC serves chain id {chain.chain_id}, the trust root pins {trust.chain_id}",
        )
    pinned_block = "no block pinned, so a fresh chain with the same id is not ruled out"
    if trust.anchor is not None:
        seen = chain.block_hash(trust.anchor.number)
        if seen != trust.anchor.hash:
            return report.add(
                Check.PINNED_CHAIN,
                False,
                f"block {trust.anchor.number} has hash {seen}, the trust root pins "
                f"{trust.anchor.hash} (another chain, a reset or a fork)",
            )
        pinned_block = f"block {trust.anchor.number} has the pinned hash {seen}"
    reads = chain.ledger_address
    if reads is None or reads.lower() != trust.ledger.lower():
        return report.add(
            Check.PINNED_CHAIN,
            False,
            f"the pinned ledger {trust.ledger} has no code on this chain (reset?)"
            if reads is None
            else f"the reader asks {reads}, not the pinned {trust.ledger}",
        )
    return report.add(Check.PINNED_CHAIN, True, f"chain id {chain.chain_id}; {pinned_block}")


def _verify_on_chain(
    signed: SignedRecord,
    receipt: Receipt,
    struct_hash: bytes,
    chain: ChainReader,
    report: VerificationReport,
    trust: TrustRoot | None,
) -> None:
    chain_id = chain.chain_id
    report.add(
        Check.CHAIN_ID,
        chain_id == receipt.chainId,
        f"RPC chain id {chain_id}, receipt {receipt.chainId}",
    )
    if not _serves_pinned_chain(chain, trust, report):
        return  # nothing a chain other than the pinned one says can be believed

    record = signed.record
    held = {role: chain.role_history(record.signer, role) for role in PARTICIPANT_ROLES}
    roles_then = [role for role, history in held.items() if _held_at(history, record.signedAt)]
    report.add(
        Check.SIGNER_ROLE,
        bool(roles_then),
        f"{record.signer} held {', '.join(r.value for r in roles_then)} at signedAt "
        f"{record.signedAt}"
        if roles_then
        else f"{record.signer} held no participant role at signedAt {record.signedAt} "
        f"(history: { {r.value: h for r, h in held.items() if h} })",
    )
    allowed = KIND_SIGNER_ROLES[record.kind]
    report.add(
        Check.KIND_ALLOWED,
        bool(allowed.intersection(roles_then)),
        f"{record.kind.value} must be signed by a {allowed_roles_text(record.kind)}; signer held "
        f"{[r.value for r in roles_then] or 'nothing'}",
    )
    if Role.SUPPLIER in roles_then or record.kind in SELF_SUBJECT_KINDS:
        org = chain.org_of(record.signer)
        report.add(
            Check.SUBJECT,
            org == record.subject,
            f"signer's organisation {org!r}, record subject {record.subject!r}",
        )

    root = bytes.fromhex(receipt.root[2:])
    proof = [bytes.fromhex(p[2:]) for p in receipt.proof]
    folded = process_proof(leaf_hash(struct_hash), proof)
    on_chain = chain.verify_record_on_chain(root, proof, struct_hash) if folded == root else False
    report.add(
        Check.PROOF,
        folded == root and on_chain,
        "proof folds to the root and MerkleProof.verify agrees on chain"
        if on_chain
        else f"proof folds to 0x{folded.hex()}, not the receipt's root {receipt.root}"
        if folded != root
        else "proof folds to the root, but MerkleProof.verify in the pinned ledger says no "
        "(the root is not anchored there)",
    )

    if receipt.blockHash is None:
        report.skip(Check.BLOCK_CANONICAL, "the receipt carries no blockHash (an older receipt)")
    else:
        canonical = chain.block_hash(receipt.blockNumber)
        report.add(
            Check.BLOCK_CANONICAL,
            canonical == receipt.blockHash,
            f"block {receipt.blockNumber} is {receipt.blockHash} on the canonical chain"
            if canonical == receipt.blockHash
            else f"block {receipt.blockNumber} of the canonical chain is {canonical}, the "
            f"receipt says {receipt.blockHash} (the anchoring block was reorganised away or "
            "the chain rolled back)",
        )

    anchor = chain.anchored_at(root)
    if not report.add(
        Check.ANCHORED,
        anchor is not None,
        f"root anchored in batch {anchor.batch_id} at block {anchor.block_number}"
        if anchor
        else f"root {receipt.root} is not anchored in {chain.ledger_address}",
    ):
        return
    tx = chain.transaction_block(receipt.transactionHash)
    details = (
        anchor.batch_id == receipt.batchId
        and anchor.block_number == receipt.blockNumber
        and anchor.timestamp == receipt.blockTimestamp
        and anchor.leaf_count == receipt.leafCount
        and tx is not None
        and tx[0] == receipt.blockNumber
        and tx[1].lower() == receipt.contract.lower()
    )
    report.add(
        Check.ANCHOR_DETAILS,
        details,
        f"chain: batch {anchor.batch_id}, block {anchor.block_number}, time "
        f"{anchor.timestamp}, {anchor.leaf_count} leaves, tx {tx}; receipt: batch "
        f"{receipt.batchId}, block {receipt.blockNumber}, time {receipt.blockTimestamp}, "
        f"{receipt.leafCount} leaves, tx {receipt.transactionHash}",
    )
    before = record.signedAt <= anchor.timestamp + CLOCK_SKEW_SECONDS
    report.add(
        Check.SIGNED_BEFORE_ANCHOR,
        before,
        f"signedAt {record.signedAt}, anchored at {anchor.timestamp} "
        f"(tolerance {CLOCK_SKEW_SECONDS} s)",
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc)
