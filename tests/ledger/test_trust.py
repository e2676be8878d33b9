"""The pinned trust root: a look-alike ledger, another chain behind the RPC URL, a receipt whose
anchoring block was rolled away, and the trust file's strict format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import ChainClient
from ledger.eip712 import record_struct_hash
from ledger.errors import TrustRootError
from ledger.keys import Signer
from ledger.merkle import StandardMerkleTree
from ledger.receipts import Receipt, build_receipt
from ledger.records import Domain, Role, SignedRecord
from ledger.signing import sign_record
from ledger.trust import BlockAnchor, TrustRoot
from ledger.verify import verify_receipt
from tests.helpers import inspection_payload

# A syntactically valid C2SP vkey (name, 4-byte key id, base64 of 0x01 + 32 key bytes).
VKEY = "example.com/log+0a1b2c3d+AQ" + "A" * 42 + "="


def _sign(signer: Signer, domain: Domain, nonce: int, signed_at: int) -> SignedRecord:
    return sign_record(
        signer,
        domain,
        subject="SUP-01",
        kind="inspection",
        part_number="P-1",
        lot_id=f"L-{nonce}",
        event_time=1_700_000_000,
        quantity=50,
        defects=0,
        nonce=nonce,
        payload=inspection_payload(0),
        signed_at=signed_at,
    )


def _anchor_one(chain: ChainClient, signed: SignedRecord) -> Receipt:
    """Anchor a one-leaf root of ``signed`` in ``chain``'s ledger; its receipt."""
    tree = StandardMerkleTree.of([record_struct_hash(signed.record)])
    result = chain.anchor_batch(tree.root, 1)
    return build_receipt(
        signed,
        tree,
        batch_id=result.batch_id,
        transaction_hash=result.tx_hash,
        block_number=result.block_number,
        block_timestamp=result.timestamp,
        block_hash=chain.block_hash(result.block_number),
    )


@pytest.fixture
def ledger_world() -> dict[str, Any]:
    chain = ChainClient.in_process()
    deployment = chain.deploy()
    supplier = Signer.generate()
    chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-01")
    domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)
    genesis = chain.block_hash(0)
    assert genesis is not None
    trust = TrustRoot(
        chain_id=deployment.chain_id, ledger=deployment.ledger, anchor=BlockAnchor(0, genesis)
    )
    return {"chain": chain, "domain": domain, "supplier": supplier, "trust": trust}


def test_a_look_alike_ledger_fails_the_trust_root(ledger_world: dict[str, Any]) -> None:
    """The adversary deploys the same bytecode on the same chain, registers its own key as
    supplier SUP-01 there and anchors a one-leaf root of its record: a receipt perfect in
    every respect except that it names the wrong ledger."""
    real: ChainClient = ledger_world["chain"]
    trust: TrustRoot = ledger_world["trust"]
    adversary_account = real.accounts()[1]
    look_alike = real.with_sender(adversary_account)
    fake = look_alike.deploy()  # now attached to the look-alike, the adversary is its admin
    assert fake.ledger != trust.ledger
    assert real.ledger_address == trust.ledger  # with_sender shared nothing it changed
    adversary = Signer.generate()
    look_alike.register_participant(adversary.address, Role.SUPPLIER, "SUP-01")
    fake_domain = Domain(chainId=fake.chain_id, verifyingContract=fake.ledger)
    forged = _sign(adversary, fake_domain, 1, look_alike.block_timestamp())
    receipt = _anchor_one(look_alike, forged)

    # What verify did before: trust the contract the receipt names. Everything passes.
    naive = TrustRoot(chain_id=fake.chain_id, ledger=receipt.contract, anchor=trust.anchor)
    reader = ChainClient(real.w3)
    reader.attach_ledger(receipt.contract)
    assert verify_receipt(None, receipt, reader, naive).ok

    # With the auditor's pinned root the reader asks the real ledger: the named check fails.
    pinned_reader = ChainClient(real.w3)
    pinned_reader.attach_ledger(trust.ledger)
    report = verify_receipt(None, receipt, pinned_reader, trust)
    assert not report.ok
    assert report.first_failure is not None
    assert report.first_failure.check.value == "trust_root"
    checks = {c.check.value: c.ok for c in report.checks}
    assert checks["signature"] and checks["domain_matches_contract"]  # a genuine signature
    assert not checks["signer_role_at_signing"]  # no role in the real ledger
    assert not checks["root_anchored"]  # nor is its root anchored there

    # Flags without a file pin the same ledger: same verdict.
    flags = TrustRoot(chain_id=trust.chain_id, ledger=trust.ledger, anchor=None)
    assert verify_receipt(None, receipt, pinned_reader, flags).first_failure.check.value == (
        "trust_root"
    )

    # The adversary re-labels its receipt with the real contract: its signature's domain
    # still names the look-alike.
    relabelled = receipt.model_copy(update={"contract": trust.ledger})
    report = verify_receipt(None, relabelled, pinned_reader, trust)
    assert report.first_failure.check.value == "domain_matches_contract"

    # And if it signs for the real domain but anchors in its look-alike, the real ledger
    # knows neither its key nor its root.
    for_real = _sign(adversary, ledger_world["domain"], 2, look_alike.block_timestamp())
    receipt = _anchor_one(look_alike, for_real).model_copy(update={"contract": trust.ledger})
    report = verify_receipt(None, receipt, pinned_reader, trust)
    assert report.first_failure.check.value == "signer_role_at_signing"
    assert not {c.check.value: c.ok for c in report.checks}["root_anchored"]


def test_an_rpc_serving_another_chain_fails_before_anything_it_says(
    ledger_world: dict[str, Any],
) -> None:
    real: ChainClient = ledger_world["chain"]
    signed = _sign(ledger_world["supplier"], ledger_world["domain"], 1, real.block_timestamp())
    receipt = _anchor_one(real, signed)
    trust: TrustRoot = ledger_world["trust"]
    assert verify_receipt(None, receipt, real, trust).ok

    # A second chain with the same chain id where the same deployer made the same contracts
    # at the same address (as on a fresh anvil), with the adversary's key as SUP-01.
    other = ChainClient.in_process()
    fake = other.deploy()
    assert (fake.chain_id, fake.ledger) == (trust.chain_id, trust.ledger)
    pinned_there = TrustRoot(
        chain_id=trust.chain_id,
        ledger=trust.ledger,
        anchor=BlockAnchor(receipt.blockNumber, receipt.blockHash or ""),
    )
    report = verify_receipt(None, receipt, other, pinned_there)
    assert report.first_failure.check.value == "rpc_serves_pinned_chain"
    assert [c.check.value for c in report.checks][-1] == "rpc_serves_pinned_chain"

    # A chain reset to genesis (no ledger at all): the verifier's reader stays detached and
    # the same check names it, whether or not the genesis hash gives the reset away.
    empty = ChainClient.in_process()
    report = verify_receipt(None, receipt, empty, trust)
    assert report.first_failure.check.value == "rpc_serves_pinned_chain"

    # The pinned block hash itself wrong: the same named check.
    wrong = TrustRoot(
        chain_id=trust.chain_id, ledger=trust.ledger, anchor=BlockAnchor(0, "0x" + "ab" * 32)
    )
    assert verify_receipt(None, receipt, real, wrong).first_failure.check.value == (
        "rpc_serves_pinned_chain"
    )


def test_a_receipt_whose_block_was_rolled_away_fails_block_canonical(
    ledger_world: dict[str, Any],
) -> None:
    """The chain rolls back past the anchoring block and the same root is anchored again in
    another block: the old receipt's block is no longer canonical."""
    chain: ChainClient = ledger_world["chain"]
    trust: TrustRoot = ledger_world["trust"]
    signed = _sign(ledger_world["supplier"], ledger_world["domain"], 1, chain.block_timestamp())
    snapshot = chain._tester.take_snapshot()
    old = _anchor_one(chain, signed)
    assert verify_receipt(None, old, chain, trust).ok
    chain._tester.revert_to_snapshot(snapshot)
    chain.register_participant(Signer.generate().address, Role.OEM, "OEM-01")  # other history
    new = _anchor_one(chain, signed)
    assert verify_receipt(None, new, chain, trust).ok
    report = verify_receipt(None, old, chain, trust)
    assert report.first_failure.check.value == "block_canonical"
    assert chain.block_hash(old.blockNumber) != old.blockHash


def test_an_old_receipt_without_block_hash_still_verifies_saying_what_was_skipped(
    ledger_world: dict[str, Any],
) -> None:
    chain: ChainClient = ledger_world["chain"]
    signed = _sign(ledger_world["supplier"], ledger_world["domain"], 1, chain.block_timestamp())
    data = _anchor_one(chain, signed).model_dump(mode="json")
    del data["blockHash"]
    report = verify_receipt(None, data, chain, ledger_world["trust"])
    assert report.ok
    skipped = [c for c in report.checks if c.skipped]
    assert [c.check.value for c in skipped] == ["block_canonical"]
    assert report.to_json()["checks"][[c.check for c in report.checks].index(skipped[0].check)][
        "skipped"
    ]


# -- the trust file ------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return {
        "version": 1,
        "chainId": 31337,
        "ledger": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "anchor": {"number": 0, "hash": "0x" + "11" * 32},
        "logKey": VKEY,
        "witnesses": [VKEY.replace("example.com/log", "w1"), VKEY.replace("example.com/log", "w2")],
        "witnessQuorum": 2,
    }


def test_trust_file_round_trips(tmp_path: Path) -> None:
    root = TrustRoot.from_dict(_valid())
    root.save(tmp_path / "t.json")
    again = TrustRoot.load(tmp_path / "t.json")
    assert again == root and again.to_dict() == _valid()
    assert again.witness_quorum == 2 and len(again.witnesses) == 2 and again.log_key == VKEY
    lower = {**_valid(), "ledger": _valid()["ledger"].lower()}
    assert TrustRoot.from_dict(lower).ledger == _valid()["ledger"]  # checksummed on load


BROKEN = {
    "unknown member": {"extra": 1},
    "version 2": {"version": 2},
    "bool chain id": {"chainId": True},
    "zero chain id": {"chainId": 0},
    "bad checksum": {"ledger": "0x5fbDB2315678afecb367f032d93F642f64180aa3"},
    "short address": {"ledger": "0x5FbDB2315678afecb367f032d93F642f64180a"},
    "short hash": {"anchor": {"number": 0, "hash": "0x11"}},
    "negative block": {"anchor": {"number": -1, "hash": "0x" + "11" * 32}},
    "anchor extra": {"anchor": {"number": 0, "hash": "0x" + "11" * 32, "x": 1}},
    "vkey without id": {"logKey": "name+AQAA"},
    "vkey bad base64": {"logKey": "name+0a1b2c3d+!!!!"},
    "vkey upper id": {"logKey": "name+0A1B2C3D+AQAA"},
    "witness not str": {"witnesses": [1]},
    "duplicate witness": {"witnesses": [VKEY, VKEY], "witnessQuorum": 1},
    "quorum too big": {"witnessQuorum": 3},
    "negative quorum": {"witnessQuorum": -1},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_trust_file_is_strict(case: str) -> None:
    with pytest.raises(TrustRootError) as err:
        TrustRoot.from_dict({**_valid(), **BROKEN[case]})
    assert err.value.code == "invalid_trust_root"


def test_missing_members_and_non_json_are_trust_root_errors(tmp_path: Path) -> None:
    data = _valid()
    del data["anchor"]
    with pytest.raises(TrustRootError, match="missing"):
        TrustRoot.from_dict(data)
    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(TrustRootError, match="not JSON"):
        TrustRoot.load(tmp_path / "t.json")
    with pytest.raises(TrustRootError, match="cannot read"):
        TrustRoot.load(tmp_path / "absent.json")
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(TrustRootError, match="object"):
        TrustRoot.load(tmp_path / "list.json")
