"""The offline verifier against a real (in-process) chain: every check, every tamper."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.chain import ChainClient
from ledger.eip712 import record_struct_hash
from ledger.keys import Signer
from ledger.merkle import StandardMerkleTree
from ledger.receipts import build_receipt
from ledger.records import Domain, Role, SignedRecord
from ledger.signing import sign_record
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import verify_receipt
from tests.helpers import inspection_payload

AUDIT = {
    "standard": "IATF16949",
    "auditType": "unannounced",
    "majorNonconformities": 1,
    "minorNonconformities": 2,
}


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    chain = ChainClient.in_process()
    deployment = chain.deploy()
    domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)
    supplier, auditor = Signer.generate(), Signer.generate()
    chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-01")
    chain.register_participant(auditor.address, Role.AUDITOR, "AUD-01")
    now = chain.block_timestamp()

    def sign(
        signer: Signer,
        nonce: int,
        signed_at: int,
        kind: str = "inspection",
        payload: dict | None = None,
        quantity: int = 50,
        defects: int = 1,
    ) -> SignedRecord:
        return sign_record(
            signer,
            domain,
            subject="SUP-01",
            kind=kind,
            part_number="P-1",
            lot_id=f"L-{nonce}",
            event_time=1_700_000_000,
            quantity=quantity,
            defects=defects,
            nonce=nonce,
            payload=payload or inspection_payload(),
            signed_at=signed_at,
        )

    good = [sign(supplier, n, now) for n in range(3)]
    # A supplier key signing an audit: the service would refuse it; the verifier must too.
    forged_audit = sign(supplier, 10, now, kind="audit", payload=AUDIT, quantity=3, defects=1)
    audit = sign(auditor, 11, now, kind="audit", payload=AUDIT, quantity=3, defects=1)
    chain.advance_time(60)
    chain.revoke_participant(supplier.address, Role.SUPPLIER)
    revoked_at = chain.block_timestamp()
    after_revocation = sign(supplier, 20, revoked_at + 5)
    records = [*good, forged_audit, audit, after_revocation]
    tree = StandardMerkleTree.of([record_struct_hash(r.record) for r in records])
    result = chain.anchor_batch(tree.root, len(records))
    receipts = {
        r.record.nonce: build_receipt(
            r,
            tree,
            batch_id=result.batch_id,
            transaction_hash=result.tx_hash,
            block_number=result.block_number,
            block_timestamp=result.timestamp,
            block_hash=chain.block_hash(result.block_number),
        )
        for r in records
    }
    genesis = chain.block_hash(0)
    assert genesis is not None
    trust = TrustRoot(
        chain_id=deployment.chain_id,
        ledger=deployment.ledger,
        anchor=BlockAnchor(number=0, hash=genesis),
    )
    return {
        "chain": chain,
        "records": {r.record.nonce: r for r in records},
        "receipts": receipts,
        "trust": trust,
    }


def _verify(world: dict[str, Any], nonce: int, record: Any = None, receipt: Any = None):  # type: ignore[no-untyped-def]
    rec = world["records"][nonce] if record is None else record
    rcpt = world["receipts"][nonce] if receipt is None else receipt
    return verify_receipt(rec, rcpt, world["chain"], world["trust"])


def test_valid_record_passes_every_check(world: dict[str, Any]) -> None:
    report = _verify(world, 0)
    assert report.ok, report.to_json()
    assert len(report.checks) == 17
    assert not any(c.skipped for c in report.checks)


def test_revocation_invalidates_only_later_signatures(world: dict[str, Any]) -> None:
    for nonce in (0, 1, 2):
        assert _verify(world, nonce).ok
    report = _verify(world, 20)
    assert not report.ok
    assert report.first_failure.check.value == "signer_role_at_signing"


def test_supplier_cannot_sign_an_audit(world: dict[str, Any]) -> None:
    assert _verify(world, 11).ok  # the auditor's audit is fine
    report = _verify(world, 10)
    assert report.first_failure.check.value == "kind_allowed_for_role"


def _flip_hex(value: str) -> str:
    last = value[-1]
    return value[:-1] + ("1" if last != "1" else "2")


RECORD_FIELDS = {
    "subject": "SUP-02",
    "kind": "delivery",
    "partNumber": "P-2",
    "lotId": "L-x",
    "eventTime": 1_700_000_001,
    "signedAt": None,
    "quantity": 51,
    "defects": 0,
    "nonce": 999,
    "salt": None,
    "payloadHash": None,
    "signer": None,
}


@pytest.mark.parametrize("field", sorted(RECORD_FIELDS))
def test_flipping_any_record_field_fails_naming_the_check(
    world: dict[str, Any], field: str
) -> None:
    data = world["records"][0].model_dump(mode="json")
    value = RECORD_FIELDS[field]
    if value is None:
        original = data["record"][field]
        value = original + 1 if isinstance(original, int) else _flip_hex(original)
        if field == "signer":
            value = Signer.generate().address
    data["record"][field] = value
    receipt = world["receipts"][0].model_dump(mode="json")
    report = _verify(world, 0, record=data, receipt=receipt)
    assert not report.ok
    # The record file no longer matches the receipt, or no longer parses (payload hash/kind).
    assert report.first_failure.check.value in ("record_matches_receipt", "record_format")
    # The same tampered record inside the receipt itself: caught by signature or schema.
    receipt["record"] = data
    inner = _verify(world, 0, record=data, receipt=receipt)
    assert inner.first_failure.check.value in ("signature", "receipt_format")


def test_flipping_the_payload_fails(world: dict[str, Any]) -> None:
    data = world["records"][0].model_dump(mode="json")
    data["payload"]["lotSize"] = 1001
    receipt = world["receipts"][0].model_dump(mode="json")
    receipt["record"] = data
    report = _verify(world, 0, record=data, receipt=receipt)
    assert report.first_failure.check.value == "receipt_format"
    assert "payloadHash" in report.first_failure.detail


RECEIPT_TAMPERS = {
    "structHash": "struct_hash",
    "root": "merkle_proof",
    "batchId": "anchor_matches_receipt",
    "leafCount": "anchor_matches_receipt",
    "blockNumber": "block_canonical",
    "blockHash": "block_canonical",
    "blockTimestamp": "anchor_matches_receipt",
    "transactionHash": "anchor_matches_receipt",
    "chainId": "domain_matches_contract",
    "contract": "domain_matches_contract",
}


@pytest.mark.parametrize("field", sorted(RECEIPT_TAMPERS))
def test_flipping_any_receipt_field_fails_naming_the_check(
    world: dict[str, Any], field: str
) -> None:
    receipt = world["receipts"][0].model_dump(mode="json")
    value = receipt[field]
    receipt[field] = value + 1 if isinstance(value, int) else _flip_hex(value)
    report = _verify(world, 0, receipt=receipt)
    assert not report.ok
    assert report.first_failure.check.value == RECEIPT_TAMPERS[field], report.to_json()


def test_flipping_any_proof_element_fails(world: dict[str, Any]) -> None:
    proof = world["receipts"][0].proof
    assert proof
    for i in range(len(proof)):
        receipt = world["receipts"][0].model_dump(mode="json")
        receipt["proof"][i] = _flip_hex(receipt["proof"][i])
        assert _verify(world, 0, receipt=receipt).first_failure.check.value == "merkle_proof"
    receipt = world["receipts"][0].model_dump(mode="json")
    receipt["proof"] = receipt["proof"][:-1]
    assert _verify(world, 0, receipt=receipt).first_failure.check.value == "merkle_proof"


def test_unanchored_root_fails(world: dict[str, Any]) -> None:
    record = world["records"][0]
    tree = StandardMerkleTree.of([record_struct_hash(record.record)])
    receipt = build_receipt(
        record,
        tree,
        batch_id=1,
        transaction_hash="0x" + "00" * 32,
        block_number=1,
        block_timestamp=1,
    )
    report = _verify(world, 0, receipt=receipt)
    assert report.first_failure.check.value == "merkle_proof"  # on-chain check needs anchoring
    assert any(c.check.value == "root_anchored" and not c.ok for c in report.checks)


def test_garbage_receipt_is_a_format_failure(world: dict[str, Any]) -> None:
    report = verify_receipt(None, {"version": 1, "record": {}}, world["chain"])
    assert report.first_failure.check.value == "receipt_format"
