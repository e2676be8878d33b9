"""The contracts through ape (eth-ape 0.8): `.ape-venv/bin/ape test tests/ape` from the repo root.

ape compiles contracts/*.sol itself (ape-solidity + the solc-js wrapper, OpenZeppelin from
node_modules) and deploys on its local test network.
"""

from __future__ import annotations

import json
from pathlib import Path

import ape
import pytest
from eth_utils import keccak

from ledger.merkle import StandardMerkleTree

BUILD = Path(__file__).resolve().parents[2] / "contracts" / "build"


@pytest.fixture
def admin(accounts):  # type: ignore[no-untyped-def]
    return accounts[0]


@pytest.fixture
def ledger(project, admin):  # type: ignore[no-untyped-def]
    contract = project.QualityLedger.deploy(admin, sender=admin)
    contract.grantRole(contract.ANCHORER_ROLE(), admin, sender=admin)
    return contract


def _abi_signature(abi: list[dict]) -> set[tuple[str, str, str]]:
    def types(items: list[dict]) -> str:
        return ",".join(i["type"] for i in items)

    return {
        (e["type"], e.get("name", ""), types(e.get("inputs", [])))
        for e in abi
        if e["type"] in ("function", "event", "error")
    }


@pytest.mark.parametrize("name", ["QualityLedger", "ModelRegistry", "CommitmentLog"])
def test_ape_build_has_the_committed_abi(project, name: str) -> None:  # type: ignore[no-untyped-def]
    ape_abi = [a.model_dump(mode="json") for a in project.get_contract(name).contract_type.abi]
    committed = json.loads((BUILD / f"{name}.json").read_text())["abi"]
    assert _abi_signature(ape_abi) == _abi_signature(committed)


def test_anchor_and_checkpoint(ledger, admin) -> None:  # type: ignore[no-untyped-def]
    roots = [keccak(text="batch-1"), keccak(text="batch-2")]
    accumulator = b"\0" * 32
    for batch_id, root in enumerate(roots, start=1):
        receipt = ledger.anchorBatch(root, 3, sender=admin)
        accumulator = keccak(accumulator + root)
        events = ledger.BatchAnchored.from_receipt(receipt)
        assert len(events) == 1 and events[0].batchId == batch_id
        assert events[0].accumulator == accumulator
        anchored = ledger.anchoredAt(root)
        assert anchored.batchId == batch_id and anchored.leafCount == 3
    batch_count, on_chain_accumulator, leaf_total = ledger.checkpoint()
    assert (batch_count, bytes(on_chain_accumulator), leaf_total) == (2, accumulator, 6)


def test_non_anchorer_cannot_anchor(ledger, accounts) -> None:  # type: ignore[no-untyped-def]
    with ape.reverts(ledger.AccessControlUnauthorizedAccount):
        ledger.anchorBatch(keccak(text="root"), 1, sender=accounts[1])


def test_duplicate_root_reverts(ledger, admin) -> None:  # type: ignore[no-untyped-def]
    root = keccak(text="once")
    ledger.anchorBatch(root, 1, sender=admin)
    with ape.reverts(ledger.RootAlreadyAnchored):
        ledger.anchorBatch(root, 1, sender=admin)


def test_proof_verifies_on_chain(ledger, admin) -> None:  # type: ignore[no-untyped-def]
    values = [keccak(text=f"record-{i}") for i in range(5)]
    tree = StandardMerkleTree.of(values)
    ledger.anchorBatch(tree.root, len(values), sender=admin)
    for value in values:
        assert ledger.verifyRecord(tree.root, tree.proof(value), value)
    assert not ledger.verifyRecord(tree.root, tree.proof(values[0]), keccak(text="stranger"))


def test_satellites_follow_ledger_roles(project, ledger, admin, accounts) -> None:  # type: ignore[no-untyped-def]
    registry = project.ModelRegistry.deploy(ledger.address, sender=admin)
    log = project.CommitmentLog.deploy(ledger.address, sender=admin)
    run = keccak(text="run")
    registry.recordRound(run, 1, keccak(text="model"), 3, keccak(text="who"), sender=admin)
    assert registry.latestRound(run) == 1
    with ape.reverts(registry.RoundNotIncreasing):
        registry.recordRound(run, 1, keccak(text="model2"), 3, keccak(text="who"), sender=admin)
    with ape.reverts(log.AccessControlUnauthorizedAccount):
        log.commit(keccak(text="credit-score"), keccak(text="root"), 1, sender=accounts[2])
    log.commit(keccak(text="credit-score"), keccak(text="root"), 1, sender=admin)
    assert log.committedAt(keccak(text="root")).seq == 1


def test_participant_roles_only_through_registration(ledger, admin, accounts) -> None:  # type: ignore[no-untyped-def]
    supplier, oem = ledger.SUPPLIER_ROLE(), ledger.OEM_ROLE()
    with ape.reverts(ledger.ParticipantRoleRequiresRegistration):
        ledger.grantRole(supplier, accounts[1], sender=admin)
    ledger.registerParticipant(accounts[1], supplier, "SUP-1", sender=admin)
    with ape.reverts(ledger.ParticipantRoleConflict):
        ledger.registerParticipant(accounts[1], oem, "SUP-1", sender=admin)
    with ape.reverts(ledger.ParticipantRoleRequiresRegistration):
        ledger.revokeRole(supplier, accounts[1], sender=admin)
    assert ledger.hasRole(supplier, accounts[1]) and not ledger.hasRole(oem, accounts[1])
    assert ledger.version() == "1.1.0"
