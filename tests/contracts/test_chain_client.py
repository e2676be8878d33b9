"""ChainClient plumbing: deployments, attach checks, errors, confirmations."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from ledger.chain import (
    ChainClient,
    ContractReverted,
    Deployment,
    decode_revert,
    role_id,
    topic_id,
    with_retries,
)
from ledger.chain.local import LocalChain
from ledger.errors import (
    ChainError,
    ChainUnavailable,
    LedgerContractMissing,
    TransactionReverted,
)
from ledger.records import Role


def test_deployment_round_trips(tmp_path: Path, inprocess_chain: ChainClient) -> None:
    deployment = inprocess_chain.deployment
    assert deployment is not None and deployment.chain_id == inprocess_chain.chain_id
    path = tmp_path / "sub" / "deployment.json"
    deployment.save(path)
    assert Deployment.load(path) == deployment
    assert Deployment.from_json(deployment.to_json()) == deployment
    assert Deployment.from_json(deployment.to_dict()) == deployment
    lowered = {**deployment.to_dict(), "ledger": deployment.ledger.lower()}
    assert Deployment.from_dict(lowered) == deployment
    with pytest.raises(ChainError):
        Deployment.from_json('{"chain_id": 1}')
    with pytest.raises(ChainError):
        Deployment.load(tmp_path / "missing.json")


def test_attach_checks_chain_and_code(inprocess_chain: ChainClient) -> None:
    deployment = inprocess_chain.deployment
    assert deployment is not None
    fresh = ChainClient(inprocess_chain.w3)
    with pytest.raises(ChainError, match="no contracts attached"):
        fresh.checkpoint()
    with pytest.raises(ChainError, match="another chain"):
        fresh.attach(dataclasses.replace(deployment, chain_id=deployment.chain_id + 1))
    nowhere = "0x" + "11" * 20
    with pytest.raises(ChainError, match="no ModelRegistry contract"):
        fresh.attach(dataclasses.replace(deployment, model_registry=nowhere))
    # code exists but it is not a qledger deployment
    with pytest.raises(ChainError):
        fresh.attach(dataclasses.replace(deployment, commitment_log=deployment.model_registry))
    fresh.attach(deployment)
    assert fresh.checkpoint().batch_count == 0


def test_deploy_with_another_admin(inprocess_chain: ChainClient) -> None:
    admin = inprocess_chain.accounts()[5]
    deployer = inprocess_chain.with_sender(inprocess_chain.accounts()[6])
    deployer.deploy(admin=admin)
    assert deployer.has_role(Role.ADMIN, admin)
    assert not deployer.has_role(Role.ADMIN, deployer.sender)
    assert not deployer.has_role(Role.ANCHORER, deployer.sender)


def test_local_signing_and_node_accounts_both_work(inprocess_chain: ChainClient) -> None:
    from eth_account import Account

    account = Account.create()
    w3 = inprocess_chain.w3
    w3.eth.send_transaction(
        {"from": inprocess_chain.sender, "to": account.address, "value": 10**18}
    )
    inprocess_chain.grant_role(Role.ANCHORER, account.address)
    signer = inprocess_chain.with_sender(private_key=account.key.hex())
    assert signer.sender == account.address
    assert signer.anchor_batch(os.urandom(32), 2).batch_id == 1
    assert signer.balance() < 10**18


def test_connect_to_a_dead_endpoint_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ChainUnavailable):
        ChainClient.connect(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ChainError, match="http"):
        ChainClient.connect("ws://127.0.0.1:1")


def test_with_retries_backs_off_on_unavailable() -> None:
    calls: list[int] = []
    delays: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ChainUnavailable("down")
        return "ok"

    assert with_retries(flaky, sleep=delays.append, base_delay=0.5) == "ok"
    assert delays == [0.5, 1.0]
    with pytest.raises(ChainUnavailable):
        with_retries(
            lambda: (_ for _ in ()).throw(ChainUnavailable("x")), attempts=2, sleep=delays.append
        )


def test_reverts_are_typed(inprocess_chain: ChainClient) -> None:
    root = os.urandom(32)
    inprocess_chain.anchor_batch(root, 1)
    with pytest.raises(TransactionReverted) as info:
        inprocess_chain.anchor_batch(root, 1)
    assert isinstance(info.value, ContractReverted)
    assert info.value.code == "transaction_reverted"
    assert "RootAlreadyAnchored" in str(info.value)


def test_decode_revert() -> None:
    selector = function_signature_to_4byte_selector("RoleNotHeld(address,bytes32)")
    account = "0x" + "ab" * 20
    data = selector + encode(["address", "bytes32"], [account, role_id(Role.OEM)])
    name, args = decode_revert("0x" + data.hex())
    assert name == "RoleNotHeld"
    assert args == {"account": account, "role": "0x" + role_id(Role.OEM).hex()}
    error = function_signature_to_4byte_selector("Error(string)") + encode(["string"], ["no"])
    assert decode_revert(error) == ("Error", {"reason": "no"})
    assert decode_revert(b"\x01\x02") == (None, {})
    assert decode_revert(None) == (None, {})
    assert decode_revert(b"\xde\xad\xbe\xef") == (None, {})


def test_ids() -> None:
    assert role_id(Role.ADMIN) == b"\0" * 32
    assert topic_id("credit-score") == topic_id(topic_id("credit-score"))
    assert topic_id("0x" + topic_id("x").hex()) == topic_id("x")


def test_bad_arguments_are_value_errors(inprocess_chain: ChainClient) -> None:
    with pytest.raises(ValueError):
        inprocess_chain.anchor_batch(b"short", 1)
    with pytest.raises(ValueError):
        inprocess_chain.anchor_batch(os.urandom(32), 2**32)


def test_wait_for_confirmations(any_chain: ChainClient) -> None:
    result = any_chain.anchor_batch(os.urandom(32), 1)
    assert any_chain.wait_for_confirmations(result.tx_hash, 1) == result.block_number
    # dev chains that mine on demand: the client mines the missing blocks when allowed
    assert any_chain.wait_for_confirmations(result.tx_hash, 4) == result.block_number
    assert any_chain.block_number() >= result.block_number + 3
    any_chain.allow_evm_mine = False
    with pytest.raises(ChainUnavailable, match="confirmations"):
        any_chain.wait_for_confirmations(result.tx_hash, 50, timeout=0.3)
    unknown = "0x" + "00" * 32
    with pytest.raises(ChainUnavailable, match="not mined"):
        any_chain.wait_for_confirmations(unknown, 1, timeout=0.2)
    assert any_chain.transaction_block(unknown) is None


def test_historical_role_queries(any_chain: ChainClient) -> None:
    """has_role at a past block works where the node keeps state; otherwise a clear error."""
    account = any_chain.accounts()[1]
    before = any_chain.block_number()
    any_chain.register_participant(account, Role.OEM, "OEM-1")
    assert any_chain.has_role(Role.OEM, account)
    try:
        assert not any_chain.has_role(Role.OEM, account, block=before)
    except ChainError as exc:  # anvil --prune-history keeps no old state
        assert "had_role_at" in str(exc)


def test_ledger_only_client_reads_what_a_verifier_needs(any_chain: ChainClient) -> None:
    from ledger.merkle import StandardMerkleTree

    deployment = any_chain.deployment
    assert deployment is not None
    values = [os.urandom(32) for _ in range(3)]
    tree = StandardMerkleTree.of(values)
    result = any_chain.anchor_batch(tree.root, 3)
    supplier = any_chain.accounts()[1]
    any_chain.register_participant(supplier, Role.SUPPLIER, "SUP-1")

    reader = any_chain.with_sender(any_chain.sender)
    reader.attach_ledger(deployment.ledger)
    assert reader.deployment is None and reader.ledger_address == deployment.ledger
    assert reader.anchored_at(tree.root) is not None
    assert reader.verify_record_on_chain(tree.root, tree.proof(values[0]), values[0])
    assert reader.role_history(supplier, Role.SUPPLIER)[0][1] == 0
    assert reader.org_of(supplier) == "SUP-1"
    assert reader.transaction_block(result.tx_hash) == (result.block_number, deployment.ledger)
    assert [e["root"] for e in reader.anchored_batches()] == [tree.root]
    with pytest.raises(ChainError, match="ModelRegistry"):
        reader.model_round(b"\1" * 32, 1)
    with pytest.raises(ChainError, match="not a QualityLedger"):
        reader.attach_ledger(deployment.model_registry)
    # No code there: the typed, 503-mapped error, not a generic chain error.
    with pytest.raises(LedgerContractMissing, match="no QualityLedger contract"):
        reader.attach_ledger("0x" + "22" * 20)
    reader.read_only = True
    with pytest.raises(ChainError, match="cannot send"):
        reader.anchor_batch(os.urandom(32), 1)


@pytest.mark.anvil
def test_connect_ledger(anvil_chain: ChainClient, anvil_node: LocalChain) -> None:
    deployment = anvil_chain.deployment
    assert deployment is not None
    root = os.urandom(32)
    anvil_chain.anchor_batch(root, 2)
    verifier = ChainClient.connect_ledger(anvil_node.rpc_url, deployment.ledger.lower())
    info = verifier.anchored_at(root)
    assert info is not None and info.leaf_count == 2
    assert verifier.chain_id == 31337
