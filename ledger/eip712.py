"""EIP-712 typed-data hashing, written for speed but generic enough for the spec's own example.

``hash_struct`` encodes each member directly into 32-byte words (no ABI encoder round trip),
which is what lets the service hash records at close to the curve's recovery rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from eth_utils import to_bytes

from ledger._hash import keccak
from ledger.errors import InvalidRecord
from ledger.records import Domain, QualityRecord, RecordKind

Types = Mapping[str, list[dict[str, str]]]

EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

# The record type: field order here is the signed order and must never change within version "1".
QUALITY_RECORD_TYPE = [
    {"name": "signer", "type": "address"},
    {"name": "subject", "type": "string"},
    {"name": "kind", "type": "string"},
    {"name": "partNumber", "type": "string"},
    {"name": "lotId", "type": "string"},
    {"name": "eventTime", "type": "uint64"},
    {"name": "signedAt", "type": "uint64"},
    {"name": "quantity", "type": "uint32"},
    {"name": "defects", "type": "uint32"},
    {"name": "nonce", "type": "uint64"},
    {"name": "salt", "type": "bytes32"},
    {"name": "payloadHash", "type": "bytes32"},
]
RECORD_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": EIP712_DOMAIN_TYPE,
    "QualityRecord": QUALITY_RECORD_TYPE,
}


def _referenced(primary: str, types: Types, found: set[str]) -> None:
    if primary in found or primary not in types:
        return
    found.add(primary)
    for member in types[primary]:
        _referenced(member["type"].split("[")[0], types, found)


def encode_type(primary: str, types: Types) -> str:
    deps: set[str] = set()
    _referenced(primary, types, deps)
    deps.discard(primary)
    ordered = [primary, *sorted(deps)]
    return "".join(
        f"{name}({','.join(m['type'] + ' ' + m['name'] for m in types[name])})" for name in ordered
    )


def type_hash(primary: str, types: Types) -> bytes:
    return _type_hash_cached(primary, _freeze(types))


@lru_cache(maxsize=256)
def _type_hash_cached(primary: str, frozen: tuple) -> bytes:
    types = {name: [dict(m) for m in members] for name, members in frozen}
    return keccak(encode_type(primary, types).encode())


def _freeze(types: Types) -> tuple:
    return tuple(
        (name, tuple(tuple(sorted(m.items())) for m in members)) for name, members in types.items()
    )


def _uint(value: Any, bits: int) -> bytes:
    number = int(value, 0) if isinstance(value, str) else value
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**bits:
        raise InvalidRecord(f"value out of range for uint{bits}", got=value)
    return number.to_bytes(32, "big")


def _encode_value(kind: str, value: Any, types: Types) -> bytes:
    if kind.endswith("]"):
        inner = kind[: kind.rindex("[")]
        return keccak(b"".join(_encode_value(inner, item, types) for item in value))
    if kind in types:
        return hash_struct(kind, value, types)
    if kind == "string":
        return keccak(value.encode("utf-8"))
    if kind == "bytes":
        return keccak(to_bytes(hexstr=value) if isinstance(value, str) else value)
    if kind == "address":
        raw = to_bytes(hexstr=value)
        if len(raw) != 20:
            raise InvalidRecord("address must be 20 bytes", got=value)
        return b"\x00" * 12 + raw
    if kind == "bool":
        return (1 if value else 0).to_bytes(32, "big")
    if kind.startswith("uint"):
        return _uint(value, int(kind[4:] or 256))
    if kind.startswith("int"):
        bits = int(kind[3:] or 256)
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise InvalidRecord(f"value out of range for int{bits}", got=value)
        return (value % 2**256).to_bytes(32, "big")
    if kind.startswith("bytes"):
        raw = to_bytes(hexstr=value) if isinstance(value, str) else bytes(value)
        if len(raw) != int(kind[5:]):
            raise InvalidRecord(f"{kind} has the wrong length", got=len(raw))
        return raw.ljust(32, b"\x00")
    raise InvalidRecord("unsupported EIP-712 type", got=kind)


def hash_struct(primary: str, data: Mapping[str, Any], types: Types) -> bytes:
    words = [type_hash(primary, types)]
    words.extend(_encode_value(m["type"], data[m["name"]], types) for m in types[primary])
    return keccak(b"".join(words))


def typed_data_digest(domain_separator_: bytes, struct_hash: bytes) -> bytes:
    """The digest that is signed: keccak256(0x1901 || domainSeparator || hashStruct(message))."""
    return keccak(b"\x19\x01" + domain_separator_ + struct_hash)


def domain_separator(domain: Domain) -> bytes:
    return _domain_separator(domain.chainId, domain.verifyingContract)


@lru_cache(maxsize=64)
def _domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    return hash_struct(
        "EIP712Domain",
        {
            "name": "QualityLedger",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": verifying_contract,
        },
        RECORD_TYPES,
    )


_RECORD_TYPE_HASH = type_hash("QualityRecord", RECORD_TYPES)


def record_struct_hash(record: QualityRecord) -> bytes:
    """hashStruct(QualityRecord): the record's identity and its Merkle leaf value.

    Unrolled for the one type we hash millions of times; ``hash_struct`` gives the same bytes
    (tested) and the generic path is what the EIP-712 spec vector exercises.
    """
    return keccak(
        b"".join(
            (
                _RECORD_TYPE_HASH,
                b"\x00" * 12 + bytes.fromhex(record.signer[2:]),
                keccak(record.subject.encode()),
                keccak(record.kind.value.encode()),
                keccak(record.partNumber.encode()),
                keccak(record.lotId.encode()),
                record.eventTime.to_bytes(32, "big"),
                record.signedAt.to_bytes(32, "big"),
                record.quantity.to_bytes(32, "big"),
                record.defects.to_bytes(32, "big"),
                record.nonce.to_bytes(32, "big"),
                bytes.fromhex(record.salt[2:]),
                bytes.fromhex(record.payloadHash[2:]),
            )
        )
    )


# keccak256 of each kind's name: the kind is one of a few strings, hashed once here.
_KIND_WORDS: dict[str, bytes] = {kind.value: keccak(kind.value.encode()) for kind in RecordKind}
_ADDRESS_PAD = b"\x00" * 12


def record_struct_hash_of(
    signer: bytes,
    subject: str,
    kind: str,
    part_number: str,
    lot_id: str,
    event_time: int,
    signed_at: int,
    quantity: int,
    defects: int,
    nonce: int,
    salt: bytes,
    payload_hash: bytes,
) -> bytes:
    """:func:`record_struct_hash` from already validated values (intake's fast path, which
    builds no model): ``signer`` the 20 address bytes, ``salt`` and ``payload_hash`` 32 bytes
    each, ``kind`` a :class:`RecordKind` value. The same bytes (tested)."""
    return keccak(
        b"".join(
            (
                _RECORD_TYPE_HASH,
                _ADDRESS_PAD,
                signer,
                keccak(subject.encode()),
                _KIND_WORDS[kind],
                keccak(part_number.encode()),
                keccak(lot_id.encode()),
                event_time.to_bytes(32, "big"),
                signed_at.to_bytes(32, "big"),
                quantity.to_bytes(32, "big"),
                defects.to_bytes(32, "big"),
                nonce.to_bytes(32, "big"),
                salt,
                payload_hash,
            )
        )
    )


def record_digest(domain: Domain, record: QualityRecord) -> bytes:
    return typed_data_digest(domain_separator(domain), record_struct_hash(record))


def record_typed_data(domain: Domain, record: QualityRecord) -> dict[str, Any]:
    """The full EIP-712 JSON (eth_signTypedData_v4 / ethers / eth-account ``full_message``)."""
    return {
        "types": RECORD_TYPES,
        "primaryType": "QualityRecord",
        "domain": domain.model_dump(),
        "message": record.model_dump(mode="json"),
    }
