"""Wrappers of the three qledger contracts: QualityLedger (participants, roles, anchoring),
ModelRegistry (federated rounds) and CommitmentLog (published values)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract
from web3.types import TxReceipt

from ledger.artifacts import load_artifact
from ledger.chain.transport import Transport, _translated
from ledger.chain.types import (
    PARTICIPANT_ROLES,
    ROLE_EVENT_NAMES,
    ROLE_IDS,
    ROLES_BY_ID,
    ZERO32,
    AnchorInfo,
    AnchorResult,
    Checkpoint,
    CommitResult,
    Deployment,
    RoleEvent,
    _bytes32,
    _hex,
    _uint32,
    topic_id,
)
from ledger.errors import ChainError, ChainUnavailable, LedgerContractMissing
from ledger.records import Role


@functools.cache
def _role_event_topics() -> dict[str, str]:
    """topic0 -> event name of the QualityLedger events a role mirror follows."""
    topics = {}
    for entry in load_artifact("QualityLedger")["abi"]:
        if entry.get("type") == "event" and entry.get("name") in ROLE_EVENT_NAMES:
            types = ",".join(str(i["type"]) for i in entry["inputs"])
            topics["0x" + keccak(text=f"{entry['name']}({types})").hex()] = str(entry["name"])
    return topics


@dataclass
class _Contracts:
    ledger: Contract
    model_registry: Contract | None
    commitment_log: Contract | None
    deployment: Deployment | None = field(repr=False)


class Contracts(Transport):
    """Which contracts this client talks to: attached from a deployment, or one ledger."""

    _contracts: _Contracts | None = None

    # -- deployment --------------------------------------------------------------------------

    @property
    def deployment(self) -> Deployment | None:
        """The attached deployment (None when detached or attached to a ledger only)."""
        return self._contracts.deployment if self._contracts else None

    @property
    def ledger_address(self) -> str | None:
        return self._contracts.ledger.address if self._contracts else None

    def _require(self) -> _Contracts:
        if self._contracts is None:
            raise ChainError("no contracts attached: deploy() or attach() first")
        return self._contracts

    @property
    def ledger(self) -> Contract:
        return self._require().ledger

    @property
    def model_registry(self) -> Contract:
        registry = self._require().model_registry
        if registry is None:
            raise ChainError("attached to a QualityLedger only: no ModelRegistry known")
        return registry

    @property
    def commitment_log(self) -> Contract:
        log = self._require().commitment_log
        if log is None:
            raise ChainError("attached to a QualityLedger only: no CommitmentLog known")
        return log

    def _contract(self, name: str, address: str) -> Contract:
        artifact = load_artifact(name)
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifact["abi"])

    def ledger_missing(self) -> LedgerContractMissing | None:
        """A LedgerContractMissing if the attached QualityLedger has no code now, else None."""
        return self._missing(self.ledger.address)

    def _missing(self, address: str, name: str = "QualityLedger") -> LedgerContractMissing | None:
        """A LedgerContractMissing if no code lives at ``address`` now, else None."""
        with _translated("eth_getCode"):
            if self.w3.eth.get_code(to_checksum_address(address)):
                return None
        return LedgerContractMissing(
            f"no {name} contract at {address} on chain {self.chain_id}: the chain was reset or "
            "this endpoint serves another chain. Restore the chain (its state file or a node "
            "that kept it) and restart; deploying again makes a new ledger whose EIP-712 "
            "domain no stored record is signed for"
        )

    def _call(self, fn: Any, action: str, block: int | str = "latest") -> Any:
        """A read; a call that fails because the contract has gone raises
        LedgerContractMissing (a 503 to clients), not a generic ChainError."""
        try:
            return super()._call(fn, action, block)
        except ChainUnavailable:
            raise
        except ChainError as exc:
            missing = self._missing(fn.address)
            if missing is not None:
                raise missing from exc
            raise

    def _transact_event(self, fn: Any, action: str, event: Any) -> tuple[str, TxReceipt, Any]:
        # A transaction to an address without code succeeds and does nothing: say why.
        missing = self._missing(fn.address)
        if missing is not None:
            raise missing
        return super()._transact_event(fn, action, event)

    def _deploy_one(self, name: str, *args: Any) -> tuple[ChecksumAddress, TxReceipt]:
        """Deploy contract ``name``; returns its address and the deployment's receipt."""
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        _, receipt = self._transact(factory.constructor(*args), f"deploy {name}")
        address = receipt.get("contractAddress")
        if not address:
            raise ChainError(f"deploy {name}: receipt has no contract address")
        return address, receipt

    def attach(self, deployment: Deployment) -> None:
        """Use the contracts of ``deployment``; checks the chain id and that code exists."""
        if deployment.chain_id != self.chain_id:
            raise ChainError(
                "deployment is for another chain", expected=self.chain_id, got=deployment.chain_id
            )
        addresses = {
            "QualityLedger": deployment.ledger,
            "ModelRegistry": deployment.model_registry,
            "CommitmentLog": deployment.commitment_log,
        }
        with _translated("attach"):
            for name, address in addresses.items():
                code = self.w3.eth.get_code(to_checksum_address(address))
                if not code:
                    missing = self._missing(address, name)
                    assert missing is not None
                    raise missing
        ledger = self._contract("QualityLedger", deployment.ledger)
        registry = self._contract("ModelRegistry", deployment.model_registry)
        log = self._contract("CommitmentLog", deployment.commitment_log)
        try:
            with _translated("attach"):
                anchorer = bytes(ledger.functions.ANCHORER_ROLE().call())
                ledger.functions.checkpoint().call()
                registry_ledger = registry.functions.ledger().call()
                log_ledger = log.functions.ledger().call()
                # functions only the right contract has (no fallback: others revert)
                registry.functions.roundCount(ZERO32).call()
                log.functions.commitmentCount().call()
        except ChainUnavailable:
            raise
        except ChainError as exc:
            raise ChainError(
                f"contracts of deployment {deployment.ledger} do not answer like qledger's: {exc}"
            ) from exc
        if anchorer != ROLE_IDS[Role.ANCHORER] or {
            to_checksum_address(registry_ledger),
            to_checksum_address(log_ledger),
        } != {deployment.ledger}:
            raise ChainError(f"contracts at {deployment.ledger} are not one qledger deployment")
        self._contracts = _Contracts(
            ledger=ledger, model_registry=registry, commitment_log=log, deployment=deployment
        )

    def attach_ledger(self, ledger: str) -> None:
        """Use the QualityLedger at ``ledger`` only (read roles, anchors and proofs)."""
        address = to_checksum_address(ledger)
        contract = self._contract("QualityLedger", address)
        with _translated("attach ledger"):
            missing = self._missing(address)
            if missing is not None:
                raise missing
        try:
            with _translated("attach ledger"):
                anchorer = bytes(contract.functions.ANCHORER_ROLE().call())
                contract.functions.checkpoint().call()
        except ChainUnavailable:
            raise
        except ChainError as exc:
            raise ChainError(f"the contract at {address} is not a QualityLedger: {exc}") from exc
        if anchorer != ROLE_IDS[Role.ANCHORER]:
            raise ChainError(f"the contract at {address} is not a QualityLedger")
        self._contracts = _Contracts(
            ledger=contract, model_registry=None, commitment_log=None, deployment=None
        )


class QualityLedgerCalls(Contracts):
    # -- participants and roles --------------------------------------------------------------

    def register_participant(self, account: str, role: Role, org_id: str) -> str:
        """ADMIN: register ``account`` as ``role`` of organisation ``org_id``; returns tx hash."""
        fn = self.ledger.functions.registerParticipant(
            to_checksum_address(account), ROLE_IDS[Role(role)], org_id
        )
        tx_hash, _ = self._transact(fn, f"registerParticipant({account}, {Role(role).value})")
        return tx_hash

    def revoke_participant(self, account: str, role: Role) -> str:
        fn = self.ledger.functions.revokeParticipant(
            to_checksum_address(account), ROLE_IDS[Role(role)]
        )
        tx_hash, _ = self._transact(fn, f"revokeParticipant({account}, {Role(role).value})")
        return tx_hash

    def grant_role(self, role: Role, account: str) -> str:
        """Raw AccessControl grant of ADMIN or ANCHORER (e.g. ANCHORER to the anchoring service's
        key). The contract refuses participant roles here (``ParticipantRoleRequiresRegistration``):
        use :meth:`register_participant`."""
        fn = self.ledger.functions.grantRole(ROLE_IDS[Role(role)], to_checksum_address(account))
        tx_hash, _ = self._transact(fn, f"grantRole({Role(role).value}, {account})")
        return tx_hash

    def revoke_role(self, role: Role, account: str) -> str:
        """Raw AccessControl revoke of ADMIN or ANCHORER (participant roles:
        :meth:`revoke_participant`)."""
        fn = self.ledger.functions.revokeRole(ROLE_IDS[Role(role)], to_checksum_address(account))
        tx_hash, _ = self._transact(fn, f"revokeRole({Role(role).value}, {account})")
        return tx_hash

    def contracts_version(self) -> str:
        """The version of the contract set the ledger belongs to (``version()``, e.g. "1.1.0")."""
        return str(self._call(self.ledger.functions.version(), "version"))

    def has_role(self, role: Role, account: str, block: int | str = "latest") -> bool:
        fn = self.ledger.functions.hasRole(ROLE_IDS[Role(role)], to_checksum_address(account))
        return bool(self._call(fn, f"hasRole({Role(role).value}, {account})", block))

    def role_of(self, account: str) -> Role | None:
        """The participant role (SUPPLIER, OEM or AUDITOR) ``account`` holds now, if any."""
        for role in PARTICIPANT_ROLES:
            if self.has_role(role, account):
                return role
        return None

    def org_of(self, account: str) -> str | None:
        org = self._call(self.ledger.functions.orgOf(to_checksum_address(account)), "orgOf")
        return str(org) or None

    def role_history(self, account: str, role: Role) -> list[tuple[int, int]]:
        """Intervals ``(grantedAt, revokedAt)`` (block timestamps, 0 = still held), oldest first."""
        fn = self.ledger.functions.roleHistory(to_checksum_address(account), ROLE_IDS[Role(role)])
        return [(int(g), int(r)) for g, r in self._call(fn, "roleHistory")]

    def had_role_at(self, role: Role, account: str, timestamp: int) -> bool:
        fn = self.ledger.functions.hadRoleAt(
            ROLE_IDS[Role(role)], to_checksum_address(account), int(timestamp)
        )
        return bool(self._call(fn, "hadRoleAt"))

    # -- anchoring ---------------------------------------------------------------------------

    def anchor_batch(self, root: bytes, leaf_count: int) -> AnchorResult:
        """ANCHORER: anchor a batch root; one transaction, ~60k gas whatever the batch size."""
        root = _bytes32(root, "root")
        _uint32(leaf_count, "leaf_count")
        fn = self.ledger.functions.anchorBatch(root, leaf_count)
        tx_hash, receipt, args = self._transact_event(
            fn, f"anchorBatch(0x{root.hex()}, {leaf_count})", self.ledger.events.BatchAnchored
        )
        return AnchorResult(
            batch_id=int(args["batchId"]),
            root=root,
            leaf_count=leaf_count,
            tx_hash=tx_hash,
            block_number=int(receipt["blockNumber"]),
            timestamp=self._block_time(receipt),
            gas_used=int(receipt["gasUsed"]),
        )

    def anchored_at(self, root: bytes) -> AnchorInfo | None:
        fn = self.ledger.functions.anchoredAt(_bytes32(root, "root"))
        batch_id, timestamp, block_number, leaf_count = self._call(fn, "anchoredAt")
        if batch_id == 0:
            return None
        return AnchorInfo(int(batch_id), int(timestamp), int(block_number), int(leaf_count))

    def checkpoint(self) -> Checkpoint:
        batch_count, accumulator, leaf_total = self._call(
            self.ledger.functions.checkpoint(), "checkpoint"
        )
        return Checkpoint(int(batch_count), bytes(accumulator), int(leaf_total))

    def verify_record_on_chain(
        self, root: bytes, proof: Sequence[bytes], struct_hash: bytes
    ) -> bool:
        fn = self.ledger.functions.verifyRecord(
            _bytes32(root, "root"),
            [_bytes32(p, "proof element") for p in proof],
            _bytes32(struct_hash, "struct_hash"),
        )
        return bool(self._call(fn, "verifyRecord"))

    def anchored_batches(self, from_block: int | None = None) -> list[dict[str, Any]]:
        """BatchAnchored events since ``from_block`` (default: the deployment block)."""
        deployment = self._require().deployment
        if from_block is not None:
            start = from_block
        else:
            start = deployment.deployed_block if deployment is not None else 0
        with _translated("get BatchAnchored logs"):
            logs = self.ledger.events.BatchAnchored().get_logs(from_block=start)
        return [
            {
                "batch_id": int(log["args"]["batchId"]),
                "root": bytes(log["args"]["root"]),
                "leaf_count": int(log["args"]["leafCount"]),
                "accumulator": bytes(log["args"]["accumulator"]),
                "tx_hash": _hex(log["transactionHash"]),
                "block_number": int(log["blockNumber"]),
            }
            for log in logs
        ]

    # -- role events (what a mirror of the registry follows) -------------------------------

    def role_events(self, from_block: int, to_block: int) -> list[RoleEvent]:
        """Role and registration events of the ledger in blocks ``[from_block, to_block]``.

        Reads logs only (no historical state), so it works on nodes that prune state history
        (anvil ``--prune-history``); callers bound the range (providers cap ``eth_getLogs``).
        """
        ledger = self.ledger
        with _translated(f"get role logs {from_block}..{to_block}"):
            logs = self.w3.eth.get_logs(
                {
                    "address": ledger.address,
                    "fromBlock": from_block,
                    "toBlock": to_block,
                    "topics": [list(_role_event_topics())],
                }
            )
        return self._decode_role_logs(logs)

    def role_events_in(self, tx_hash: str) -> list[RoleEvent]:
        """The role and registration events a mined transaction of ours emitted."""
        with _translated(f"get receipt {tx_hash}"):
            receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        ledger_address = self.ledger.address
        return self._decode_role_logs(
            [
                log
                for log in receipt["logs"]
                if to_checksum_address(log["address"]) == ledger_address
            ]
        )

    def block_header(self, block: int | str = "latest") -> tuple[int, str, int]:
        """(number, hash, timestamp) of a block."""
        with _translated(f"get block {block}"):
            header = self.w3.eth.get_block(block)  # type: ignore[arg-type]
        return int(header["number"]), _hex(header["hash"]), int(header["timestamp"])

    def _decode_role_logs(self, logs: Sequence[Any]) -> list[RoleEvent]:
        names = _role_event_topics()
        timestamps: dict[int, int] = {}
        out: list[RoleEvent] = []
        for log in logs:
            topic0 = _hex(log["topics"][0]) if log["topics"] else ""
            name = names.get(topic0)
            if name is None:
                continue
            with _translated(f"decode {name}"):
                args = getattr(self.ledger.events, name)().process_log(log)["args"]
            role = ROLES_BY_ID.get(bytes(args["role"]))
            if role is None:
                continue  # a role this service does not know; nothing to mirror
            block = int(log["blockNumber"])
            if block not in timestamps:
                timestamps[block] = self.block_header(block)[2]
            out.append(
                RoleEvent(
                    block_number=block,
                    log_index=int(log["logIndex"]),
                    tx_hash=_hex(log["transactionHash"]),
                    block_timestamp=timestamps[block],
                    event=ROLE_EVENT_NAMES[name],
                    account=to_checksum_address(args["account"]),
                    role=role,
                    org_id=str(args["orgId"]) if name == "ParticipantRegistered" else None,
                )
            )
        return sorted(out, key=lambda e: (e.block_number, e.log_index))


class ModelRegistryCalls(Contracts):
    # -- model registry ----------------------------------------------------------------------

    def record_model_round(
        self,
        run_id: bytes,
        round: int,
        model_hash: bytes,
        participants: int,
        participants_root: bytes,
    ) -> str:
        """ANCHORER: record the global model of a federated-learning round; returns tx hash."""
        fn = self.model_registry.functions.recordRound(
            _bytes32(run_id, "run_id"),
            _uint32(round, "round"),
            _bytes32(model_hash, "model_hash"),
            _uint32(participants, "participants"),
            _bytes32(participants_root, "participants_root"),
        )
        tx_hash, _ = self._transact(fn, f"recordRound(round {round})")
        return tx_hash

    def model_round(self, run_id: bytes, round: int) -> dict[str, Any] | None:
        """``{model_hash, participants, participants_root, timestamp}`` or None if unrecorded."""
        run = _bytes32(run_id, "run_id")
        fn = self.model_registry.functions.roundOf(run, _uint32(round, "round"))
        model_hash, participants, participants_root, timestamp = self._call(fn, "roundOf")
        if timestamp == 0:
            return None
        return {
            "run_id": run,
            "round": round,
            "model_hash": bytes(model_hash),
            "participants": int(participants),
            "participants_root": bytes(participants_root),
            "timestamp": int(timestamp),
        }

    def latest_model_round(self, run_id: bytes) -> int | None:
        """The latest recorded round of ``run_id``, or None if none was recorded."""
        run = _bytes32(run_id, "run_id")
        if int(self._call(self.model_registry.functions.roundCount(run), "roundCount")) == 0:
            return None
        return int(self._call(self.model_registry.functions.latestRound(run), "latestRound"))


class CommitmentLogCalls(Contracts):
    # -- commitment log ----------------------------------------------------------------------

    def commit(self, topic: str | bytes, root: bytes, count: int) -> CommitResult:
        """ANCHORER: commit a root of ``count`` published values under ``topic``.

        ``topic`` is a name (hashed with keccak256, e.g. ``"credit-score"``) or a 32-byte id.
        """
        topic_bytes = topic_id(topic)
        root = _bytes32(root, "root")
        _uint32(count, "count")
        fn = self.commitment_log.functions.commit(topic_bytes, root, count)
        tx_hash, receipt, args = self._transact_event(
            fn, f"commit({topic!r}, 0x{root.hex()})", self.commitment_log.events.Committed
        )
        return CommitResult(
            seq=int(args["seq"]),
            topic=topic_bytes,
            root=root,
            count=count,
            tx_hash=tx_hash,
            block_number=int(receipt["blockNumber"]),
            timestamp=self._block_time(receipt),
            gas_used=int(receipt["gasUsed"]),
        )

    def commitment_count(self, commitment_log: str | None = None) -> int:
        """Roots committed so far in this deployment's CommitmentLog, or the one at
        ``commitment_log`` (a verifier attached to a ledger only names it)."""
        contract = (
            self._contract("CommitmentLog", commitment_log)
            if commitment_log
            else self.commitment_log
        )
        return int(self._call(contract.functions.commitmentCount(), "commitmentCount"))

    def committed_at(self, root: bytes) -> dict[str, Any] | None:
        """``{topic, seq, timestamp, block_number, count}`` of a committed root, else None."""
        fn = self.commitment_log.functions.committedAt(_bytes32(root, "root"))
        topic, seq, timestamp, block_number, count = self._call(fn, "committedAt")
        if seq == 0:
            return None
        return {
            "topic": bytes(topic),
            "seq": int(seq),
            "timestamp": int(timestamp),
            "block_number": int(block_number),
            "count": int(count),
        }

    def verify_commitment_on_chain(
        self, root: bytes, proof: Sequence[bytes], value_hash: bytes
    ) -> bool:
        fn = self.commitment_log.functions.verifyCommitment(
            _bytes32(root, "root"),
            [_bytes32(p, "proof element") for p in proof],
            _bytes32(value_hash, "value_hash"),
        )
        return bool(self._call(fn, "verifyCommitment"))
