"""JSON-RPC transport: sending, calling, waiting, and translating every failure into
:mod:`ledger.errors` (``ChainUnavailable`` to retry, ``ContractReverted`` with the decoded custom
error, ``ChainError`` for the rest).

Transactions are simulated (``eth_estimateGas``) before they are sent, so a revert is reported
without spending gas. With a private key transactions are signed locally and sent raw; without
one the node's first unlocked account sends them (anvil / dev nodes).
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from eth_typing import ChecksumAddress
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    ContractPanicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.logs import DISCARD
from web3.types import BlockParams, RPCEndpoint, TxParams, TxReceipt

from ledger.artifacts import load_artifact
from ledger.chain.types import (
    CONTRACTS,
    GAS_MARGIN_DENOMINATOR,
    GAS_MARGIN_NUMERATOR,
    ROLES_BY_ID,
    _hex,
)
from ledger.errors import ChainError, ChainUnavailable, LedgerError, TransactionReverted

T = TypeVar("T")


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
        if isinstance(exc, ValueError | TypeError | KeyError) and _raised_in_library(exc):
            # web3 and eth-tester report RPC-level failures as plain ValueError / KeyError; the
            # same exceptions raised by our own code are bugs and must surface as they are.
            raise ChainError(f"{action}: {exc!r}") from exc
        raise


# Modules whose exceptions are ours (bugs to surface), not the transport's (failures to translate).
_OWN_PACKAGES = ("ledger", "api", "credit", "federated", "simulator", "cli", "tests", "scripts")


def _raised_in_library(exc: BaseException) -> bool:
    """True when the innermost frame that raised ``exc`` belongs to a third-party library."""
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.split(".", 1)[0] not in _OWN_PACKAGES


def http_web3(rpc_url: str, timeout: float) -> Web3:
    """A Web3 on an http(s) JSON-RPC endpoint, without web3's own retries."""
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
    return w3


def local_account(private_key: str) -> LocalAccount:
    """The signing account of ``private_key``; the key itself never appears in the error."""
    try:
        return Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        raise ChainError(f"invalid private key: {type(exc).__name__}") from None


class Transport:
    """One connection and one sender: blocks, calls and transactions, failures translated."""

    def __init__(
        self,
        w3: Web3,
        *,
        account: LocalAccount | None = None,
        sender: str | None = None,
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
        with _translated("connect"):
            self.chain_id: int = int(w3.eth.chain_id)
        # Without a key or an unlocked account the client can only read (e.g. a verifier).
        self.read_only = False
        if account is not None:
            self.sender: ChecksumAddress = account.address
        elif sender is not None:
            self.sender = to_checksum_address(sender)
        else:
            accounts = self.accounts()
            self.read_only = not accounts
            self.sender = accounts[0] if accounts else to_checksum_address("0x" + "00" * 20)

    # -- construction ------------------------------------------------------------------------
    # -- accounts and blocks -----------------------------------------------------------------

    def accounts(self) -> list[ChecksumAddress]:
        """The node's unlocked dev accounts (empty for production nodes)."""
        try:
            with _translated("eth_accounts"):
                return [to_checksum_address(a) for a in self.w3.eth.accounts]
        except ChainUnavailable:
            raise
        except ChainError:
            return []

    def block_timestamp(self, block: BlockParams | int = "latest") -> int:
        with _translated(f"get block {block}"):
            return int(self.w3.eth.get_block(block)["timestamp"])

    def block_number(self) -> int:
        with _translated("eth_blockNumber"):
            return int(self.w3.eth.block_number)

    def block_hash(self, number: int) -> str | None:
        """Hash of the canonical block at height ``number`` (0x-hex), None beyond the tip."""
        with _translated(f"get block {number}"):
            try:
                block = self.w3.eth.get_block(int(number))
            except BlockNotFound:
                return None
        return _hex(block["hash"]).lower()

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
                self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    @property
    def _tester(self) -> Any:
        """The eth-tester instance behind an in-process chain, else None."""
        return getattr(self.w3.provider, "ethereum_tester", None)

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
                params: TxParams = {"from": self.sender, "chainId": self.chain_id}
                gas = int(fn.estimate_gas({"from": self.sender}))
                params["gas"] = gas * GAS_MARGIN_NUMERATOR // GAS_MARGIN_DENOMINATOR
                if self._account is not None:
                    params["nonce"] = self.w3.eth.get_transaction_count(self.sender, "pending")
                    tx = fn.build_transaction(params)
                    # web3's TxParams and eth-account's TransactionDictType describe the same
                    # dict in two libraries' words; neither knows the other's TypedDict.
                    signed = self._account.sign_transaction(cast(TransactionDictType, tx))
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
            raise ChainError(f"{action}: transaction {tx_hash} emitted no {event.event_name} event")
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
