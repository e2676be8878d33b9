"""The fast path of bulk verification against the full single-receipt verifier, receipt by
receipt, on a corpus the adversary wrote: every tamper we could think of beside honest
receipts of several kinds, batches and signers. The fast path may only ever say "valid", and
only where ``verify_receipt`` / ``verify_receipt_offline`` say so; every verdict, failing check
and reason must be the full verifier's, and the chain must be asked exactly as often."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger._bulk_fast import _plain, _plain_json
from ledger.bulk_verify import (
    CachingChain,
    FastChainVerifier,
    FastLogVerifier,
    ReceiptInput,
    Verdict,
    read_receipts,
    verdict_of,
    verify_all,
)
from ledger.canonical import canonical_json, payload_hash
from ledger.chain import ChainClient
from ledger.eip712 import domain_separator, record_struct_hash, typed_data_digest
from ledger.keys import SECP256K1_N, Signer
from ledger.merkle import StandardMerkleTree
from ledger.receipts import build_receipt
from ledger.records import Domain, QualityRecord, RecordKind, Role, SignedRecord, new_salt
from ledger.signing import sign_record
from ledger.tlog import (
    COSIGNATURE_V1,
    Checkpoint,
    LogProof,
    LogTree,
    leaf_hash,
    ledger_origin,
    record_entry,
    sign_checkpoint,
)
from ledger.tlog import Signer as NoteSigner
from ledger.tlog.verify import CheckpointCache, verify_receipt_offline
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import VerificationReport, verify_receipt
from tests.helpers import inspection_payload

# A look-alike of the pinned ledger: another contract address (same chain).
LOOK_ALIKE = "0x" + "5f" * 20
AUDIT = {
    "standard": "IATF16949",
    "auditType": "unannounced",
    "majorNonconformities": 1,
    "minorNonconformities": 2,
}


def _plain_inspection(n: int) -> dict[str, Any]:
    """A payload whose floats are all non-integral (ledger.canonical's plain case)."""
    return {
        "disposition": "non_conformant",
        "inspectionType": "incoming",
        "lotSize": 1000 + n,
        "sampleSize": 50,
        "defectList": [{"code": f"C{n % 5}", "count": 1, "severity": "minor"}],
        "sensorReport": [
            {
                "type": "bore_diameter",
                "uom": "MMT",
                "lsl": 9.95,
                "usl": 10.05,
                "values": [10.01, 9.99 + n / 1000, 10.02],
            }
        ],
    }


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    chain = ChainClient.in_process()
    deployment = chain.deploy()
    domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)
    parties = {name: Signer.generate() for name in ("s0", "s1", "oem", "auditor", "revoked")}
    chain.register_participant(parties["s0"].address, Role.SUPPLIER, "SUP-00")
    chain.register_participant(parties["s1"].address, Role.SUPPLIER, "SUP-01")
    chain.register_participant(parties["oem"].address, Role.OEM, "OEM-01")
    chain.register_participant(parties["auditor"].address, Role.AUDITOR, "AUD-01")
    chain.register_participant(parties["revoked"].address, Role.SUPPLIER, "SUP-09")
    registered_at = chain.block_timestamp()
    chain.advance_time(60)
    chain.revoke_participant(parties["revoked"].address, Role.SUPPLIER)
    now = chain.block_timestamp() + 5
    nonce = iter(range(1, 10_000))

    def sign(
        who: str,
        *,
        kind: str = "inspection",
        subject: str = "SUP-00",
        payload: dict[str, Any] | None = None,
        quantity: int = 50,
        defects: int = 1,
        signed_at: int = now,
        event_time: int = now - 3600,
        on: Domain = domain,
    ) -> SignedRecord:
        n = next(nonce)
        return sign_record(
            parties[who],
            on,
            subject=subject,
            kind=kind,
            part_number="P-1",
            lot_id=f"L-{n}",
            event_time=event_time,
            quantity=quantity,
            defects=defects,
            nonce=n,
            payload=payload if payload is not None else inspection_payload(),
            signed_at=signed_at,
        )

    delivery = {"purchaseOrder": "PO-7", "promisedTime": now - 7200, "deliveredTime": now - 3600}
    complaint = {
        "complaintId": "CMP-1",
        "severity": "major",
        "defectCode": "CRACK",
        # Non-ASCII and control characters: printed as they are / escaped, never re-spelled.
        "description": 'Riß im Gehäuse — \u00e9\u20ac\U0001f600\ttab\nline "quoted" \\ \x01',
    }
    first = [
        sign("s0"),  # floats such as 10.0: canonical JSON rewrites them
        sign("s1", subject="SUP-01", payload=_plain_inspection(1)),
        sign("s0", kind="delivery", payload=delivery, quantity=10, defects=0),
        sign("oem", kind="complaint", payload=complaint, quantity=1, defects=1),
        sign("auditor", kind="audit", payload=AUDIT, quantity=3, defects=1),
        # Failing for reasons that only the chain shows:
        sign("revoked", subject="SUP-09"),  # signed after the signer's role was revoked
        # ... and one it signed while it held the role: valid
        sign("revoked", subject="SUP-09", signed_at=registered_at + 10, event_time=registered_at),
        sign("s0", subject="SUP-01"),  # a supplier filing about another supplier
        sign("s0", kind="complaint", payload=complaint, quantity=1, defects=1),  # not an OEM
        sign("s0", signed_at=now + 10_000, event_time=now + 9_000),  # after its anchoring
        # Signed for another contract, or another chain: valid signatures, wrong domain.
        sign("s0", on=Domain(chainId=deployment.chain_id, verifyingContract=LOOK_ALIKE)),
        sign(
            "s0",
            on=Domain(chainId=deployment.chain_id + 1, verifyingContract=domain.verifyingContract),
        ),
    ]
    second = [
        sign(f"s{n % 2}", subject=f"SUP-0{n % 2}", payload=_plain_inspection(n)) for n in range(12)
    ]

    def forge(
        fields: dict[str, Any], payload: dict[str, Any], then: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An envelope a hostile signer (s0, a real supplier) signed over values the schema
        refuses, as JSON; ``then`` replaces values after signing by others that hash the same
        (``true`` for a signed 1). Only the format check can refuse it."""
        n = next(nonce)
        values: dict[str, Any] = {
            "signer": parties["s0"].address,
            "subject": "SUP-00",
            "kind": "inspection",
            "partNumber": "P-1",
            "lotId": f"L-{n}",
            "eventTime": now - 3600,
            "signedAt": now,
            "quantity": 50,
            "defects": 1,
            "nonce": n,
            "salt": new_salt(),
            "payloadHash": "0x" + payload_hash(payload).hex(),
            **fields,
        }
        struct = QualityRecord.model_construct(**{**values, "kind": RecordKind(values["kind"])})
        digest = typed_data_digest(domain_separator(domain), record_struct_hash(struct))
        return {
            "domain": domain.model_dump(mode="json"),
            "record": {**values, **(then or {})},
            "payload": payload,
            "signature": parties["s0"].sign_digest(digest),
            "_struct": record_struct_hash(struct),
        }

    one = inspection_payload(defects=1, sample=1)
    forged = [
        forge({"partNumber": "P 1"}, inspection_payload()),
        forge({"partNumber": ""}, inspection_payload()),
        forge({"subject": "SUP-00 "}, inspection_payload()),
        forge({"lotId": "L" * 65}, inspection_payload()),
        forge({"quantity": 1}, one, then={"quantity": True}),
        forge({"defects": 0}, inspection_payload(defects=0), then={"defects": False}),
        forge({"nonce": 1}, inspection_payload(), then={"nonce": True}),
        # defects above quantity, the payload agreeing with both
        forge(
            {"quantity": 1, "defects": 2},
            {**one, "defectList": [{"code": "FLASH", "count": 2, "severity": "minor"}]},
        ),
        forge({}, {**inspection_payload(), "extra": 1}),  # a field the schema does not know
        forge({"defects": 2}, inspection_payload()),  # counts disagree with the payload
        forge({}, {**inspection_payload(), "lotSize": 1000.0}),  # a float where an int goes
        forge({}, inspection_payload()),  # the control: this one is valid
    ]
    forged_tree = StandardMerkleTree.of([f.pop("_struct") for f in forged])
    result = chain.anchor_batch(forged_tree.root, len(forged))
    forged_receipts = []
    for envelope in forged:
        struct_hash = forged_tree.values[len(forged_receipts)]
        forged_receipts.append(
            {
                "version": 1,
                "record": envelope,
                "structHash": "0x" + struct_hash.hex(),
                "proof": ["0x" + h.hex() for h in forged_tree.proof(struct_hash)],
                "root": "0x" + forged_tree.root.hex(),
                "batchId": result.batch_id,
                "leafCount": len(forged),
                "chainId": domain.chainId,
                "contract": domain.verifyingContract,
                "transactionHash": result.tx_hash,
                "blockNumber": result.block_number,
                "blockTimestamp": result.timestamp,
                "blockHash": chain.block_hash(result.block_number),
            }
        )
    batches = []
    for records in (first, second):
        tree = StandardMerkleTree.of([record_struct_hash(r.record) for r in records])
        result = chain.anchor_batch(tree.root, len(records))
        batches.append(
            [
                build_receipt(
                    r,
                    tree,
                    batch_id=result.batch_id,
                    transaction_hash=result.tx_hash,
                    block_number=result.block_number,
                    block_timestamp=result.timestamp,
                    block_hash=chain.block_hash(result.block_number),
                ).model_dump(mode="json")
                for r in records
            ]
        )
    # A batch that was never anchored, its receipts copied from a real batch's details.
    ghost_records = [sign("s0", payload=_plain_inspection(100 + n)) for n in range(2)]
    ghost_tree = StandardMerkleTree.of([record_struct_hash(r.record) for r in ghost_records])
    real = batches[1][0]
    ghost = [
        build_receipt(
            r,
            ghost_tree,
            batch_id=real["batchId"],
            transaction_hash=real["transactionHash"],
            block_number=real["blockNumber"],
            block_timestamp=real["blockTimestamp"],
            block_hash=real["blockHash"],
        ).model_dump(mode="json")
        for r in ghost_records
    ]
    # The replay the domain check exists for: a record validly signed for a look-alike
    # contract (or another chain), its receipt naming the pinned ledger. Every other check
    # passes; only domain_matches_contract refuses it.
    for signed_elsewhere in batches[0][-2:]:
        replayed = copy.deepcopy(signed_elsewhere)
        replayed["contract"], replayed["chainId"] = deployment.ledger, deployment.chain_id
        batches[0].append(replayed)
    genesis = chain.block_hash(0)
    assert genesis is not None
    trust = TrustRoot(
        chain_id=deployment.chain_id, ledger=deployment.ledger, anchor=BlockAnchor(0, genesis)
    )
    return {
        "chain": chain,
        "trust": trust,
        "batches": batches,
        "ghost": ghost,
        "forged": forged_receipts,
    }


def _flip(text: str, at: int = -1) -> str:
    """One hex digit of ``text`` changed."""
    i = at % len(text)
    return text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :]


def _high_s(signature: str) -> str:
    """The same signature in its other (malleated) form: s -> n - s, v flipped."""
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    v = 27 + 28 - raw[64]
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([v])).hex()


def _spaced(hex_string: str) -> str:
    """As long as ``hex_string``, with its last two digits replaced by spaces between bytes."""
    return hex_string[:4] + " " + hex_string[4:-2] + " "


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _mutations(world: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    """What the adversary does to an honest receipt (each applied to a copy)."""
    second = world["batches"][1]
    other_root = second[0]["root"]

    def rec(r: dict[str, Any]) -> dict[str, Any]:
        return r["record"]["record"]  # type: ignore[no-any-return]

    def pay(r: dict[str, Any]) -> dict[str, Any]:
        return r["record"]["payload"]  # type: ignore[no-any-return]

    def sig(r: dict[str, Any]) -> bytes:
        return bytes.fromhex(r["record"]["signature"][2:])

    def setv(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def apply(r: dict[str, Any]) -> None:
            *head, last = path.split(".")
            node = r
            for key in head:
                node = node[key]
            node[last] = value

        return apply

    def drop(path: str) -> Callable[[dict[str, Any]], None]:
        def apply(r: dict[str, Any]) -> None:
            *head, last = path.split(".")
            node = r
            for key in head:
                node = node[key]
            del node[last]

        return apply

    return [
        # the payload
        ("payload number changed", lambda r: pay(r).__setitem__("lotSize", pay(r)["lotSize"] + 1)),
        # 1000.0 has the same canonical JSON as 1000 (so the same payloadHash), but the schema
        # takes only integers there.
        (
            "payload integer as float",
            lambda r: pay(r).__setitem__("lotSize", float(pay(r)["lotSize"])),
        ),
        (
            "payload integer as string",
            lambda r: pay(r).__setitem__("lotSize", str(pay(r)["lotSize"])),
        ),
        ("payload huge integer", lambda r: pay(r).__setitem__("lotSize", 2**60)),
        ("payload unknown field", lambda r: pay(r).__setitem__("extra", 1)),
        (
            "payload keys reordered",
            lambda r: r["record"].__setitem__("payload", dict(reversed(list(pay(r).items())))),
        ),
        ("payload not an object", setv("record.payload", [])),
        # orjson prints at most 254 levels deep; JSON parsers take 1024
        ("payload nested 300 deep", lambda r: pay(r).__setitem__("defectList", _nested(300))),
        ("payload nested 900 deep", lambda r: pay(r).__setitem__("extra", _nested(900))),
        (
            "payload exponent float",
            lambda r: pay(r).__setitem__(
                "sensorReport", [{"type": "t", "uom": "MMT", "lsl": 1e-7, "values": [1e-5]}]
            ),
        ),
        # the proof
        ("proof sibling changed", lambda r: r["proof"].__setitem__(0, _flip(r["proof"][0]))),
        (
            "proof sibling upper case",
            lambda r: r["proof"].__setitem__(0, "0x" + r["proof"][0][2:].upper()),
        ),
        (
            "proof sibling with a space",
            lambda r: r["proof"].__setitem__(0, r["proof"][0][:10] + " " + r["proof"][0][10:]),
        ),
        ("proof sibling not a string", lambda r: r["proof"].__setitem__(0, 7)),
        # 66 characters, two of them spaces: bytes.fromhex takes it, as 31 bytes
        (
            "proof sibling with two spaces",
            lambda r: r["proof"].__setitem__(0, _spaced(r["proof"][0])),
        ),
        ("root with two spaces", lambda r: r.__setitem__("root", _spaced(r["root"]))),
        (
            "structHash with two spaces",
            lambda r: r.__setitem__("structHash", _spaced(r["structHash"])),
        ),
        (
            "signature with two spaces",
            lambda r: r["record"].__setitem__("signature", _spaced(r["record"]["signature"])),
        ),
        ("salt with two spaces", lambda r: rec(r).__setitem__("salt", _spaced(rec(r)["salt"]))),
        ("proof sibling a list", lambda r: r["proof"].__setitem__(0, [r["proof"][0]])),
        ("proof truncated", lambda r: r["proof"].pop()),
        ("proof extended", lambda r: r["proof"].append(r["proof"][-1])),
        ("proof empty", setv("proof", [])),
        ("proof of another leaf", lambda r: r.__setitem__("proof", list(reversed(r["proof"])))),
        ("proof for another root", setv("root", other_root)),
        ("root upper case", lambda r: r.__setitem__("root", "0x" + r["root"][2:].upper())),
        # the signature
        (
            "signature forged",
            lambda r: r["record"].__setitem__("signature", _flip(r["record"]["signature"], 10)),
        ),
        (
            "signature malleated (high s)",
            lambda r: r["record"].__setitem__("signature", _high_s(r["record"]["signature"])),
        ),
        (
            "signature v as 0/1",
            lambda r: r["record"].__setitem__(
                "signature", "0x" + (sig(r)[:64] + bytes([sig(r)[64] - 27])).hex()
            ),
        ),
        (
            "signature v 29",
            lambda r: r["record"].__setitem__(
                "signature", "0x" + (sig(r)[:64] + bytes([29])).hex()
            ),
        ),
        (
            "signature s zero",
            lambda r: r["record"].__setitem__(
                "signature", "0x" + (sig(r)[:32] + bytes(32) + sig(r)[64:]).hex()
            ),
        ),
        (
            "signature upper case",
            lambda r: r["record"].__setitem__(
                "signature", "0x" + r["record"]["signature"][2:].upper()
            ),
        ),
        (
            "signature short",
            lambda r: r["record"].__setitem__("signature", r["record"]["signature"][:-2]),
        ),
        # the signed struct
        ("signer lower case", lambda r: rec(r).__setitem__("signer", rec(r)["signer"].lower())),
        (
            "signer bad checksum",
            lambda r: rec(r).__setitem__(
                "signer", rec(r)["signer"][:2] + rec(r)["signer"][2:].swapcase()
            ),
        ),
        (
            "signer another party",
            lambda r: rec(r).__setitem__("signer", second[1]["record"]["record"]["signer"]),
        ),
        ("quantity changed", lambda r: rec(r).__setitem__("quantity", rec(r)["quantity"] + 1)),
        ("quantity a boolean", setv("record.record.quantity", True)),
        ("defects above quantity", setv("record.record.defects", 10**6)),
        ("eventTime beyond uint64", setv("record.record.eventTime", 2**64)),
        ("nonce negative", setv("record.record.nonce", -1)),
        ("kind unknown", setv("record.record.kind", "INSPECTION")),
        ("lotId with a newline", lambda r: rec(r).__setitem__("lotId", rec(r)["lotId"] + "\n")),
        ("lotId too long", setv("record.record.lotId", "L" * 65)),
        ("record extra field", setv("record.record.extra", 1)),
        ("envelope extra field", setv("record.extra", 1)),
        ("envelope missing signature", drop("record.signature")),
        ("subject not a string", setv("record.record.subject", 5)),
        ("lotId not a string", setv("record.record.lotId", 5)),
        ("partNumber empty", setv("record.record.partNumber", "")),
        ("signer not hex", setv("record.record.signer", "0x" + "zz" * 20)),
        ("record missing salt", drop("record.record.salt")),
        (
            "salt upper case",
            lambda r: rec(r).__setitem__("salt", "0x" + rec(r)["salt"][2:].upper()),
        ),
        ("salt changed", lambda r: rec(r).__setitem__("salt", _flip(rec(r)["salt"]))),
        (
            "payloadHash changed",
            lambda r: rec(r).__setitem__("payloadHash", _flip(rec(r)["payloadHash"])),
        ),
        # the domain
        ("domain look-alike contract", setv("record.domain.verifyingContract", LOOK_ALIKE)),
        (
            "domain other chain id",
            lambda r: r["record"]["domain"].__setitem__("chainId", r["chainId"] + 1),
        ),
        ("domain chain id a boolean", setv("record.domain.chainId", True)),
        ("domain name missing (the model's default)", drop("record.domain.name")),
        ("domain name other", setv("record.domain.name", "QualityLedger2")),
        ("domain version other", setv("record.domain.version", "2")),
        ("domain version absent (the model's default)", drop("record.domain.version")),
        ("domain extra field", setv("record.domain.salt", "0x00")),
        ("domain contract not hex", setv("record.domain.verifyingContract", "0x" + "zz" * 20)),
        (
            "domain contract lower case",
            lambda r: r["record"]["domain"].__setitem__("verifyingContract", r["contract"].lower()),
        ),
        # the receipt's anchoring details
        ("structHash changed", lambda r: r.__setitem__("structHash", _flip(r["structHash"]))),
        (
            "structHash upper case",
            lambda r: r.__setitem__("structHash", "0x" + r["structHash"][2:].upper()),
        ),
        ("contract look-alike", setv("contract", LOOK_ALIKE)),
        ("contract not hex", setv("contract", "0x" + "zz" * 20)),
        ("contract not a string", setv("contract", 5)),
        ("proof not a list", lambda r: r.__setitem__("proof", r["proof"][0])),
        ("root not a string", setv("root", 5)),
        ("leafCount zero", setv("leafCount", 0)),
        ("blockTimestamp a boolean", setv("blockTimestamp", True)),
        ("contract lower case", lambda r: r.__setitem__("contract", r["contract"].lower())),
        ("chainId other", lambda r: r.__setitem__("chainId", r["chainId"] + 1)),
        ("chainId huge", setv("chainId", 2**70)),
        ("batchId off by one", lambda r: r.__setitem__("batchId", r["batchId"] + 1)),
        ("batchId as string (coerced)", lambda r: r.__setitem__("batchId", str(r["batchId"]))),
        ("batchId as float (coerced)", lambda r: r.__setitem__("batchId", float(r["batchId"]))),
        ("batchId huge", setv("batchId", 2**70)),
        ("batchId zero", setv("batchId", 0)),
        ("leafCount off by one", lambda r: r.__setitem__("leafCount", r["leafCount"] + 1)),
        ("blockNumber negative", setv("blockNumber", -1)),
        ("blockNumber off by one", lambda r: r.__setitem__("blockNumber", r["blockNumber"] + 1)),
        (
            "blockTimestamp off by one",
            lambda r: r.__setitem__("blockTimestamp", r["blockTimestamp"] + 1),
        ),
        ("blockHash wrong", lambda r: r.__setitem__("blockHash", _flip(r["blockHash"]))),
        (
            "blockHash upper case",
            lambda r: r.__setitem__("blockHash", "0x" + r["blockHash"][2:].upper()),
        ),
        ("blockHash none (older receipt)", setv("blockHash", None)),
        ("blockHash absent (older receipt)", drop("blockHash")),
        ("transaction not a transaction", setv("transactionHash", other_root)),
        ("transaction of another batch", setv("transactionHash", second[0]["transactionHash"])),
        ("transaction not hex", setv("transactionHash", "0x" + "zz" * 32)),
        (
            "transaction short",
            lambda r: r.__setitem__("transactionHash", r["transactionHash"][:-2]),
        ),
        ("blockHash not hex", setv("blockHash", "0x" + "zz" * 32)),
        ("root short", lambda r: r.__setitem__("root", r["root"][:-2])),
        (
            "transaction upper case",
            lambda r: r.__setitem__("transactionHash", "0x" + r["transactionHash"][2:].upper()),
        ),
        ("version 2", setv("version", 2)),
        ("version as string", setv("version", "1")),
        ("version absent (the default)", drop("version")),
        ("receipt extra field", setv("extra", 1)),
        ("receipt missing leafCount", drop("leafCount")),
        ("record not an object", setv("record", "0x00")),
        (
            "log well formed (unused with RPC)",
            setv("log", {"index": 0, "treeSize": 1, "inclusion": [], "checkpoint": "x"}),
        ),
        (
            "log upper-case inclusion",
            setv(
                "log",
                {"index": 0, "treeSize": 2, "inclusion": ["0x" + "AB" * 32], "checkpoint": "x"},
            ),
        ),
        (
            "log extra field",
            setv("log", {"index": 0, "treeSize": 1, "inclusion": [], "checkpoint": "x", "x": 1}),
        ),
        ("log a list", setv("log", [])),
    ]


def _corpus(world: dict[str, Any], seed: int) -> list[tuple[str, dict[str, Any]]]:
    first, second = world["batches"]
    honest = [*first, *second, *world["ghost"], *world["forged"]]
    # Each twice: a receipt's first copy may be the one that reads its facts (the full way);
    # the second is then the fast path's to judge, failing or not.
    corpus = [(f"honest {n}{c}", copy.deepcopy(r)) for n, r in enumerate(honest) for c in "ab"]
    # every mutation on an honest receipt of each batch and of each plain/canonical payload
    targets = [first[0], first[1], second[3]]
    for name, mutate in _mutations(world):
        for t, target in enumerate(targets):
            receipt = copy.deepcopy(target)
            mutate(receipt)
            corpus.append((f"{name} [{t}]", receipt))
    corpus += [(f"duplicate {n}", copy.deepcopy(second[n])) for n in (2, 5)]
    random.Random(seed).shuffle(corpus)
    return corpus


def _single(world: dict[str, Any], data: dict[str, Any]) -> VerificationReport:
    """The single-receipt verifier, asking the chain itself (no cache)."""
    return verify_receipt(None, data, world["chain"], world["trust"])


def _bulk(
    world: dict[str, Any], items: list[ReceiptInput], *, fast: bool
) -> tuple[list[Verdict], dict[str, VerificationReport], CachingChain, int]:
    """Bulk verification as the CLI runs it: verdicts, the full reports it made (by name),
    the caching chain and how many verdicts the fast path gave."""
    cached = CachingChain(world["chain"])
    reports: dict[str, VerificationReport] = {}
    current: list[str] = []

    def one(data: dict[str, Any]) -> VerificationReport:
        report = verify_receipt(None, data, cached, world["trust"])
        reports[current[-1]] = report
        return report

    fast_path = FastChainVerifier(cached, world["trust"]) if fast else None
    hits = 0

    def counting(name: str, data: dict[str, Any]) -> Verdict | None:
        nonlocal hits
        assert fast_path is not None
        verdict = fast_path(name, data)
        hits += verdict is not None
        return verdict

    def named(items: list[ReceiptInput]) -> Any:
        for item in items:
            current.append(item.name)
            yield item

    verdicts = list(verify_all(named(items), one, counting if fast else None))
    return verdicts, reports, cached, hits


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_path_gives_the_single_receipt_verifiers_verdict_for_every_receipt(
    world: dict[str, Any], seed: int
) -> None:
    corpus = _corpus(world, seed)
    items = [ReceiptInput(name, data) for name, data in corpus]
    fast, reports, cached, hits = _bulk(world, items, fast=True)
    slow, _, uncached, _ = _bulk(world, items, fast=False)
    expected = [verdict_of(item, _single(world, item.data or {})) for item in items]
    for got, want in zip(fast, expected, strict=True):
        assert got == want, got.name
    assert slow == expected
    # Failures went the full way, and fail on exactly the single verifier's checks.
    for item, verdict in zip(items, fast, strict=True):
        if not verdict.ok:
            single = _single(world, item.data or {})
            assert [c.check for c in reports[item.name].checks if not c.ok] == [
                c.check for c in single.checks if not c.ok
            ], item.name
    # The corpus has both kinds in plenty, and the fast path carried most valid receipts: all
    # but the first of each batch and signer, and those only the lax parser takes.
    valid = sum(v.ok for v in expected)
    assert valid >= 30 and len(expected) - valid >= 150, (valid, len(expected))
    assert hits >= valid // 2, (hits, valid)
    # The chain was asked exactly what verifying each receipt the full way asks.
    assert cached.calls == uncached.calls
    assert cached.roots == uncached.roots and cached.signers == uncached.signers


def test_only_the_format_check_refuses_what_a_hostile_signer_signed(world: dict[str, Any]) -> None:
    """Records signed (and anchored) over values the schema refuses, or with ``true`` where a
    1 was signed: the signature and the chain agree, the format check alone says no, and
    the fast path must not say yes."""
    forged = world["forged"]
    items = [ReceiptInput(f"f{n}", r) for n, r in enumerate([forged[-1], *forged])]
    verdicts, _, _, hits = _bulk(world, items, fast=True)
    assert [v.failed_check for v in verdicts] == [None, *["receipt_format"] * 11, None]
    assert hits == 1  # the control's second copy
    for item, verdict in zip(items, verdicts, strict=True):
        report = _single(world, item.data or {})
        assert verdict == verdict_of(item, report)


class _LookAlikeInTheSameBlock:
    """The real chain, where the anchoring transaction of ``tx_hash`` is reported as sent to
    the look-alike contract: what a transaction to a look-alike in the anchoring block looks
    like. Receipts naming the look-alike then agree with the chain on everything but the pin."""

    def __init__(self, chain: ChainClient, tx_hash: str) -> None:
        self._chain = chain
        self._tx = tx_hash.lower()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chain, name)

    def transaction_block(self, tx_hash: str) -> tuple[int, str] | None:
        found = self._chain.transaction_block(tx_hash)
        if found is None or tx_hash.lower() != self._tx:
            return found
        return found[0], LOOK_ALIKE


def test_a_receipt_naming_a_look_alike_fails_only_the_pin(world: dict[str, Any]) -> None:
    signed_for_look_alike = world["batches"][0][10]
    assert signed_for_look_alike["contract"].lower() == LOOK_ALIKE
    chain = _LookAlikeInTheSameBlock(world["chain"], signed_for_look_alike["transactionHash"])
    report = verify_receipt(None, signed_for_look_alike, chain, world["trust"])
    assert [c.check.value for c in report.checks if not c.ok] == ["trust_root"]
    cached = CachingChain(chain)
    fast = FastChainVerifier(cached, world["trust"])
    items = [ReceiptInput(f"r{n}", signed_for_look_alike) for n in range(2)]

    def one(data: dict[str, Any]) -> VerificationReport:
        return verify_receipt(None, data, cached, world["trust"])

    verdicts = list(verify_all(items, one, fast))
    assert [v.failed_check for v in verdicts] == ["trust_root", "trust_root"]
    assert fast("r", signed_for_look_alike) is None  # every fact read, and still no
    # An honest receipt of that batch names the pinned ledger; its transaction, as this chain
    # tells it, went to the look-alike: only anchor_matches_receipt refuses it.
    honest = world["batches"][0][0]
    assert verify_receipt(None, honest, world["chain"], world["trust"]).ok
    report = verify_receipt(None, honest, cached, world["trust"])
    assert [c.check.value for c in report.checks if not c.ok] == ["anchor_matches_receipt"]
    assert fast("r", honest) is None


def test_what_the_lax_models_accept_still_passes(world: dict[str, Any]) -> None:
    """Values the full parser coerces (a batch id as a string or a float, a domain without its
    name) are not the fast path's to judge: they pass the full way, as before."""
    base = world["batches"][1][4]
    lax = []
    for value in (str(base["batchId"]), float(base["batchId"])):
        receipt = copy.deepcopy(base)
        receipt["batchId"] = value
        lax.append(receipt)
    nameless = copy.deepcopy(base)
    del nameless["record"]["domain"]["name"]
    lax.append(nameless)
    items = [ReceiptInput(f"r{n}", r) for n, r in enumerate([base, base, *lax])]
    verdicts, reports, _, hits = _bulk(world, items, fast=True)
    assert all(v.ok for v in verdicts)
    assert hits == 1  # the second copy of base; the first read the chain facts
    assert set(reports) == {"r0", "r2", "r3", "r4"}
    assert all(_single(world, r).ok for r in lax)


def test_the_fast_path_reads_nothing_itself(world: dict[str, Any]) -> None:
    """Before the full path has read a batch's and a signer's facts, the fast path vouches
    for nothing: it never asks the chain, so a fresh run starts the full way."""
    cached = CachingChain(world["chain"])
    fast = FastChainVerifier(cached, world["trust"])
    receipt = world["batches"][1][0]
    assert fast("r", receipt) is None
    assert cached.calls == 0
    assert verify_receipt(None, receipt, cached, world["trust"]).ok
    assert fast("r", receipt) == Verdict("r", True, receipt["structHash"], None, None)
    # Another batch's receipt by the same signer: its root is not read yet.
    assert fast("r", world["batches"][0][0]) is None


def test_jsonl_lines_the_adversary_wrote(world: dict[str, Any], tmp_path: Path) -> None:
    """Read from a JSONL export as the CLI reads it: broken lines, numbers beyond 64 bits,
    duplicate keys (the last wins, for both paths alike), NaN."""
    good = world["batches"][1]
    text = orjson.dumps(good[0]).decode()
    lines = [
        text,
        "{not json",
        "[1, 2]",
        "",
        text.replace('"batchId":', '"batchId":1,"batchId":', 1),  # duplicate key, last wins
        text.replace(f'"batchId":{good[0]["batchId"]}', '"batchId":18446744073709551616'),
        text.replace(f'"blockNumber":{good[0]["blockNumber"]}', '"blockNumber":NaN'),
        text.replace('"version":1', '"version":1e0'),
        orjson.dumps(good[1]).decode(),
        orjson.dumps(good[1]).decode(),
    ]
    export = tmp_path / "export.jsonl"
    export.write_text("\n".join(lines) + "\n")
    items = list(read_receipts(export))
    fast, _, _, _ = _bulk(world, items, fast=True)
    expected = [
        verdict_of(item, None if item.data is None else _single(world, item.data)) for item in items
    ]
    assert fast == expected
    assert [v.ok for v in fast[:4]] == [True, False, False, True]  # the last "batchId" wins
    assert fast[1].failed_check == fast[2].failed_check == "receipt_format"
    assert fast[-1].ok and fast[-2].ok  # a duplicate is verified like any other receipt


# -- offline: a log key and witnesses instead of RPC ------------------------------------------


@pytest.fixture(scope="module")
def logged(world: dict[str, Any]) -> dict[str, Any]:
    """The world's receipts with log proofs: two checkpoints (the first batch's, then both
    batches'), signed by the log key and cosigned by one of two witnesses."""
    trust = world["trust"]
    origin = ledger_origin(trust.chain_id, trust.ledger)
    log_key = NoteSigner.generate(origin)
    witness = NoteSigner.generate("witness.example/w1", COSIGNATURE_V1)
    idle_witness = NoteSigner.generate("witness.example/w2", COSIGNATURE_V1)
    first, second = world["batches"]
    tree = LogTree()
    receipts: list[dict[str, Any]] = []
    for batch in (first, second):
        start = len(tree)
        for r in batch:
            tree.append(leaf_hash(record_entry(r["structHash"], r["root"])))
        size = len(tree)
        note = sign_checkpoint(Checkpoint(origin, size, tree.root(size)), log_key)
        note = note.with_signatures([witness.cosign(note.text)])
        for i, r in enumerate(batch):
            receipt = copy.deepcopy(r)
            receipt["log"] = LogProof(
                index=start + i,
                treeSize=size,
                inclusion=["0x" + h.hex() for h in tree.inclusion_proof(start + i, size)],
                checkpoint=note.encode(),
            ).model_dump(mode="json")
            receipts.append(receipt)
    stranger = NoteSigner.generate(origin)
    return {
        "receipts": receipts,
        "log_key": log_key.verifier,
        "witnesses": [witness.verifier, idle_witness.verifier],
        "stranger": stranger,
    }


def _offline_mutations(
    logged: dict[str, Any],
) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    other = logged["receipts"][-1]["log"]

    def log(r: dict[str, Any]) -> dict[str, Any]:
        return r["log"]  # type: ignore[no-any-return]

    def forge_note(r: dict[str, Any]) -> None:
        note = log(r)["checkpoint"]
        last = note.rstrip("\n").split("\n")[-1]
        head, _, b64 = last.rpartition(" ")
        log(r)["checkpoint"] = note.replace(
            last, f"{head} {b64[:10]}{'A' if b64[10] != 'A' else 'B'}{b64[11:]}"
        )

    def stranger_note(r: dict[str, Any]) -> None:
        text = log(r)["checkpoint"].split("\n\n")[0] + "\n"
        log(r)["checkpoint"] = sign_checkpoint(Checkpoint.parse(text), logged["stranger"]).encode()

    return [
        ("log missing", lambda r: r.pop("log")),
        ("log none", lambda r: r.__setitem__("log", None)),
        (
            "inclusion sibling changed",
            lambda r: log(r)["inclusion"].__setitem__(0, _flip(log(r)["inclusion"][0])),
        ),
        ("inclusion truncated", lambda r: log(r)["inclusion"].pop()),
        (
            "inclusion upper case",
            lambda r: log(r)["inclusion"].__setitem__(
                0, log(r)["inclusion"][0].upper().replace("0X", "0x")
            ),
        ),
        ("index off by one", lambda r: log(r).__setitem__("index", log(r)["index"] + 1)),
        ("index beyond the tree", lambda r: log(r).__setitem__("index", log(r)["treeSize"])),
        (
            "treeSize of the other checkpoint",
            lambda r: log(r).__setitem__("treeSize", other["treeSize"]),
        ),
        (
            "checkpoint of the other batch",
            lambda r: log(r).__setitem__("checkpoint", other["checkpoint"]),
        ),
        ("checkpoint signature forged", forge_note),
        ("checkpoint signed by another key", stranger_note),
        ("checkpoint empty", lambda r: log(r).__setitem__("checkpoint", "")),
    ]


def _offline_corpus(
    world: dict[str, Any], logged: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    receipts = logged["receipts"]
    corpus = [(f"honest {n}{c}", copy.deepcopy(r)) for n, r in enumerate(receipts) for c in "ab"]
    targets = [receipts[0], receipts[1], receipts[-3]]
    for name, mutate in [*_offline_mutations(logged), *_mutations(world)]:
        for t, target in enumerate(targets):
            receipt = copy.deepcopy(target)
            mutate(receipt)
            corpus.append((f"{name} [{t}]", receipt))
    random.Random(3).shuffle(corpus)
    return corpus


@pytest.mark.parametrize(("quorum", "pinned"), [(0, True), (1, True), (1, False), (2, True)])
def test_offline_fast_path_gives_the_offline_verifiers_verdict_for_every_receipt(
    world: dict[str, Any], logged: dict[str, Any], quorum: int, pinned: bool
) -> None:
    trust = world["trust"] if pinned else None
    keys: dict[str, Any] = {
        "log_key": logged["log_key"],
        "witnesses": logged["witnesses"],
        "quorum": quorum,
        "trust": trust,
    }
    items = [ReceiptInput(name, data) for name, data in _offline_corpus(world, logged)]
    checkpoints = CheckpointCache()
    fast = FastLogVerifier(checkpoints, **keys)
    hits = 0

    def counting(name: str, data: dict[str, Any]) -> Verdict | None:
        nonlocal hits
        verdict = fast(name, data)
        hits += verdict is not None
        return verdict

    def one(data: dict[str, Any]) -> VerificationReport:
        return verify_receipt_offline(None, data, checkpoints=checkpoints, **keys)

    got = list(verify_all(items, one, counting))
    expected = [verdict_of(item, verify_receipt_offline(None, item.data, **keys)) for item in items]
    for g, e in zip(got, expected, strict=True):
        assert g == e, g.name
    valid = sum(v.ok for v in expected)
    if quorum == 2:  # one witness cosigned: nothing passes, and the fast path said nothing
        assert valid == 0 and hits == 0
    else:
        assert valid >= 20 and hits >= valid // 2, (hits, valid)


# -- the payload's canonical JSON ---------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_plain_payloads_print_as_their_canonical_json(value: Any) -> None:
    """Where the fast path prints a payload itself (through orjson), the bytes are those of
    ledger.canonical; elsewhere it leaves the printing to ledger.canonical."""
    value = json.loads(json.dumps(value))  # what a JSON parser hands over (no tuples)
    if _plain(value):
        assert _plain_json(value) == canonical_json(value)


def test_plain_refuses_what_the_plain_encoder_would_print_otherwise() -> None:
    for value in (
        {"x": 10.0},
        {"x": [1e-7]},
        {"x": 1e16 + 0.5},
        {"x": 2**53 + 1},
        {"\U0001f600": 1},
        {"é": 1},
        {"x": float("nan")},
    ):
        assert not _plain(value), value
    assert _plain({"a": [0.5, -0.25, 1, "\U0001f600\x01"], "b": None, "c": True})
    # plain, but deeper than orjson prints: left to ledger.canonical, which prints it
    deep = {"x": _nested(300)}
    assert _plain(deep) and _plain_json(deep) is None and canonical_json(deep)


def test_jsonl_read_in_chunks_keeps_every_line_and_its_number(tmp_path: Path) -> None:
    """Lines are read a megabyte at a time: across chunk boundaries every line keeps its
    number, and the adversary's lines (a line beyond the size limit, one not JSON, one a list,
    one a JSON object in another type's clothing, blank ones) are refused alone."""
    from ledger.bulk_verify import MAX_RECEIPT_BYTES

    good = orjson.dumps({"structHash": "0x" + "ab" * 32, "pad": "x" * 700})
    lines: list[bytes] = []
    for n in range(1, 4001):
        if n == 1500:
            lines.append(b'{"a": "' + b"y" * MAX_RECEIPT_BYTES + b'"}')
        elif n == 1501:
            lines.append(b"{not json")
        elif n == 2999:
            lines.append(b"[1, 2]")
        elif n == 3000:
            lines.append(b'"{}"')
        elif n % 997 == 0:
            lines.append(b"   \t")
        else:
            lines.append(good)
    export = tmp_path / "receipts.jsonl"
    export.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_receipts(export))
    blank = {n for n in range(1, 4001) if n % 997 == 0}
    assert [i.name for i in items] == [
        f"receipts.jsonl:{n}" for n in range(1, 4001) if n not in blank
    ]
    bad = {i.name: i.error or "" for i in items if i.data is None}
    assert sorted(bad) == sorted(f"receipts.jsonl:{n}" for n in (1500, 1501, 2999, 3000))
    assert "larger than" in bad["receipts.jsonl:1500"]
    assert "not JSON" in bad["receipts.jsonl:1501"]
    assert "JSON object, got list" in bad["receipts.jsonl:2999"]
    assert "JSON object, got str" in bad["receipts.jsonl:3000"]
    assert all(i.data == orjson.loads(good) for i in items if i.data is not None)
