"""Create and check signed evidence records."""

from __future__ import annotations

import time
from typing import Any

from eth_utils import to_checksum_address

from ledger.canonical import payload_hash
from ledger.eip712 import domain_separator, record_digest, record_struct_hash, typed_data_digest
from ledger.errors import InvalidSignature, KindNotAllowed, WrongDomain
from ledger.keys import Signer, recover_digest_raw
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
