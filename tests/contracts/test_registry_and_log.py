"""ModelRegistry and CommitmentLog rules, on the in-process chain and on anvil."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak

from ledger.chain import ROLE_IDS, ChainClient, ContractReverted, run_id, topic_id
from ledger.merkle import StandardMerkleTree
from ledger.records import Role


def _reverts(name: str, call: object, *args: object) -> ContractReverted:
    with pytest.raises(ContractReverted) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.error_name == name, str(info.value)
    return info.value


# -- ModelRegistry -------------------------------------------------------------------------------


def test_model_rounds_are_recorded_in_order(any_chain: ChainClient) -> None:
    run = run_id("defect-model/2025-06")
    assert any_chain.model_round(run, 0) is None
    assert any_chain.latest_model_round(run) is None
    participants_root = StandardMerkleTree.of([keccak(text=f"client-{i}") for i in range(3)]).root
    hashes = {}
    for round_number in (0, 1, 2, 5):
        hashes[round_number] = os.urandom(32)
        any_chain.record_model_round(run, round_number, hashes[round_number], 3, participants_root)
        assert any_chain.latest_model_round(run) == round_number
    entry = any_chain.model_round(run, 2)
    assert entry is not None
    assert entry["model_hash"] == hashes[2]
    assert entry["participants"] == 3 and entry["participants_root"] == participants_root
    assert entry["timestamp"] > 0
    assert any_chain.model_round(run, 3) is None
    assert any_chain.model_registry.functions.roundCount(run).call() == 4
    logs = any_chain.model_registry.events.ModelRoundRecorded().get_logs(from_block=0)
    assert [log["args"]["round"] for log in logs] == [0, 1, 2, 5]
    # other runs are independent
    other = run_id("another-run")
    any_chain.record_model_round(other, 1, os.urandom(32), 2, participants_root)
    assert any_chain.latest_model_round(other) == 1 and any_chain.latest_model_round(run) == 5


def test_model_round_rules(any_chain: ChainClient) -> None:
    run = run_id("rules")
    root = os.urandom(32)
    any_chain.record_model_round(run, 3, os.urandom(32), 4, root)
    error = _reverts(
        "RoundNotIncreasing", any_chain.record_model_round, run, 3, os.urandom(32), 4, root
    )
    assert error.error_args["latestRound"] == 3
    _reverts("RoundNotIncreasing", any_chain.record_model_round, run, 2, os.urandom(32), 4, root)
    _reverts("ZeroRunId", any_chain.record_model_round, b"\0" * 32, 4, os.urandom(32), 4, root)
    _reverts("ZeroModelHash", any_chain.record_model_round, run, 4, b"\0" * 32, 4, root)
    _reverts("NoParticipants", any_chain.record_model_round, run, 4, os.urandom(32), 0, root)
    _reverts(
        "ZeroParticipantsRoot", any_chain.record_model_round, run, 4, os.urandom(32), 4, b"\0" * 32
    )


def test_model_registry_writers_need_anchorer_on_the_ledger(any_chain: ChainClient) -> None:
    outsider = any_chain.with_sender(any_chain.accounts()[3])
    run = run_id("auth")
    error = _reverts(
        "AccessControlUnauthorizedAccount",
        outsider.record_model_round,
        run,
        1,
        os.urandom(32),
        1,
        os.urandom(32),
    )
    assert error.error_args["neededRole"] == "0x" + ROLE_IDS[Role.ANCHORER].hex()
    any_chain.grant_role(Role.ANCHORER, outsider.sender)
    outsider.record_model_round(run, 1, os.urandom(32), 1, os.urandom(32))
    any_chain.revoke_role(Role.ANCHORER, outsider.sender)
    _reverts(
        "AccessControlUnauthorizedAccount",
        outsider.record_model_round,
        run,
        2,
        os.urandom(32),
        1,
        os.urandom(32),
    )


# -- CommitmentLog -------------------------------------------------------------------------------


def test_commit_and_verify_commitment(any_chain: ChainClient) -> None:
    values = [os.urandom(32) for _ in range(5)]
    tree = StandardMerkleTree.of(values)
    assert any_chain.committed_at(tree.root) is None
    assert not any_chain.verify_commitment_on_chain(tree.root, tree.proof(values[1]), values[1])
    result = any_chain.commit("credit-score", tree.root, len(values))
    assert result.seq == 1 and result.topic == keccak(text="credit-score")
    entry = any_chain.committed_at(tree.root)
    assert entry == {
        "topic": keccak(text="credit-score"),
        "seq": 1,
        "timestamp": result.timestamp,
        "block_number": result.block_number,
        "count": 5,
    }
    for value in values:
        assert any_chain.verify_commitment_on_chain(tree.root, tree.proof(value), value)
    assert not any_chain.verify_commitment_on_chain(
        tree.root, tree.proof(values[0]), os.urandom(32)
    )
    second = any_chain.commit(topic_id("responsibility-matrix"), os.urandom(32), 1)
    assert second.seq == 2
    assert any_chain.commitment_log.functions.commitmentCount().call() == 2
    logs = any_chain.commitment_log.events.Committed().get_logs(from_block=0)
    assert [(log["args"]["seq"], log["args"]["count"]) for log in logs] == [(1, 5), (2, 1)]


def test_commit_rules(any_chain: ChainClient) -> None:
    root = os.urandom(32)
    _reverts("ZeroTopic", any_chain.commit, b"\0" * 32, root, 1)
    _reverts("ZeroRoot", any_chain.commit, "credit-score", b"\0" * 32, 1)
    _reverts("ZeroCount", any_chain.commit, "credit-score", root, 0)
    any_chain.commit("credit-score", root, 1)
    error = _reverts("AlreadyCommitted", any_chain.commit, "other-topic", root, 1)
    assert error.error_args["seq"] == 1
    outsider = any_chain.with_sender(any_chain.accounts()[3])
    _reverts("AccessControlUnauthorizedAccount", outsider.commit, "credit-score", os.urandom(32), 1)


def test_satellites_point_at_the_ledger(any_chain: ChainClient) -> None:
    deployment = any_chain.deployment
    assert deployment is not None
    assert any_chain.model_registry.functions.ledger().call() == deployment.ledger
    assert any_chain.commitment_log.functions.ledger().call() == deployment.ledger
