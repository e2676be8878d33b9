"""The fast screen (ledger.records.screen_signed_record), the struct hash from plain values
and the direct signature check, each against the model path it stands in for, on a hostile
corpus (tests/intake_corpus.py): the screen may decline anything, but what it accepts the
models accept with the very same values, hash and signature verdict."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.canonical import canonical_json
from ledger.eip712 import record_digest, record_struct_hash, record_struct_hash_of
from ledger.errors import InvalidSignature, LedgerError
from ledger.keys import Signer
from ledger.records import (
    Domain,
    ScreenedRecord,
    SignedRecord,
    load_signed_record,
    screen_signed_record,
)
from ledger.signing import check_domain, check_signature, sign_record, signature_recovers_to
from tests.helpers import inspection_payload
from tests.intake_corpus import corpus

DOMAIN = Domain(chainId=31337, verifyingContract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
NOW = 1_765_000_000


def _signed(signer: Signer, kind: str, payload: dict[str, Any], **fields: Any) -> SignedRecord:
    values: dict[str, Any] = {
        "subject": "SUP-01",
        "kind": kind,
        "part_number": "P-1",
        "lot_id": "L-1",
        "event_time": NOW - 3600,
        "signed_at": NOW,
        "quantity": 50,
        "defects": 1,
        "nonce": 7,
        "payload": payload,
    }
    values.update(fields)
    return sign_record(signer, DOMAIN, **values)


def _records() -> list[tuple[SignedRecord, Signer]]:
    signer = Signer.generate()
    inspection = inspection_payload(1)
    inspection["sensorReport"][0]["values"] = [10.0, 1e-7, 12345.678, -0.0, 9.95]
    return [
        (_signed(signer, "inspection", inspection), signer),
        (
            _signed(
                signer,
                "complaint",
                {
                    "complaintId": "C-1",
                    "severity": "major",
                    "defectCode": "FLASH",
                    "description": "Grüße \u2028 \U0001f600",
                },
            ),
            signer,
        ),
        (
            _signed(
                signer,
                "delivery",
                {"purchaseOrder": "PO-1", "promisedTime": NOW - 7200, "deliveredTime": NOW - 3600},
                defects=0,
            ),
            signer,
        ),
        (
            _signed(
                signer,
                "audit",
                {
                    "standard": "IATF16949",
                    "auditType": "process",
                    "majorNonconformities": 1,
                    "minorNonconformities": 2,
                },
                quantity=3,
            ),
            signer,
        ),
    ]


def _model(data: Any) -> SignedRecord | LedgerError:
    try:
        signed = load_signed_record(data)
        check_domain(signed, DOMAIN)
        return signed
    except LedgerError as exc:
        return exc


CORPUS = corpus(_records(), DOMAIN)


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_the_screen_accepts_only_what_the_models_accept_with_the_same_values(
    name: str, data: Any
) -> None:
    screened = screen_signed_record(data, DOMAIN)
    model = _model(data)
    if screened is None:
        return  # declined: intake asks the models, whose answer is the answer
    assert isinstance(model, SignedRecord), f"{name}: screened, but the models say {model}"
    record = model.record
    assert tuple(screened[:12]) == (
        record.signer,
        record.subject,
        record.kind,
        record.partNumber,
        record.lotId,
        record.eventTime,
        record.signedAt,
        record.quantity,
        record.defects,
        record.nonce,
        record.salt,
        record.payloadHash,
    )
    assert screened.payload == model.payload and screened.signature == model.signature
    assert screened.payload_size == model.payload_size
    assert screened.canonical_payload == canonical_json(model.payload)
    assert _struct_hash(screened) == record_struct_hash(record)
    digest = record_digest(DOMAIN, record)
    try:
        check_signature(model)
        verdict = True
    except InvalidSignature:
        verdict = False
    assert signature_recovers_to(digest, screened.signature, _address(screened)) is verdict


def _address(screened: ScreenedRecord) -> bytes:
    return bytes.fromhex(screened.signer[2:])


def _struct_hash(s: ScreenedRecord) -> bytes:
    return record_struct_hash_of(
        _address(s),
        s.subject,
        s.kind.value,
        s.partNumber,
        s.lotId,
        s.eventTime,
        s.signedAt,
        s.quantity,
        s.defects,
        s.nonce,
        bytes.fromhex(s.salt[2:]),
        bytes.fromhex(s.payloadHash[2:]),
    )


# What the fast path exists for: the screen must take the ordinary forms itself.
SCREENED = {
    "valid",
    "lower-case contract",
    "upper-case contract",
    f"nonce at {2**64 - 1}",
    "lotId at 64 characters",
    "lotId with every allowed sign",
    "lower-case signer",
    "upper-case signer",
    "upper-case salt",
    "upper-case payloadHash",
    "payload keys in reverse",
    "high-s signature",  # screened; the signature check then refuses it
    "v as 0/1",
    "upper-case signature",
}


def test_the_screen_takes_the_ordinary_forms_itself() -> None:
    taken = {
        name.split(": ", 1)[1]
        for name, data in CORPUS
        if ": " in name and screen_signed_record(data, DOMAIN) is not None
    }
    assert taken >= SCREENED, SCREENED - taken
    # And the screen declines most of the corpus (which the models refuse).
    assert len(taken) < len(CORPUS) / 4


SIGNATURE_CASES = (
    "high-s signature",
    "v as 0/1",
    "v = 29",
    "upper-case signature",
    "s = 0",
    "r = 0",
    "r = n",
    "short signature",
    "signature with a newline",
    "signature by another key",
    "signed for another chain",
    "field changed after signing",
)


def test_signature_forms_against_check_signature() -> None:
    """signature_recovers_to says True exactly where check_signature passes, for the forms
    recover_digest_raw knows (v 27/28 or 0/1, low s) and for broken ones."""
    signer = Signer.generate()
    for i in range(20):
        signed = _signed(signer, "inspection", inspection_payload(1), nonce=i)
        data = signed.model_dump(mode="json")
        digest = record_digest(DOMAIN, signed.record)
        address = bytes.fromhex(signed.record.signer[2:])
        for name, candidate in corpus([(signed, signer)], DOMAIN):
            if not name.endswith(SIGNATURE_CASES):
                continue
            sig = candidate["signature"]
            try:
                # The check alone, without the envelope's own pattern on the signature.
                check_signature(signed.model_copy(update={"signature": sig}))
                verdict = True
            except InvalidSignature:
                verdict = False
            assert signature_recovers_to(digest, sig, address) is verdict, name
        assert signature_recovers_to(digest, data["signature"], address)


def test_screen_never_raises_on_junk() -> None:
    junk: list[Any] = [
        None,
        [],
        "x",
        {"domain": None, "record": None, "payload": None, "signature": None},
        {"domain": {}, "record": {}, "payload": {}, "signature": "0x"},
        {
            "domain": DOMAIN.model_dump(),
            "record": dict.fromkeys(ScreenedRecord._fields[:12]),
            "payload": {},
            "signature": "0x" + "00" * 65,
        },
    ]
    nested: Any = {}
    for _ in range(5000):  # deeper than the interpreter's stack: the exact path refuses it
        nested = {"a": nested}
    signed = _signed(Signer.generate(), "inspection", inspection_payload(1))
    deep = signed.model_dump(mode="json")
    deep["payload"]["readPoint"] = nested
    junk.append(deep)
    for data in junk:
        assert screen_signed_record(data, DOMAIN) is None
