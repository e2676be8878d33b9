"""Create and check signed evidence records."""

from __future__ import annotations

import time
from typing import Any

from eth_utils import to_checksum_address

from ledger._hash import keccak
from ledger._secp256k1 import recover_uncompressed
from ledger.canonical import payload_hash
from ledger.eip712 import domain_separator, record_digest, record_struct_hash, typed_data_digest
from ledger.errors import InvalidSignature, KindNotAllowed, WrongDomain
from ledger.keys import SECP256K1_HALF_N, Signer, recover_digest_raw
from ledger.records import (
    KIND_SIGNER_ROLES,
    Domain,
    QualityRecord,
    RecordKind,
    Role,
    SignedRecord,
    allowed_roles_text,
    new_salt,
)


def sign_record(
    signer: Signer,
    domain: Domain,
    *,
    subject: str,
    kind: RecordKind | str,
    part_number: str,
    lot_id: str,
    event_time: int,
    quantity: int,
    defects: int,
    nonce: int,
    payload: dict[str, Any],
    signed_at: int | None = None,
    salt: str | None = None,
) -> SignedRecord:
    """Build the struct for ``payload``, sign it and return the validated envelope."""
    record = QualityRecord(
        signer=signer.address,
        subject=subject,
        kind=RecordKind(kind),
        partNumber=part_number,
        lotId=lot_id,
        eventTime=event_time,
        signedAt=int(time.time()) if signed_at is None else signed_at,
        quantity=quantity,
        defects=defects,
        nonce=nonce,
        salt=salt or new_salt(),
        payloadHash="0x" + payload_hash(payload).hex(),
    )
    signature = signer.sign_digest(record_digest(domain, record))
    return SignedRecord(domain=domain, record=record, payload=payload, signature=signature)


def check_signature(signed: SignedRecord) -> bytes:
    """Verify the signature recovers to ``record.signer``; return the struct hash."""
    struct_hash = record_struct_hash(signed.record)
    digest = typed_data_digest(domain_separator(signed.domain), struct_hash)
    recovered = recover_digest_raw(digest, signed.signature)
    if recovered != bytes.fromhex(signed.record.signer[2:]):
        raise InvalidSignature(
            "signature does not match the record's signer",
            expected=signed.record.signer,
            got=to_checksum_address(recovered),
        )
    return struct_hash


def check_domain(signed: SignedRecord, deployment_domain: Domain) -> None:
    """The record must be signed for this deployment's chain and ledger contract.

    A signature for another chain or contract is valid there, not here: accepting it would
    let a record signed for a test deployment be replayed into this ledger.
    """
    if signed.domain != deployment_domain:
        raise WrongDomain(
            "record is signed for another chain or contract",
            expected=deployment_domain.model_dump(),
            got=signed.domain.model_dump(),
        )


def check_kind_allowed(kind: RecordKind, role: Role) -> None:
    if role not in KIND_SIGNER_ROLES[kind]:
        raise KindNotAllowed(
            f"a {role.value} may not sign {kind.value} records",
            expected=allowed_roles_text(kind),
            got=role.value,
        )


def resign(
    signed: SignedRecord,
    signer: Signer,
    *,
    domain: Domain | None = None,
    signed_at: int | None = None,
    nonce: int | None = None,
) -> SignedRecord:
    """The same evidence (fields, payload, salt) signed again, for another domain, signing time
    or nonce: how a backlog produced offline is signed at submission time."""
    r = signed.record
    return sign_record(
        signer,
        domain or signed.domain,
        subject=r.subject,
        kind=r.kind,
        part_number=r.partNumber,
        lot_id=r.lotId,
        event_time=r.eventTime,
        quantity=r.quantity,
        defects=r.defects,
        nonce=r.nonce if nonce is None else nonce,
        payload=signed.payload,
        signed_at=signed_at,
        salt=r.salt,
    )


# -- the fast check (intake, issue #21): recovery on reused buffers (ledger._secp256k1) ----------

_HALF_N = SECP256K1_HALF_N.to_bytes(32, "big")
_ZERO_S = bytes(32)


def _recover_address(rs: bytes, recovery_id: int, digest: bytes) -> bytes | None:
    """The 20 address bytes that signed ``digest`` with compact signature ``rs`` and recovery
    id 0/1, or None if the signature does not recover to any key."""
    public = recover_uncompressed(rs, recovery_id, digest)
    return None if public is None else keccak(public[1:])[-20:]


def signature_recovers_to(digest: bytes, signature: str, signer: bytes) -> bool:
    """Whether ``signature`` (0x and 130 hex digits) over ``digest`` recovers to the 20 address
    bytes ``signer``, by the rules of :func:`ledger.keys.recover_digest_raw` (v 27/28 or 0/1,
    s in the lower half order): True exactly where :func:`check_signature` passes. A False
    says nothing about why: :func:`check_signature` then says it with its typed error."""
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        return False
    if len(raw) != 65:
        return False
    v = raw[64]
    if v in (27, 28):
        v -= 27
    s = raw[32:64]
    if v not in (0, 1) or s == _ZERO_S or s > _HALF_N:  # same length: bytes order is numeric
        return False
    return _recover_address(raw[:64], v, digest) == signer


def signatures_recover_to(items: list[tuple[bytes, str, bytes]]) -> list[bool]:
    """:func:`signature_recovers_to` of each (digest, signature, signer): a batch, as handed
    to a helper process (api.intake.RecoveryPool), which then imports only this module."""
    return [signature_recovers_to(digest, signature, signer) for digest, signature, signer in items]
