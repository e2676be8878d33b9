"""A hostile corpus of signed envelopes for comparing intake's fast path with its model path
(issue #21): each entry is a mutation of a valid record, re-signed by the same key wherever
the mutation changes what is signed, so that a bad signature is never the only reason a
record is refused. Used by tests/ledger/test_record_screen.py and tests/api/test_intake_fast.py.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

from ledger._hash import keccak
from ledger.canonical import canonical_json
from ledger.eip712 import domain_separator, record_struct_hash_of
from ledger.errors import LedgerError
from ledger.keys import SECP256K1_N, Signer
from ledger.records import Domain, SignedRecord

Envelope = dict[str, Any]
Case = tuple[str, Any]

INT_FIELDS = ("eventTime", "signedAt", "quantity", "defects", "nonce")
ID_FIELDS = ("subject", "partNumber", "lotId")
# Integers in every form but the one canonical JSON number, and out of range.
BAD_INTS: list[Any] = ["50", 50.0, 50.5, True, False, None, -1, 2**32, 2**64, 2**70, 1e30, [50]]
# Identifiers that look right and are not: a trailing newline (Python's $ matches before it),
# Unicode hyphens and fullwidth letters, paths, oversize, empty, control characters.
BAD_IDS: list[Any] = [
    "SUP-01\n",
    "SUP\u201001",
    "\uff33UP-01",
    "SUP-01\u200b",
    "a..b",
    "../x",
    "",
    "x" * 65,
    " SUP-01",
    "SUP-01\x00",
    5,
    None,
    ["SUP-01"],
]
LOOKALIKE_NAMES: list[Any] = ["QualityLedger ", "QuaIityLedger", "qualityledger", "", 1, None]


def resigned(data: Envelope, signer: Signer, domain: Domain) -> Envelope:
    """``data`` with payloadHash and signature made true again for its (possibly hostile)
    values, wherever those can be hashed at all; otherwise left as it is."""
    out = copy.deepcopy(data)
    rec = out.get("record")
    if not isinstance(rec, dict):
        return out
    with contextlib.suppress(LedgerError, ValueError, KeyError):
        # An unhashable payload keeps the hash it had.
        rec["payloadHash"] = "0x" + keccak(canonical_json(out["payload"])).hex()
    try:
        struct_hash = record_struct_hash_of(
            bytes.fromhex(rec["signer"][2:]),
            rec["subject"],
            rec["kind"],
            rec["partNumber"],
            rec["lotId"],
            rec["eventTime"],
            rec["signedAt"],
            rec["quantity"],
            rec["defects"],
            rec["nonce"],
            bytes.fromhex(rec["salt"][2:]),
            bytes.fromhex(rec["payloadHash"][2:]),
        )
    except (AttributeError, TypeError, ValueError, KeyError, OverflowError):
        # Values of the wrong type or range: nothing to sign, the schema refuses them.
        return out
    digest = keccak(b"\x19\x01" + domain_separator(domain) + struct_hash)
    out["signature"] = signer.sign_digest(digest)
    return out


def _with(data: Envelope, path: tuple[Any, ...], value: Any) -> Envelope:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _without(data: Envelope, path: tuple[Any, ...]) -> Envelope:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


def high_s(signature: str) -> str:
    """The same signature in its other (high-s) form: valid ECDSA, refused by EIP-2."""
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    v = 27 + 28 - raw[64]
    return "0x" + raw[:32].hex() + s.to_bytes(32, "big").hex() + f"{v:02x}"


def mutations(
    valid: SignedRecord, signer: Signer, domain: Domain
) -> Iterator[tuple[str, Envelope]]:
    """Mutations of ``valid`` (a record signed by ``signer`` for ``domain``)."""
    base = valid.model_dump(mode="json")

    def sign(data: Envelope) -> Envelope:
        return resigned(data, signer, domain)

    yield "valid", base
    # The envelope and the domain.
    for key in ("domain", "record", "payload", "signature"):
        yield f"missing {key}", _without(base, (key,))
    yield "extra envelope key", {**base, "extra": 1}
    for key in ("name", "version", "chainId", "verifyingContract"):
        yield f"missing domain.{key}", _without(base, ("domain", key))
    yield "extra domain key", _with(base, ("domain", "salt"), "0x" + "00" * 32)
    for name in LOOKALIKE_NAMES:
        yield f"domain name {name!r}", _with(base, ("domain", "name"), name)
    for version in ("1 ", "2", 1, 1.0, None):
        yield f"domain version {version!r}", _with(base, ("domain", "version"), version)
    chain = base["domain"]["chainId"]
    for value in (str(chain), float(chain), True, chain + 1, 0, -1, 2**64, 2**256):
        yield f"chainId {value!r}", _with(base, ("domain", "chainId"), value)
    contract = base["domain"]["verifyingContract"]
    body = contract[2:]
    lookalikes = {
        "lower-case contract": "0x" + body.lower(),
        "upper-case contract": "0x" + body.upper(),
        "0X contract": "0X" + body,
        "contract with a space": contract + " ",
        "contract one digit off": contract[:-1] + ("0" if contract[-1] != "0" else "1"),
        "short contract": contract[:-1],
        "Arabic-Indic digit contract": contract[:-1] + "\u0661",
        "fullwidth contract": contract[:-1] + "\uff41",
    }
    for name, value in lookalikes.items():
        yield name, _with(base, ("domain", "verifyingContract"), value)
    # The signed struct: missing, extra, wrong types, out of range, look-alike ids.
    for key in base["record"]:
        yield f"missing record.{key}", _without(base, ("record", key))
    yield "extra record key", sign(_with(base, ("record", "comment"), "x"))
    for field in INT_FIELDS:
        for value in BAD_INTS:
            yield f"{field} = {value!r}", sign(_with(base, ("record", field), value))
    for nonce in (2**63 - 1, 2**63, 2**64 - 1):  # the store's signed 64 bits, the uint64 top
        yield f"nonce at {nonce}", sign(_with(base, ("record", "nonce"), nonce))
    for field in ID_FIELDS:
        for value in BAD_IDS:
            yield f"{field} = {value!r}", sign(_with(base, ("record", field), value))
    yield "lotId at 64 characters", sign(_with(base, ("record", "lotId"), "L" * 64))
    yield "lotId with every allowed sign", sign(_with(base, ("record", "lotId"), "a:b/c#d-e_f.g"))
    for kind in ("Inspection", "inspection ", "unknown", 5, None):
        yield f"kind {kind!r}", sign(_with(base, ("record", "kind"), kind))
    signer_address = base["record"]["signer"]
    swapped = "0x" + "".join(c.lower() if c.isupper() else c.upper() for c in signer_address[2:])
    for name, value in {
        "lower-case signer": signer_address.lower(),
        "upper-case signer": "0x" + signer_address[2:].upper(),
        "signer with a wrong checksum": swapped,
        "0X signer": "0X" + signer_address[2:],
        "short signer": signer_address[:-1],
        "signer with a newline": signer_address + "\n",
    }.items():
        yield name, sign(_with(base, ("record", "signer"), value))
    for field in ("salt", "payloadHash"):
        value = base["record"][field]
        yield f"upper-case {field}", sign(_with(base, ("record", field), "0x" + value[2:].upper()))
        yield f"short {field}", sign(_with(base, ("record", field), value[:-1]))
        yield f"{field} without 0x", sign(_with(base, ("record", field), value[2:] + "00"))
    # The payload: wrong types, extra and missing fields, numbers in every form, text.
    payload = base["payload"]
    yield "payload not an object", sign(_with(base, ("payload",), [payload]))
    yield "extra payload field", sign(_with(base, ("payload", "colour"), "red"))
    first = next(iter(payload))
    yield f"missing payload.{first}", sign(_without(base, ("payload", first)))
    yield "payload keys in reverse", {**base, "payload": dict(reversed(list(payload.items())))}
    yield "payloadHash of another payload", _with(base, ("record", "payloadHash"), "0x" + "11" * 32)
    for key, value in payload.items():
        if isinstance(value, int) and not isinstance(value, bool):
            for bad in BAD_INTS:
                yield f"payload.{key} = {bad!r}", sign(_with(base, ("payload", key), bad))
        if isinstance(value, str):
            for text in ("\u2028", "caf\u00e9", "\U0001f600", "x" * 3000, "\x1b[31m", 5):
                yield f"payload.{key} = {text!r:.20}", sign(_with(base, ("payload", key), text))
    # The signature: other forms of a valid one, and broken ones.
    signature = base["signature"]
    raw = bytes.fromhex(signature[2:])
    yield "high-s signature", _with(base, ("signature",), high_s(signature))
    yield "v as 0/1", _with(base, ("signature",), "0x" + raw[:64].hex() + f"{raw[64] - 27:02x}")
    yield "v = 29", _with(base, ("signature",), "0x" + raw[:64].hex() + "1d")
    yield "upper-case signature", _with(base, ("signature",), "0x" + signature[2:].upper())
    yield "s = 0", _with(base, ("signature",), "0x" + raw[:32].hex() + "00" * 32 + "1b")
    yield "r = 0", _with(base, ("signature",), "0x" + "00" * 32 + raw[32:].hex())
    yield (
        "r = n",
        _with(base, ("signature",), "0x" + SECP256K1_N.to_bytes(32, "big").hex() + raw[32:].hex()),
    )
    yield "short signature", _with(base, ("signature",), signature[:-2])
    yield "signature with a newline", _with(base, ("signature",), signature + "\n")
    yield "signature by another key", resigned(base, Signer.generate(), domain)
    yield (
        "signed for another chain",
        resigned(
            base,
            signer,
            Domain(chainId=domain.chainId + 1, verifyingContract=domain.verifyingContract),
        ),
    )
    yield "field changed after signing", _with(base, ("record", "lotId"), "LOT-OTHER")
    yield "not an object", [base]


def corpus(
    records: list[tuple[SignedRecord, Signer]],
    domain: Domain,
    extra: Callable[[], list[Case]] | None = None,
) -> list[Case]:
    """Every mutation of every record, plus ``extra`` cases; and a few non-objects."""
    cases: list[Case] = [("null", None), ("a string", "record"), ("a number", 1), ("empty", {})]
    for signed, signer in records:
        kind = signed.record.kind.value
        cases.extend((f"{kind}: {name}", data) for name, data in mutations(signed, signer, domain))
    if extra is not None:
        cases.extend(extra())
    return cases
