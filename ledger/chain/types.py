"""Ids, sizes and result types of the qledger contracts (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from ledger._files import write_atomically
from ledger.errors import ChainError
from ledger.records import Role

UINT32_MAX = 2**32 - 1
ZERO32 = b"\0" * 32
# Gas estimates are exact for our contracts; a margin covers state changing between simulation and
# inclusion (e.g. the first anchor of a chain writes the counters slot from zero).
GAS_MARGIN_NUMERATOR, GAS_MARGIN_DENOMINATOR = 6, 5
PARTICIPANT_ROLES: tuple[Role, ...] = (Role.SUPPLIER, Role.OEM, Role.AUDITOR)
CONTRACTS = ("QualityLedger", "ModelRegistry", "CommitmentLog")


# ---------------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------------


def role_id(role: Role) -> bytes:
    """On-chain id of ``role``: ``keccak256("<NAME>_ROLE")``; ADMIN is AccessControl's 0x00."""
    role = Role(role)
    if role is Role.ADMIN:
        return ZERO32
    return keccak(text=f"{role.value}_ROLE")


ROLE_IDS: dict[Role, bytes] = {role: role_id(role) for role in Role}
ROLES_BY_ID: dict[bytes, Role] = {value: role for role, value in ROLE_IDS.items()}


# Events a mirror of the participant registry follows, and what each one means for it:
# AccessControl's RoleGranted/RoleRevoked for every role change (however it was made), and
# QualityLedger's ParticipantRegistered for the organisation an account signs for.
ROLE_EVENT_NAMES: dict[str, str] = {
    "RoleGranted": "granted",
    "RoleRevoked": "revoked",
    "ParticipantRegistered": "registered",
}


@dataclass(frozen=True)
class RoleEvent:
    """One role or registration event of the ledger, in chain order by (block, log index)."""

    block_number: int
    log_index: int
    tx_hash: str
    block_timestamp: int
    event: str  # "granted" | "revoked" | "registered"
    account: str
    role: Role
    org_id: str | None = None


def topic_id(topic: str | bytes) -> bytes:
    """CommitmentLog topic id: ``keccak256(topic)`` for a name, or a 32-byte id as given."""
    if isinstance(topic, str):
        if topic.startswith("0x") and len(topic) == 66:
            return bytes.fromhex(topic[2:])
        return keccak(text=topic)
    return _bytes32(topic, "topic")


def run_id(name: str) -> bytes:
    """ModelRegistry run id of a named federated-learning run: ``keccak256(name)``."""
    return keccak(text=name)


def _bytes32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{what} must be 32 bytes (hex), got {value!r}") from None
    value = bytes(value)
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _uint32(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{what} must be an integer in [0, 2**32 - 1], got {value!r}")
    return value


def _hex(value: bytes | HexBytes | str) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """Where the three contracts live on one chain."""

    chain_id: int
    ledger: str
    model_registry: str
    commitment_log: str
    deployed_block: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        try:
            return cls(
                chain_id=int(data["chain_id"]),
                ledger=to_checksum_address(data["ledger"]),
                model_registry=to_checksum_address(data["model_registry"]),
                commitment_log=to_checksum_address(data["commitment_log"]),
                deployed_block=int(data["deployed_block"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f"invalid deployment description: {exc!r}") from exc

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Deployment:
        if isinstance(data, Mapping):
            return cls.from_dict(data)
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise ChainError(f"deployment is not JSON: {exc}") from exc
        if not isinstance(parsed, Mapping):
            raise ChainError("deployment JSON must be an object", got=type(parsed).__name__)
        return cls.from_dict(parsed)

    def save(self, path: str | Path) -> None:
        write_atomically(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ChainError(f"cannot read deployment file {path}: {exc}") from exc
        return cls.from_json(text)


@dataclass(frozen=True)
class AnchorResult:
    batch_id: int
    root: bytes
    leaf_count: int
    tx_hash: str
    block_number: int
    timestamp: int
    gas_used: int


@dataclass(frozen=True)
class AnchorInfo:
    batch_id: int
    timestamp: int
    block_number: int
    leaf_count: int


@dataclass(frozen=True)
class Checkpoint:
    batch_count: int
    accumulator: bytes
    leaf_total: int


@dataclass(frozen=True)
class CommitResult:
    seq: int
    topic: bytes
    root: bytes
    count: int
    tx_hash: str
    block_number: int
    timestamp: int
    gas_used: int
