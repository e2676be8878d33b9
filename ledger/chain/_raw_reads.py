"""Lean JSON-RPC reads of the facts receipt verification asks the chain (bulk verification).

``ChainClient`` reads through web3's contract machinery: a function object, argument
normalisation, formatters and middleware per call, ~2.2 ms of CPU for each read
(scripts/bench_verify.py). A bulk verification asks the same handful of questions once per
distinct batch root and signer, so :class:`RawLedgerReads` asks them with calldata built from
precomputed selectors and 32-byte words (the ABI encoding of an address and a bytes32), sends
the JSON itself over ``http.client`` (one kept-alive connection) and decodes the answers with
``eth_abi`` and the output types of the contract's ABI (what web3 decodes with). A signer's
three role histories go in one JSON-RPC batch request (:meth:`RawLedgerReads.role_histories`).

Same facts, same failures as the web3 client: every answer is checked for what it must be
(the request's id, a ``result``, return data of the ABI's shape, a 32-byte block hash, ...)
and anything else raises :class:`~ledger.errors.ChainError` (``ChainUnavailable`` where the
endpoint did not answer), which the verifier reports as a failed check. It never guesses: a
batch answer with a missing or duplicated id leaves that question unanswered (a ChainError),
whatever order the answers come in.

Proxies are honoured as ``ChainClient`` (requests) honours them: ``HTTP_PROXY`` /
``HTTPS_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY`` from the environment (urllib's reading of
them); a plain-HTTP endpoint is asked through the proxy with an absolute URI, an HTTPS one
through a ``CONNECT`` tunnel. Only ``http://`` proxies: any other proxy scheme is a ChainError
that names it, never a silent direct connection.

Reads only; connecting, attaching and checking the ledger's code stay with ``ChainClient``.
"""

from __future__ import annotations

import base64
import http.client
import itertools
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urlsplit
from urllib.request import getproxies, proxy_bypass

import orjson
from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError

from ledger._address import to_checksum
from ledger._hash import keccak
from ledger.chain.types import ROLE_IDS, AnchorInfo
from ledger.errors import ChainError, ChainUnavailable
from ledger.merkle import leaf_hash, process_proof
from ledger.records import Role


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


# Selectors and output types of contracts/QualityLedger.sol's views (its committed ABI: the
# same types web3 decodes with).
_ROLE_HISTORY: Final = _selector("roleHistory(address,bytes32)")
_ROLE_HISTORY_OUT: Final = ("(uint64,uint64)[]",)
_ORG_OF: Final = _selector("orgOf(address)")
_ORG_OF_OUT: Final = ("string",)
_ANCHORED_AT: Final = _selector("anchoredAt(bytes32)")
_ANCHORED_AT_OUT: Final = ("uint64", "uint64", "uint64", "uint32")
# An answer larger than this is no answer to these questions (a role history of thousands of
# grants is a few hundred kilobytes); reading it whole would let an endpoint exhaust memory.
MAX_ANSWER_BYTES: Final = 16 << 20


def _hex_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainError(f"{what}: expected 0x-hex, got {str(value)[:80]!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise ChainError(f"{what}: expected 0x-hex, got {value[:80]!r}") from exc


def _quantity(value: object, what: str) -> int:
    """A JSON-RPC QUANTITY (``0x`` + hex digits)."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise ChainError(f"{what}: expected a 0x-hex quantity, got {str(value)[:80]!r}")
    try:
        return int(value[2:], 16)
    except ValueError as exc:
        raise ChainError(f"{what}: expected a 0x-hex quantity, got {value[:80]!r}") from exc


def _address_word(account: str) -> bytes:
    """An ``address`` argument's ABI word (what eth_abi encodes: 12 zero bytes, then the
    address); ``to_checksum`` refuses anything but 0x and 40 hex digits, as web3 does."""
    return bytes(12) + bytes.fromhex(to_checksum(account)[2:])


def _decode(types: Sequence[str], data: bytes, what: str) -> tuple[Any, ...]:
    if not data:
        # What web3 calls BadFunctionCallOutput: no code at the address, or not this contract.
        raise ChainError(f"{what}: the call returned no data (no contract there, or another one)")
    try:
        return tuple(abi_decode(list(types), data))
    except (DecodingError, OverflowError, ValueError) as exc:
        raise ChainError(
            f"{what}: return data is not ({', '.join(types)}) ({len(data)} bytes): {exc}"
        ) from exc


def _basic(user: str, password: str | None) -> str:
    token = base64.b64encode(f"{unquote(user)}:{unquote(password or '')}".encode()).decode()
    return f"Basic {token}"


def _proxy_for(url: SplitResult) -> SplitResult | None:
    """The proxy requests would use for ``url`` (environment, then NO_PROXY), or None."""
    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(url.netloc.rsplit("@", 1)[-1]):
        return None
    if "://" not in proxy:  # "host:3128", as requests reads it
        proxy = f"http://{proxy}"
    parsed = urlsplit(proxy)
    if parsed.scheme != "http" or not parsed.hostname:
        raise ChainError(
            f"expected an http:// proxy for {url.scheme} endpoints, got {parsed.scheme!r} "
            "(from the *_PROXY environment); set NO_PROXY for this host or use an http:// proxy"
        )
    return parsed


class RawLedgerReads:
    """A :class:`ledger.verify.ChainReader` over lean JSON-RPC reads of one QualityLedger.

    ``ledger`` is the address a ``ChainClient`` attached to (None: it found no code there, and
    verification names the failed check, as with the client). ``requests_sent`` counts HTTP
    requests, ``calls_sent`` the JSON-RPC calls in them."""

    def __init__(self, rpc_url: str, ledger: str | None, *, timeout: float = 10) -> None:
        url = urlsplit(rpc_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ChainError(f"expected an http(s) JSON-RPC URL, got scheme {url.scheme!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        host = url.netloc.rsplit("@", 1)[-1]
        self._headers = {"Content-Type": "application/json", "Host": host}
        if url.username is not None:  # user:password@host, as requests would send it
            self._headers["Authorization"] = _basic(url.username, url.password)
        self._proxy = _proxy_for(url)
        self._tunnel_headers: dict[str, str] = {}
        if self._proxy is not None:
            auth = (
                {"Proxy-Authorization": _basic(self._proxy.username, self._proxy.password)}
                if self._proxy.username is not None
                else {}
            )
            if self._https:  # the proxy sees only CONNECT host:port; TLS is end to end
                self._tunnel_headers = auth
            else:  # the proxy forwards the request: absolute URI, credentials for it
                self._path = f"http://{host}{self._path}"
                self._headers.update(auth)
        self._ledger = to_checksum(ledger) if ledger is not None else None
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None
        self._ids = itertools.count(1)
        self.requests_sent = 0
        self.calls_sent = 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- transport --------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            if self._proxy is None:
                self._connection = kind(self._host, self._port, timeout=self._timeout)
            else:
                self._connection = kind(
                    str(self._proxy.hostname), self._proxy.port or 80, timeout=self._timeout
                )
                if self._https:
                    self._connection.set_tunnel(
                        self._host, self._port or 443, headers=self._tunnel_headers
                    )
        return self._connection

    def _exchange(self, body: bytes) -> tuple[int, bytes]:
        connection = self._connect()
        try:
            connection.request("POST", self._path, body, self._headers)
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
            if response.will_close or len(raw) > MAX_ANSWER_BYTES:
                self.close()
            return response.status, raw
        except BaseException:
            self.close()
            raise

    def _post(self, body: bytes, action: str) -> Any:
        """One HTTP request on a kept-alive connection. A connection the endpoint closed
        while idle is opened again once (every request here is a read: sending it twice is
        harmless); any other failure to get an answer is ChainUnavailable."""
        self.requests_sent += 1
        try:
            try:
                status, raw = self._exchange(body)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                status, raw = self._exchange(body)
        except (OSError, http.client.HTTPException) as exc:
            raise ChainUnavailable(f"{action}: endpoint unavailable: {exc!r}") from exc
        if status != 200:
            raise ChainUnavailable(f"{action}: endpoint answered HTTP {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise ChainError(f"{action}: answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ChainError(f"{action}: the endpoint's answer is not JSON: {exc}") from exc

    @staticmethod
    def _result(entry: object, action: str) -> Any:
        """The ``result`` of one JSON-RPC answer; an error object or no result raises."""
        if not isinstance(entry, dict):
            raise ChainError(f"{action}: expected a JSON-RPC answer object, got {str(entry)[:80]}")
        error = entry.get("error")
        if error is not None:
            if isinstance(error, dict):
                code, message = error.get("code"), str(error.get("message"))[:200]
                raise ChainError(f"{action}: node refused: {message} (code {code})")
            raise ChainError(f"{action}: node refused: {str(error)[:200]}")
        if "result" not in entry:
            raise ChainError(f"{action}: the answer has neither result nor error")
        return entry["result"]

    def _request(self, method: str, params: list[Any], action: str) -> Any:
        self.calls_sent += 1
        request_id = next(self._ids)
        body = orjson.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )
        answer = self._post(body, action)
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            got = answer.get("id") if isinstance(answer, dict) else type(answer).__name__
            raise ChainError(f"{action}: expected the answer to request {request_id}, got {got!r}")
        return self._result(answer, action)

    def _batch(self, calls: Sequence[tuple[str, list[Any], str]]) -> list[Any | ChainError]:
        """Send ``calls`` (method, params, action) as one JSON-RPC batch; each call's result,
        or the ChainError that says why it has none. Answers are matched by id, in any order;
        an id answered twice or not at all is a ChainError for that call (never a guess). A
        failure of the whole request raises."""
        ids = [next(self._ids) for _ in calls]
        self.calls_sent += len(calls)
        body = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                for i, (method, params, _) in zip(ids, calls, strict=True)
            ]
        )
        answer = self._post(body, "batch of " + ", ".join(action for _, _, action in calls))
        if not isinstance(answer, list):
            # A node that refuses batches answers one error object.
            try:
                self._result(answer, "batch request")
            except ChainError as exc:
                return [exc] * len(calls)
            return [ChainError(f"{a}: expected a batch answer (a list)") for _, _, a in calls]
        by_id: dict[Any, list[Any]] = {}
        for entry in answer:
            key = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(key, int) and not isinstance(key, bool):
                by_id.setdefault(key, []).append(entry)
        out: list[Any | ChainError] = []
        for request_id, (_, _, action) in zip(ids, calls, strict=True):
            entries = by_id.get(request_id, [])
            if len(entries) != 1:
                out.append(
                    ChainError(
                        f"{action}: expected one answer with id {request_id} in the batch, "
                        f"got {len(entries)}"
                    )
                )
                continue
            try:
                out.append(self._result(entries[0], action))
            except ChainError as exc:
                out.append(exc)
        return out

    def _call_params(self, data: bytes) -> list[Any]:
        if self._ledger is None:
            raise ChainError("no QualityLedger attached: the pinned ledger has no code here")
        return [{"to": self._ledger, "data": "0x" + data.hex()}, "latest"]

    # -- ChainReader ------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return _quantity(self._request("eth_chainId", [], "eth_chainId"), "eth_chainId")

    @property
    def ledger_address(self) -> str | None:
        return self._ledger

    def block_hash(self, number: int) -> str | None:
        action = f"get block {number}"
        block = self._request("eth_getBlockByNumber", [hex(int(number)), False], action)
        if block is None:
            return None
        if not isinstance(block, dict):
            raise ChainError(f"{action}: expected a block object, got {str(block)[:80]}")
        raw = _hex_bytes(block.get("hash"), action + " hash")
        if len(raw) != 32:
            raise ChainError(f"{action}: expected a 32-byte hash, got {len(raw)} bytes")
        return "0x" + raw.hex()

    def _role_call(self, account: str, role: Role) -> tuple[str, list[Any], str]:
        data = _ROLE_HISTORY + _address_word(account) + ROLE_IDS[Role(role)]
        return "eth_call", self._call_params(data), f"roleHistory({account}, {Role(role).value})"

    @staticmethod
    def _role_history(result: object, action: str) -> list[tuple[int, int]]:
        (intervals,) = _decode(_ROLE_HISTORY_OUT, _hex_bytes(result, action), action)
        return [(int(g), int(r)) for g, r in intervals]

    def role_history(self, account: str, role: Role) -> list[tuple[int, int]]:
        method, params, action = self._role_call(account, role)
        return self._role_history(self._request(method, params, action), action)

    def role_histories(
        self, account: str, roles: Sequence[Role]
    ) -> list[list[tuple[int, int]] | ChainError]:
        """``role_history(account, role)`` for each of ``roles`` in one HTTP request: each
        history, or the ChainError that reading it would have raised."""
        calls = [self._role_call(account, role) for role in roles]
        out: list[list[tuple[int, int]] | ChainError] = []
        for (_, _, action), result in zip(calls, self._batch(calls), strict=True):
            if isinstance(result, ChainError):
                out.append(result)
                continue
            try:
                out.append(self._role_history(result, action))
            except ChainError as exc:
                out.append(exc)
        return out

    def org_of(self, account: str) -> str | None:
        action = f"orgOf({account})"
        data = _ORG_OF + _address_word(account)
        result = self._request("eth_call", self._call_params(data), action)
        (org,) = _decode(_ORG_OF_OUT, _hex_bytes(result, action), action)
        return str(org) or None

    def anchored_at(self, root: bytes) -> AnchorInfo | None:
        if len(root) != 32:
            raise ChainError("root: expected 32 bytes", expected=32, got=len(root))
        action = f"anchoredAt(0x{root.hex()})"
        result = self._request("eth_call", self._call_params(_ANCHORED_AT + root), action)
        batch_id, timestamp, block_number, leaf_count = _decode(
            _ANCHORED_AT_OUT, _hex_bytes(result, action), action
        )
        if batch_id == 0:
            return None
        return AnchorInfo(int(batch_id), int(timestamp), int(block_number), int(leaf_count))

    def verify_record_on_chain(self, root: bytes, proof: list[bytes], struct_hash: bytes) -> bool:
        # QualityLedger.verifyRecord is `_anchors[root].batchId != 0 &&
        # MerkleProof.verifyCalldata(proof, root, _leaf(structHash))`: the same fold, here.
        return (
            process_proof(leaf_hash(struct_hash), proof) == root
            and self.anchored_at(root) is not None
        )

    def transaction_block(self, tx_hash: str) -> tuple[int, str] | None:
        action = f"get receipt {tx_hash}"
        raw = _hex_bytes(tx_hash, action)
        if len(raw) != 32:
            raise ChainError(f"{action}: expected a 32-byte hash", expected=32, got=len(raw))
        receipt = self._request("eth_getTransactionReceipt", ["0x" + raw.hex()], action)
        if receipt is None:
            return None
        if not isinstance(receipt, dict):
            raise ChainError(f"{action}: expected a receipt object, got {str(receipt)[:80]}")
        if _quantity(receipt.get("status"), action + " status") != 1:
            return None
        to = receipt.get("to")
        if not to:
            return None
        to_raw = _hex_bytes(to, action + " to")
        if len(to_raw) != 20:
            raise ChainError(f"{action}: expected a 20-byte address", expected=20, got=len(to_raw))
        block = _quantity(receipt.get("blockNumber"), action + " blockNumber")
        return block, to_checksum("0x" + to_raw.hex())
