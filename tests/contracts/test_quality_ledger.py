"""QualityLedger behaviour, on the in-process chain and on anvil (``any_chain``)."""

from __future__ import annotations

import os

import pytest
from eth_utils import keccak

from ledger.chain import ROLE_IDS, ChainClient, ContractReverted
from ledger.merkle import StandardMerkleTree
from ledger.records import Role


def _values(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


def _as(client: ChainClient, index: int) -> ChainClient:
    return client.with_sender(client.accounts()[index])


def _reverts(name: str, call: object, *args: object) -> ContractReverted:
    with pytest.raises(ContractReverted) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.error_name == name, str(info.value)
    return info.value


# -- anchoring -----------------------------------------------------------------------------------


def test_role_ids_match_contract(any_chain: ChainClient) -> None:
    functions = any_chain.ledger.functions
    assert bytes(functions.ADMIN_ROLE().call()) == ROLE_IDS[Role.ADMIN] == b"\0" * 32
    for role in (Role.ANCHORER, Role.SUPPLIER, Role.OEM, Role.AUDITOR):
        on_chain = bytes(getattr(functions, f"{role.value}_ROLE")().call())
        assert on_chain == ROLE_IDS[role] == keccak(text=f"{role.value}_ROLE")


def test_deployer_is_admin_and_anchorer(any_chain: ChainClient) -> None:
    assert any_chain.has_role(Role.ADMIN, any_chain.sender)
    assert any_chain.has_role(Role.ANCHORER, any_chain.sender)
    assert any_chain.checkpoint().batch_count == 0


def test_only_anchorer_can_anchor(any_chain: ChainClient) -> None:
    outsider = _as(any_chain, 3)
    error = _reverts("AccessControlUnauthorizedAccount", outsider.anchor_batch, os.urandom(32), 1)
    assert error.error_args["account"].lower() == outsider.sender.lower()
    assert error.error_args["neededRole"] == "0x" + ROLE_IDS[Role.ANCHORER].hex()
    assert "ANCHORER_ROLE" in str(error)
    # a supplier is no anchorer either
    any_chain.register_participant(outsider.sender, Role.SUPPLIER, "SUP-1")
    _reverts("AccessControlUnauthorizedAccount", outsider.anchor_batch, os.urandom(32), 1)
    # granted ANCHORER, it can
    any_chain.grant_role(Role.ANCHORER, outsider.sender)
    assert outsider.anchor_batch(os.urandom(32), 1).batch_id == 1


def test_only_admin_can_grant_and_register(any_chain: ChainClient) -> None:
    outsider = _as(any_chain, 3)
    target = any_chain.accounts()[4]
    for call, args in (
        (outsider.grant_role, (Role.ANCHORER, target)),
        (outsider.register_participant, (target, Role.SUPPLIER, "SUP-1")),
        (outsider.revoke_participant, (any_chain.sender, Role.ANCHORER)),
    ):
        error = _reverts("AccessControlUnauthorizedAccount", call, *args)
        assert error.error_args["neededRole"] == "0x" + ROLE_IDS[Role.ADMIN].hex()
    # an anchorer is not an admin
    any_chain.grant_role(Role.ANCHORER, outsider.sender)
    _reverts("AccessControlUnauthorizedAccount", outsider.grant_role, Role.SUPPLIER, target)


# -- participant-role invariants (issue 18 item 7) -----------------------------------------------


@pytest.mark.parametrize("role", [Role.SUPPLIER, Role.OEM, Role.AUDITOR])
def test_admin_raw_grant_of_a_participant_role_is_refused(
    any_chain: ChainClient, role: Role
) -> None:
    """The admin cannot skip registration: no signing role without an organisation."""
    target = any_chain.accounts()[4]
    error = _reverts("ParticipantRoleRequiresRegistration", any_chain.grant_role, role, target)
    assert error.error_args["role"] == "0x" + ROLE_IDS[role].hex()
    assert not any_chain.has_role(role, target)
    assert any_chain.org_of(target) is None
    assert any_chain.role_history(target, role) == []


def test_admin_cannot_give_one_account_two_signing_roles(any_chain: ChainClient) -> None:
    """The attack of issue 18: SUPPLIER and OEM on one account, through any door."""
    account = any_chain.accounts()[4]
    any_chain.register_participant(account, Role.SUPPLIER, "SUP-1")
    _reverts("ParticipantRoleRequiresRegistration", any_chain.grant_role, Role.OEM, account)
    for other in (Role.OEM, Role.AUDITOR):
        for org in ("SUP-1", "OEM-1"):
            error = _reverts(
                "ParticipantRoleConflict", any_chain.register_participant, account, other, org
            )
            assert error.error_args["heldRole"] == "0x" + ROLE_IDS[Role.SUPPLIER].hex()
    assert any_chain.role_of(account) == Role.SUPPLIER
    assert not any_chain.has_role(Role.OEM, account)
    assert not any_chain.has_role(Role.AUDITOR, account)


def test_admin_raw_revoke_of_a_participant_role_is_refused(any_chain: ChainClient) -> None:
    """Revocation goes through revokeParticipant, so its ParticipantRevoked event is the one
    trail of revocations a follower has to read."""
    account = any_chain.accounts()[4]
    any_chain.register_participant(account, Role.OEM, "OEM-1")
    _reverts("ParticipantRoleRequiresRegistration", any_chain.revoke_role, Role.OEM, account)
    assert any_chain.has_role(Role.OEM, account)
    any_chain.revoke_participant(account, Role.OEM)
    assert not any_chain.has_role(Role.OEM, account)
    # after revocation the account may be registered again, to its own organisation only
    _reverts("OrgMismatch", any_chain.register_participant, account, Role.OEM, "OEM-2")
    any_chain.register_participant(account, Role.OEM, "OEM-1")
    assert any_chain.role_of(account) == Role.OEM


def test_outsider_raw_grant_of_participant_role_is_unauthorised_first(
    any_chain: ChainClient,
) -> None:
    outsider = _as(any_chain, 3)
    target = any_chain.accounts()[4]
    for role in (Role.SUPPLIER, Role.ADMIN):
        _reverts("AccessControlUnauthorizedAccount", outsider.grant_role, role, target)
        _reverts("AccessControlUnauthorizedAccount", outsider.revoke_role, role, any_chain.sender)


def test_admin_and_anchorer_roles_still_go_through_grant_role(any_chain: ChainClient) -> None:
    account = any_chain.accounts()[5]
    any_chain.grant_role(Role.ANCHORER, account)
    any_chain.grant_role(Role.ADMIN, account)
    assert any_chain.has_role(Role.ANCHORER, account) and any_chain.has_role(Role.ADMIN, account)
    any_chain.revoke_role(Role.ADMIN, account)
    assert not any_chain.has_role(Role.ADMIN, account)


def test_version_answers_on_every_contract(any_chain: ChainClient) -> None:
    version = any_chain.contracts_version()
    assert version == "1.1.0"
    assert any_chain.model_registry.functions.version().call() == version
    assert any_chain.commitment_log.functions.version().call() == version


def test_anchor_rejects_zero_root_zero_count_and_duplicates(any_chain: ChainClient) -> None:
    _reverts("ZeroRoot", any_chain.anchor_batch, b"\0" * 32, 3)
    root = os.urandom(32)
    _reverts("ZeroLeafCount", any_chain.anchor_batch, root, 0)
    first = any_chain.anchor_batch(root, 3)
    error = _reverts("RootAlreadyAnchored", any_chain.anchor_batch, root, 3)
    assert error.error_args == {"root": "0x" + root.hex(), "batchId": first.batch_id}
    assert any_chain.checkpoint().batch_count == 1


def test_accumulator_chains_roots_and_checkpoint_counts(any_chain: ChainClient) -> None:
    accumulator = b"\0" * 32
    leaf_total = 0
    for expected_id, count in enumerate((1, 5, 1024, 2), start=1):
        root = os.urandom(32)
        result = any_chain.anchor_batch(root, count)
        accumulator = keccak(accumulator + root)
        leaf_total += count
        assert result.batch_id == expected_id
        assert result.root == root and result.leaf_count == count
        checkpoint = any_chain.checkpoint()
        assert checkpoint.batch_count == expected_id
        assert checkpoint.accumulator == accumulator
        assert checkpoint.leaf_total == leaf_total
    events = any_chain.anchored_batches()
    assert [e["batch_id"] for e in events] == [1, 2, 3, 4]
    assert events[-1]["accumulator"] == accumulator


def test_anchored_at(any_chain: ChainClient) -> None:
    root = os.urandom(32)
    assert any_chain.anchored_at(root) is None
    result = any_chain.anchor_batch(root, 7)
    info = any_chain.anchored_at(root)
    assert info is not None
    assert info.batch_id == result.batch_id == 1
    assert info.block_number == result.block_number
    assert info.timestamp == result.timestamp == any_chain.block_timestamp(result.block_number)
    assert info.leaf_count == 7
    assert any_chain.transaction_block(result.tx_hash) == (
        result.block_number,
        any_chain.deployment.ledger if any_chain.deployment else None,
    )


@pytest.mark.parametrize("size", [1, 2, 3, 1025])
def test_contract_verifies_standard_merkle_proofs(any_chain: ChainClient, size: int) -> None:
    values = _values(size)
    tree = StandardMerkleTree.of(values)
    # not anchored yet: a valid proof does not count
    assert not any_chain.verify_record_on_chain(tree.root, tree.proof(values[0]), values[0])
    any_chain.anchor_batch(tree.root, size)
    picks = values if size <= 3 else [values[0], values[size // 2], values[-1]]
    for value in picks:
        proof = tree.proof(value)
        assert any_chain.verify_record_on_chain(tree.root, proof, value)
    # a value not in the tree, a tampered proof, another root: all rejected
    stranger = os.urandom(32)
    assert not any_chain.verify_record_on_chain(tree.root, tree.proof(values[0]), stranger)
    if size > 1:
        bad = list(tree.proof(values[0]))
        bad[0] = os.urandom(32)
        assert not any_chain.verify_record_on_chain(tree.root, bad, values[0])
    assert not any_chain.verify_record_on_chain(os.urandom(32), tree.proof(values[0]), values[0])


def test_single_leaf_root_is_the_leaf_hash(any_chain: ChainClient) -> None:
    value = os.urandom(32)
    tree = StandardMerkleTree.of([value])
    assert tree.root == keccak(keccak(value)) and tree.proof(value) == []
    any_chain.anchor_batch(tree.root, 1)
    assert any_chain.verify_record_on_chain(tree.root, [], value)


# -- participants and role history ---------------------------------------------------------------


def test_register_participant_records_org_and_role(any_chain: ChainClient) -> None:
    supplier, oem, auditor = any_chain.accounts()[1:4]
    any_chain.register_participant(supplier, Role.SUPPLIER, "SUP-001")
    any_chain.register_participant(oem, Role.OEM, "OEM-A")
    any_chain.register_participant(auditor, Role.AUDITOR, "AUD-X")
    assert any_chain.role_of(supplier) is Role.SUPPLIER
    assert any_chain.role_of(oem) is Role.OEM
    assert any_chain.role_of(auditor) is Role.AUDITOR
    assert any_chain.org_of(supplier) == "SUP-001"
    assert any_chain.org_of(any_chain.accounts()[5]) is None
    assert any_chain.role_of(any_chain.accounts()[5]) is None
    logs = any_chain.ledger.events.ParticipantRegistered().get_logs(from_block=0)
    assert [(log["args"]["account"], log["args"]["orgId"]) for log in logs] == [
        (supplier, "SUP-001"),
        (oem, "OEM-A"),
        (auditor, "AUD-X"),
    ]


def test_register_participant_rules(any_chain: ChainClient) -> None:
    account, other = any_chain.accounts()[1:3]
    _reverts("InvalidParticipantRole", any_chain.register_participant, account, Role.ADMIN, "X")
    _reverts("EmptyOrgId", any_chain.register_participant, account, Role.SUPPLIER, "")
    _reverts(
        "ZeroAddress",
        any_chain.register_participant,
        "0x" + "00" * 20,
        Role.SUPPLIER,
        "SUP-1",
    )
    any_chain.register_participant(account, Role.SUPPLIER, "SUP-1")
    _reverts("RoleAlreadyHeld", any_chain.register_participant, account, Role.SUPPLIER, "SUP-1")
    conflict = _reverts(
        "ParticipantRoleConflict", any_chain.register_participant, account, Role.AUDITOR, "SUP-1"
    )
    assert conflict.error_args["heldRole"] == "0x" + ROLE_IDS[Role.SUPPLIER].hex()
    # an account belongs to one organisation for life, even after revocation
    any_chain.revoke_participant(account, Role.SUPPLIER)
    mismatch = _reverts(
        "OrgMismatch", any_chain.register_participant, account, Role.SUPPLIER, "SUP-2"
    )
    assert mismatch.error_args["registeredOrgId"] == "SUP-1"
    any_chain.register_participant(account, Role.OEM, "SUP-1")  # same org, another role: fine
    # revoking what is not held
    _reverts("RoleNotHeld", any_chain.revoke_participant, other, Role.SUPPLIER)
    _reverts("InvalidParticipantRole", any_chain.revoke_participant, other, Role.ADMIN)
    # an anchorer may be registered with its operator's organisation
    any_chain.register_participant(other, Role.ANCHORER, "OPS")
    assert any_chain.has_role(Role.ANCHORER, other) and any_chain.org_of(other) == "OPS"


def test_role_history_and_had_role_at(any_chain: ChainClient) -> None:
    account = any_chain.accounts()[1]
    assert any_chain.role_history(account, Role.SUPPLIER) == []
    any_chain.register_participant(account, Role.SUPPLIER, "SUP-1")
    granted = any_chain.block_timestamp()
    any_chain.advance_time(100)
    any_chain.revoke_participant(account, Role.SUPPLIER)
    revoked = any_chain.block_timestamp()
    any_chain.advance_time(100)
    any_chain.register_participant(account, Role.SUPPLIER, "SUP-1")
    regranted = any_chain.block_timestamp()

    history = any_chain.role_history(account, Role.SUPPLIER)
    assert history == [(granted, revoked), (regranted, 0)]
    assert granted < revoked < regranted

    def had(t: int) -> bool:
        return any_chain.had_role_at(Role.SUPPLIER, account, t)

    assert not had(granted - 1)
    assert had(granted) and had(revoked - 1)
    assert not had(revoked) and not had(regranted - 1)
    assert had(regranted) and had(regranted + 10**6)
    assert not any_chain.had_role_at(Role.OEM, account, regranted)
    revoked_logs = any_chain.ledger.events.ParticipantRevoked().get_logs(from_block=0)
    assert len(revoked_logs) == 1


def test_plain_grant_and_revoke_keep_history(any_chain: ChainClient) -> None:
    account = any_chain.accounts()[2]
    any_chain.grant_role(Role.ANCHORER, account)
    start = any_chain.block_timestamp()
    any_chain.grant_role(Role.ANCHORER, account)  # no-op: no second interval, no event
    any_chain.revoke_role(Role.ANCHORER, any_chain.accounts()[7])  # never held: no event
    any_chain.advance_time(50)
    any_chain.revoke_role(Role.ANCHORER, account)
    end = any_chain.block_timestamp()
    assert any_chain.role_history(account, Role.ANCHORER) == [(start, end)]
    assert any_chain.had_role_at(Role.ANCHORER, account, start)
    assert not any_chain.had_role_at(Role.ANCHORER, account, end)
    granted = any_chain.ledger.events.RoleGranted().get_logs(from_block=0)
    assert sum(1 for log in granted if log["args"]["account"] == account) == 1
    revoked = any_chain.ledger.events.RoleRevoked().get_logs(from_block=0)
    assert [log["args"]["account"] for log in revoked] == [account]  # only the real revocation
    # the admin's own grant at deployment is in the history too
    admin_history = any_chain.role_history(any_chain.sender, Role.ADMIN)
    assert len(admin_history) == 1 and admin_history[0][1] == 0


def test_renounce_closes_the_interval(any_chain: ChainClient) -> None:
    account = any_chain.accounts()[2]
    any_chain.register_participant(account, Role.AUDITOR, "AUD-1")
    auditor = _as(any_chain, 2)
    fn = auditor.ledger.functions.renounceRole(ROLE_IDS[Role.AUDITOR], account)
    auditor._transact(fn, "renounceRole")
    history = any_chain.role_history(account, Role.AUDITOR)
    assert len(history) == 1 and history[0][1] != 0
    assert any_chain.role_of(account) is None


# -- cross-check with the reference JavaScript implementation ------------------------------------

_OZ_TREE_JS = """
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
const values = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const tree = StandardMerkleTree.of(values.map((v) => [v]), ['bytes32']);
const proofs = values.map((v) => tree.getProof([v]));
process.stdout.write(JSON.stringify({ root: tree.root, proofs }));
"""


def test_contract_accepts_openzeppelin_js_proofs(any_chain: ChainClient) -> None:
    """Roots and proofs from @openzeppelin/merkle-tree (JS) verify on chain."""
    import json
    import shutil
    import subprocess

    from ledger.artifacts import NODE_MODULES, REPO_ROOT

    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@openzeppelin" / "merkle-tree").is_dir():
        pytest.skip("node or node_modules/@openzeppelin/merkle-tree missing (make install)")
    values = _values(13)
    result = subprocess.run(
        [node, "-e", _OZ_TREE_JS],
        input=json.dumps(["0x" + v.hex() for v in values]),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    reference = json.loads(result.stdout)
    root = bytes.fromhex(reference["root"][2:])
    assert root == StandardMerkleTree.of(values).root
    any_chain.anchor_batch(root, len(values))
    for value, proof in zip(values, reference["proofs"], strict=True):
        proof_bytes = [bytes.fromhex(p[2:]) for p in proof]
        assert any_chain.verify_record_on_chain(root, proof_bytes, value)
