import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from ledger._hash import keccak
from ledger.eip712 import (
    RECORD_TYPES,
    encode_type,
    hash_struct,
    record_struct_hash,
    record_typed_data,
    type_hash,
    typed_data_digest,
)
from ledger.errors import InvalidSignature
from ledger.keys import Signer, recover_digest
from ledger.records import Domain
from ledger.signing import check_signature, sign_record
from tests.helpers import inspection_payload, run_node

# The example of EIP-712 itself (eips.ethereum.org/EIPS/eip-712, "Ether Mail").
MAIL_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    "Mail": [
        {"name": "from", "type": "Person"},
        {"name": "to", "type": "Person"},
        {"name": "contents", "type": "string"},
    ],
}
MAIL_DOMAIN = {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
}
MAIL = {
    "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
    "contents": "Hello, Bob!",
}
DOMAIN = Domain(chainId=31337, verifyingContract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def test_eip712_spec_example_vector() -> None:
    assert encode_type("Mail", MAIL_TYPES) == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )
    assert type_hash("Mail", MAIL_TYPES).hex() == (
        "a0cedeb2dc280ba39b857546d74f5549c3a1d7bdc2dd96bf881f76108e23dac2"
    )
    assert hash_struct("Mail", MAIL, MAIL_TYPES).hex() == (
        "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    )
    separator = hash_struct("EIP712Domain", MAIL_DOMAIN, MAIL_TYPES)
    assert separator.hex() == "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    digest = typed_data_digest(separator, hash_struct("Mail", MAIL, MAIL_TYPES))
    assert digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    cow = Signer(keccak(b"cow"))
    assert cow.address == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    signature = cow.sign_digest(digest)
    assert signature == (
        "0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        "1c"
    )
    assert recover_digest(digest, signature) == cow.address


def _signed(signer: Signer, nonce: int = 1):  # type: ignore[no-untyped-def]
    return sign_record(
        signer,
        DOMAIN,
        subject="SUP-01",
        kind="inspection",
        part_number="P-100",
        lot_id="LOT-1",
        event_time=1_700_000_000,
        quantity=50,
        defects=1,
        nonce=nonce,
        payload=inspection_payload(),
    )


def test_record_hash_matches_generic_encoder_and_eth_account() -> None:
    signer = Signer.generate()
    signed = _signed(signer)
    message = signed.record.model_dump(mode="json")
    assert record_struct_hash(signed.record) == hash_struct("QualityRecord", message, RECORD_TYPES)
    typed = record_typed_data(DOMAIN, signed.record)
    assert (
        Account.recover_message(encode_typed_data(full_message=typed), signature=signed.signature)
        == signer.address
    )
    assert check_signature(signed) == record_struct_hash(signed.record)


def test_ethers_verify_typed_data_accepts_our_signatures() -> None:
    signers = [Signer.generate() for _ in range(3)]
    signed = [_signed(s, nonce=i) for i, s in enumerate(signers)]
    out = run_node(
        "typed_data.js",
        [
            {"typedData": record_typed_data(DOMAIN, r.record), "signature": r.signature}
            for r in signed
        ],
    )
    assert [o["signer"] for o in out] == [s.address for s in signers]
    assert [o["structHash"] for o in out] == [
        "0x" + record_struct_hash(r.record).hex() for r in signed
    ]


def test_tampered_record_does_not_verify() -> None:
    signed = _signed(Signer.generate())
    tampered = signed.model_copy(update={"record": signed.record.model_copy(update={"defects": 0})})
    with pytest.raises(InvalidSignature, match="does not match"):
        check_signature(tampered)


def test_high_s_and_bad_v_are_refused() -> None:
    signed = _signed(Signer.generate())
    raw = bytes.fromhex(signed.signature[2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(raw[32:64], "big")
    flipped = raw[:32] + (n - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    with pytest.raises(InvalidSignature, match=r"\(EIP-2\)"):
        recover_digest(b"\x00" * 32, "0x" + flipped.hex())
    with pytest.raises(InvalidSignature, match="v must be"):
        recover_digest(b"\x00" * 32, "0x" + raw[:64].hex() + "05")


def test_signed_at_defaults_to_now() -> None:
    before = int(time.time())
    assert _signed(Signer.generate()).record.signedAt >= before
