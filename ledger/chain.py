"""The chain client: deploy, administer and read the qledger contracts over any EVM JSON-RPC node.

``ChainClient.connect(url)`` talks to a node (anvil locally, Besu/QBFT in production);
``ChainClient.in_process()`` runs an in-process py-evm chain (eth-tester) for unit tests. Both
expose the same methods. Every failure surfaces as a :mod:`ledger.errors` exception:

* :class:`~ledger.errors.ChainUnavailable` when the endpoint does not answer (callers retry with
  backoff),
* :class:`ContractReverted` (a :class:`~ledger.errors.TransactionReverted`) when a call or
  transaction reverts, with the decoded custom error name and arguments,
* :class:`~ledger.errors.ChainError` for everything else (wrong chain, missing contract, ...).

Transactions are simulated (``eth_estimateGas``) before they are sent, so a revert is reported
without spending gas. With ``private_key`` transactions are signed locally and sent raw; without
it the node's first unlocked account sends them (anvil / dev nodes).
"""

from __future__ import annotations

import ast
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ContractPanicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.logs import DISCARD
from web3.types import TxReceipt

from ledger.artifacts import load_artifact
from ledger.errors import ChainError, ChainUnavailable, LedgerError, TransactionReverted
from ledger.records import Role

T = TypeVar("T")

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)

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


class ContractReverted(TransactionReverted):
    """A call or transaction reverted; ``error_name``/``error_args`` decode the custom error."""

    def __init__(
        self,
        message: str,
        *,
        error_name: str | None = None,
        error_args: dict[str, Any] | None = None,
        tx_hash: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = error_args or {}
        self.tx_hash = tx_hash


# ---------------------------------------------------------------------------------------------
# Revert decoding
# ---------------------------------------------------------------------------------------------


def _abi_type(entry: Mapping[str, Any]) -> str:
    """Canonical ABI type of an input, expanding tuples."""
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in entry.get("components", []))
        return f"({inner}){kind[5:]}"
    return kind


def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in CONTRACTS:
        for entry in load_artifact(name)["abi"]:
            if entry.get("type") != "error":
                continue
            types = [_abi_type(i) for i in entry.get("inputs", [])]
            names = [str(i.get("name") or f"arg{n}") for n, i in enumerate(entry["inputs"])]
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
            table[selector] = (str(entry["name"]), types, names)
    return table


_ERRORS: dict[bytes, tuple[str, list[str], list[str]]] | None = None
PANIC_SELECTOR = function_signature_to_4byte_selector("Panic(uint256)")
ERROR_SELECTOR = function_signature_to_4byte_selector("Error(string)")


def _format_arg(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def decode_revert(data: bytes | str | None) -> tuple[str | None, dict[str, Any]]:
    """Decode revert data into (error name, {argument: value}); (None, {}) if unknown."""
    global _ERRORS
    if data is None:
        return None, {}
    if isinstance(data, str):
        text = data[2:] if data.startswith("0x") else data
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            return None, {}
    else:
        raw = bytes(data)
    if len(raw) < 4:
        return None, {}
    if _ERRORS is None:
        _ERRORS = _error_table()
    selector, payload = raw[:4], raw[4:]
    try:
        if selector == ERROR_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return "Error", {"reason": reason}
        if selector == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], payload)
            return "Panic", {"code": hex(code)}
        if selector in _ERRORS:
            name, types, names = _ERRORS[selector]
            values = abi_decode(types, payload)
            return name, {n: _format_arg(v) for n, v in zip(names, values, strict=True)}
    except Exception:  # malformed revert data: report it undecoded
        return None, {}
    return None, {}


def _revert_data(exc: ContractLogicError) -> str | None:
    data = exc.data
    if isinstance(data, dict):  # some providers nest it
        data = data.get("data")
    if isinstance(data, bytes | HexBytes):
        return "0x" + bytes(data).hex()
    if isinstance(data, str) and data.startswith("0x"):
        return data
    return None


def _render(value: Any) -> str:
    """An error argument for a message: role ids by name, the rest as is."""
    if isinstance(value, str) and len(value) == 66:
        role = ROLES_BY_ID.get(bytes.fromhex(value[2:]))
        if role is not None:
            return f"{role.value}_ROLE"
    return str(value)


def _reverted(action: str, exc: ContractLogicError, tx_hash: str | None = None) -> ContractReverted:
    data = _revert_data(exc)
    name, args = decode_revert(data)
    if name is None and isinstance(exc, ContractPanicError):
        name = "Panic"
    if name is not None:
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in args.items())
        message = f"{action} reverted: {name}({rendered})"
    else:
        message = f"{action} reverted: {exc.message or exc}"
    return ContractReverted(message, error_name=name, error_args=args, tx_hash=tx_hash)


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
    TimeoutError,
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    try:
        import aiohttp  # web3's async providers

        return isinstance(exc, aiohttp.ClientConnectionError)
    except ImportError:  # pragma: no cover
        return False


def _tester_revert_data(exc: BaseException) -> str | None:
    """Revert data of an eth-tester ``TransactionFailed`` (raw bytes somewhere in the chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        first = current.args[0] if current.args else None
        if isinstance(first, bytes):
            return "0x" + first.hex()
        if isinstance(first, str):
            text = first.removeprefix("execution reverted: ")
            if text.startswith(("b'", 'b"')):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return "0x" + value.hex()
        current = current.__cause__ or current.__context__
    return None


def _is_tester_failure(exc: BaseException) -> bool:
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # pragma: no cover - eth-tester is only needed in-process
        return False
    return isinstance(exc, TransactionFailed)


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Map web3 / transport exceptions raised inside the block to ledger errors."""
    try:
        yield
    except LedgerError:
        raise
    except ContractLogicError as exc:
        raise _reverted(action, exc) from exc
    except TimeExhausted as exc:
        raise ChainUnavailable(f"{action}: not mined in time ({exc})") from exc
    except Web3RPCError as exc:
        raise ChainError(f"{action}: node refused: {exc}") from exc
    except Web3Exception as exc:
        if _is_unavailable(exc) or isinstance(exc.__cause__, _UNAVAILABLE):
            raise ChainUnavailable(f"{action}: endpoint unavailable: {exc}") from exc
        raise ChainError(f"{action}: {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        raise ChainUnavailable(f"{action}: endpoint answered {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise ChainUnavailable(f"{action}: endpoint unavailable: {exc}") from exc
    except Exception as exc:
        if _is_tester_failure(exc):
            logic_error = ContractLogicError(str(exc), data=_tester_revert_data(exc))
            raise _reverted(action, logic_error) from exc
        if _is_unavailable(exc):
            raise ChainUnavailable(f"{action}: endpoint unavailable: {exc}") from exc
        if isinstance(exc, ValueError | TypeError | KeyError):
            # web3 and eth-tester report RPC-level failures as plain ValueError / KeyError.
            raise ChainError(f"{action}: {exc!r}") from exc
        raise


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass
class _Contracts:
    ledger: Contract
    model_registry: Contract | None
    commitment_log: Contract | None
    deployment: Deployment | None = field(repr=False)


class ChainClient:
    """Deploys, administers and reads the qledger contracts on one chain, as one sender."""

    def __init__(
        self,
        w3: Web3,
        *,
        account: LocalAccount | None = None,
        sender: str | None = None,
        deployment: Deployment | None = None,
        allow_evm_mine: bool = False,
        tx_timeout: float = 120.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.w3 = w3
        self._account = account
        self.allow_evm_mine = allow_evm_mine
        self.tx_timeout = tx_timeout
        self.poll_interval = poll_interval
        self._send_lock = threading.Lock()
        self._contracts: _Contracts | None = None
        with _translated("connect"):
            self.chain_id: int = int(w3.eth.chain_id)
        # Without a key or an unlocked account the client can only read (e.g. a verifier).
        self.read_only = False
        if account is not None:
            self.sender: str = account.address
        elif sender is not None:
            self.sender = to_checksum_address(sender)
        else:
            accounts = self.accounts()
            self.read_only = not accounts
            self.sender = accounts[0] if accounts else to_checksum_address("0x" + "00" * 20)
        if deployment is not None:
            self.attach(deployment)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        *,
        private_key: str | None = None,
        deployment: Deployment | None = None,
        timeout: float = 10,
        allow_evm_mine: bool = False,
    ) -> ChainClient:
        """Connect to a JSON-RPC endpoint (http/https).

        With ``private_key`` transactions are signed locally; otherwise the node's first unlocked
        account sends them. ``allow_evm_mine`` lets :meth:`wait_for_confirmations` mine empty
        blocks on dev chains that only mine on demand (anvil without ``--block-time``).
        """
        if not rpc_url.startswith(("http://", "https://")):
            raise ChainError("only http(s) JSON-RPC endpoints are supported", got=rpc_url)
        from web3.middleware import ExtraDataToPOAMiddleware

        provider = Web3.HTTPProvider(
            rpc_url,
            request_kwargs={"timeout": timeout},
            exception_retry_configuration=None,  # callers retry with their own backoff
        )
        w3 = Web3(provider)
        # QBFT/Clique headers carry > 32 bytes of extraData; harmless elsewhere.
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
        account: LocalAccount | None = None
        if private_key is not None:
            try:
                account = Account.from_key(private_key)
            except (ValueError, TypeError) as exc:
                raise ChainError(f"invalid private key: {exc}") from None
        return cls(
            w3,
            account=account,
            deployment=deployment,
            allow_evm_mine=allow_evm_mine,
            tx_timeout=max(float(timeout) * 6, 60.0),
        )

    @classmethod
    def connect_ledger(cls, rpc_url: str, ledger: str, *, timeout: float = 10) -> ChainClient:
        """A client attached to one QualityLedger only, e.g. the contract named in a receipt.

        What a verifier needs (roles, anchors, proofs) without a deployment file; it sends
        nothing unless the node has unlocked accounts.
        """
        client = cls.connect(rpc_url, timeout=timeout)
        client.attach_ledger(ledger)
        return client

    @classmethod
    def in_process(cls) -> ChainClient:
        """A fresh in-process py-evm chain (eth-tester) with funded, unlocked accounts."""
        from web3 import EthereumTesterProvider

        w3 = Web3(EthereumTesterProvider())
        return cls(w3, allow_evm_mine=True, poll_interval=0.01)

    def with_sender(
        self, sender: str | None = None, *, private_key: str | None = None
    ) -> ChainClient:
        """A client on the same connection and deployment that sends as another account.

        Give ``private_key`` to sign locally, or ``sender`` for an unlocked dev account.
        """
        account: LocalAccount | None = None
        if private_key is not None:
            try:
                account = Account.from_key(private_key)
            except (ValueError, TypeError) as exc:
                raise ChainError(f"invalid private key: {exc}") from None
        elif sender is None:
            raise ValueError("give sender or private_key")
        client = ChainClient(
            self.w3,
            account=account,
            sender=sender,
            allow_evm_mine=self.allow_evm_mine,
            tx_timeout=self.tx_timeout,
            poll_interval=self.poll_interval,
        )
        client._contracts = self._contracts
        return client

    # -- accounts and blocks -----------------------------------------------------------------

    def accounts(self) -> list[str]:
        """The node's unlocked dev accounts (empty for production nodes)."""
        try:
            with _translated("eth_accounts"):
                return [to_checksum_address(a) for a in self.w3.eth.accounts]
        except ChainUnavailable:
            raise
        except ChainError:
            return []

    def block_timestamp(self, block: int | str = "latest") -> int:
        with _translated(f"get block {block}"):
            return int(self.w3.eth.get_block(block)["timestamp"])

    def block_number(self) -> int:
        with _translated("eth_blockNumber"):
            return int(self.w3.eth.block_number)

    def balance(self, account: str | None = None) -> int:
        with _translated("eth_getBalance"):
            return int(self.w3.eth.get_balance(to_checksum_address(account or self.sender)))

    def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (dev chains only: eth-tester, anvil, hardhat)."""
        with _translated("evm_mine"):
            if self._tester is not None:
                self._tester.mine_blocks(blocks)
                return
            for _ in range(blocks):
                self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def advance_time(self, seconds: int) -> int:
        """Dev chains only: mine a block ``seconds`` after the latest one; returns its timestamp."""
        with _translated("advance time"):
            target = self.block_timestamp() + int(seconds)
            if self._tester is not None:
                self._tester.time_travel(target)
            else:
                self.w3.provider.make_request(  # type: ignore[arg-type]
                    "evm_setNextBlockTimestamp", [target]
                )
                self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
            return self.block_timestamp()

    @property
    def _tester(self) -> Any:
        """The eth-tester instance behind an in-process chain, else None."""
        return getattr(self.w3.provider, "ethereum_tester", None)

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

    def _contract(self, name: str, address: str | None = None) -> Contract:
        artifact = load_artifact(name)
        if address is None:
            return self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        return self.w3.eth.contract(address=to_checksum_address(address), abi=artifact["abi"])

    def _deploy_one(self, name: str, *args: Any) -> TxReceipt:
        factory = self._contract(name)
        _, receipt = self._transact(factory.constructor(*args), f"deploy {name}")
        if not receipt.get("contractAddress"):
            raise ChainError(f"deploy {name}: receipt has no contract address")
        return receipt

    def deploy(self, admin: str | None = None) -> Deployment:
        """Deploy QualityLedger, ModelRegistry and CommitmentLog and attach to them.

        ``admin`` (default: the sender) receives ADMIN_ROLE. When the sender is the admin it also
        grants itself ANCHORER_ROLE, so the same client can anchor right away.
        """
        admin_address = to_checksum_address(admin or self.sender)
        ledger_receipt = self._deploy_one("QualityLedger", admin_address)
        ledger_address = to_checksum_address(ledger_receipt["contractAddress"])
        registry_receipt = self._deploy_one("ModelRegistry", ledger_address)
        log_receipt = self._deploy_one("CommitmentLog", ledger_address)
        deployment = Deployment(
            chain_id=self.chain_id,
            ledger=ledger_address,
            model_registry=to_checksum_address(registry_receipt["contractAddress"]),
            commitment_log=to_checksum_address(log_receipt["contractAddress"]),
            deployed_block=int(ledger_receipt["blockNumber"]),
        )
        self.attach(deployment)
        if admin_address == self.sender:
            self.grant_role(Role.ANCHORER, self.sender)
        return deployment

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
                    raise ChainError(
                        f"no {name} contract at {address} on chain {self.chain_id} "
                        "(was the chain reset? deploy again)"
                    )
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
            if not self.w3.eth.get_code(address):
                raise ChainError(f"no contract at {address} on chain {self.chain_id}")
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

    # -- transactions ------------------------------------------------------------------------

    def _transact(self, fn: ContractFunction | Any, action: str) -> tuple[str, TxReceipt]:
        """Simulate, send and wait for ``fn``; raise ContractReverted with the decoded error."""
        if self.read_only:
            raise ChainError(
                f"{action}: this client cannot send transactions (no private key and the node "
                "has no unlocked account)"
            )
        with _translated(action):
            with self._send_lock:
                params: dict[str, Any] = {"from": self.sender, "chainId": self.chain_id}
                gas = int(fn.estimate_gas({"from": self.sender}))
                params["gas"] = gas * GAS_MARGIN_NUMERATOR // GAS_MARGIN_DENOMINATOR
                if self._account is not None:
                    params["nonce"] = self.w3.eth.get_transaction_count(self.sender, "pending")
                    tx = fn.build_transaction(params)
                    signed = self._account.sign_transaction(tx)
                    tx_hash = _hex(self.w3.eth.send_raw_transaction(signed.raw_transaction))
                else:
                    tx_hash = _hex(fn.transact(params))
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self.tx_timeout, poll_latency=self.poll_interval
            )
        if receipt["status"] != 1:
            raise self._replay_failure(fn, receipt, action, tx_hash)
        return tx_hash, receipt

    def _transact_event(
        self, fn: ContractFunction | Any, action: str, event: Any
    ) -> tuple[str, TxReceipt, Any]:
        """Send ``fn`` and return the args of the ``event`` its transaction must emit."""
        tx_hash, receipt = self._transact(fn, action)
        events = event().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise ChainError(f"{action}: transaction {tx_hash} emitted no {event.event_name} "
                             "event")
        return tx_hash, receipt, events[0]["args"]

    def _replay_failure(
        self, fn: Any, receipt: TxReceipt, action: str, tx_hash: str
    ) -> ContractReverted:
        """Re-run a mined, failed transaction as a call to recover its revert reason."""
        try:
            fn.call({"from": self.sender}, block_identifier=receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            err = _reverted(action, exc, tx_hash=tx_hash)
            return err
        except Exception:  # the node may not keep that state; fall through
            pass
        return ContractReverted(
            f"{action} reverted in transaction {tx_hash} (block {receipt['blockNumber']}, "
            f"gas used {receipt['gasUsed']})",
            tx_hash=tx_hash,
        )

    def _call(self, fn: Any, action: str, block: int | str = "latest") -> Any:
        with _translated(action):
            try:
                return fn.call(block_identifier=block)
            except (Web3RPCError, ValueError) as exc:
                if block not in ("latest", "pending", "safe", "finalized") and not (
                    _is_tester_failure(exc)
                ):
                    raise ChainError(
                        f"{action} at block {block} failed: {exc} (nodes that prune history, "
                        "like anvil --prune-history, keep no old state; ask by timestamp with "
                        "had_role_at instead)"
                    ) from exc
                raise

    def _block_time(self, receipt: TxReceipt) -> int:
        return self.block_timestamp(int(receipt["blockNumber"]))

    def transaction_block(self, tx_hash: str) -> tuple[int, str] | None:
        """(block number, ``to`` address) of a successful transaction; None if unknown/failed."""
        with _translated(f"get receipt {tx_hash}"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
        if receipt is None or receipt["status"] != 1 or not receipt.get("to"):
            return None
        return int(receipt["blockNumber"]), to_checksum_address(receipt["to"])

    def wait_for_confirmations(self, tx_hash: str, confirmations: int, timeout: float = 60) -> int:
        """Wait until ``tx_hash`` is ``confirmations`` blocks deep (1 = mined); return its block.

        On dev chains that mine only on demand, mines the missing blocks when ``allow_evm_mine``
        is set. Raises ChainError if the transaction failed, ChainUnavailable on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            with _translated(f"get receipt {tx_hash}"):
                try:
                    receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
                except TransactionNotFound:
                    receipt = None
                tip = int(self.w3.eth.block_number)
            if receipt is not None:
                if receipt["status"] != 1:
                    raise TransactionReverted(f"transaction {tx_hash} failed")
                block = int(receipt["blockNumber"])
                missing = confirmations - (tip - block + 1)
                if missing <= 0:
                    return block
                if self.allow_evm_mine:
                    self.mine(missing)
                    continue
            if time.monotonic() >= deadline:
                state = "not mined" if receipt is None else f"at depth {tip - block + 1}"
                raise ChainUnavailable(
                    f"transaction {tx_hash} {state} after {timeout}s "
                    f"(wanted {confirmations} confirmations)"
                )
            time.sleep(max(self.poll_interval, 0.05))

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
        """Raw AccessControl grant (e.g. ANCHORER to the anchoring service's key)."""
        fn = self.ledger.functions.grantRole(ROLE_IDS[Role(role)], to_checksum_address(account))
        tx_hash, _ = self._transact(fn, f"grantRole({Role(role).value}, {account})")
        return tx_hash

    def revoke_role(self, role: Role, account: str) -> str:
        """Raw AccessControl revoke."""
        fn = self.ledger.functions.revokeRole(ROLE_IDS[Role(role)], to_checksum_address(account))
        tx_hash, _ = self._transact(fn, f"revokeRole({Role(role).value}, {account})")
        return tx_hash

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
            fn, f"anchorBatch(0x{root.hex()}, {leaf_count})", self.ledger.events.BatchAnchored)
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
            fn, f"commit({topic!r}, 0x{root.hex()})", self.commitment_log.events.Committed)
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


def with_retries(
    action: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``, retrying on ChainUnavailable with exponential backoff."""
    delay = base_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ChainUnavailable:
            if attempt == attempts:
                raise
            sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # pragma: no cover
