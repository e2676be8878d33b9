"""The bulk verifier's lean JSON-RPC reads (``ledger.chain._raw_reads``) against a hostile
endpoint: a real anvil behind a proxy in the test that tampers with what the node answers (a
batch out of order, an id missing or twice, an error object, return data of the wrong length,
another chain id, a block hash that does not match). Each receipt must get the verdict and the
failing check the web3 client gives through the same proxy: never a crash, never a false
"valid"."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from cli import app
from ledger._hash import keccak
from ledger.bulk_verify import CachingChain, FastChainVerifier, ReceiptInput, verify_all
from ledger.chain import ChainClient
from ledger.chain._raw_reads import RawLedgerReads
from ledger.chain.types import ROLE_IDS
from ledger.errors import ChainError, ChainUnavailable
from ledger.records import Role
from ledger.verify import Check, VerificationReport, verify_receipt
from tests.ledger.test_bulk_verify import BATCHES, PER_BATCH, _make_world

pytestmark = pytest.mark.anvil

# A tamper sees each JSON-RPC request entry and the node's answer to it, and returns the answer
# to send instead; a batch tamper then sees the whole list of answers.
Tamper = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
BatchTamper = Callable[[list[Any]], list[Any]]


def _selector(signature: str) -> str:
    return "0x" + keccak(signature.encode())[:4].hex()


ROLE_HISTORY = _selector("roleHistory(address,bytes32)")
ANCHORED_AT = _selector("anchoredAt(bytes32)")


def _is_call(request: dict[str, Any], selector: str) -> bool:
    if request.get("method") != "eth_call":
        return False
    data = str(request["params"][0].get("data") or request["params"][0].get("input") or "")
    return data.lower().startswith(selector)


class Hostile:
    """A JSON-RPC proxy in front of ``upstream`` that applies ``tamper`` to each answer and
    ``batch_tamper`` to each batch answer."""

    def __init__(self, upstream: str) -> None:
        self.tamper: Tamper = lambda request, answer: answer
        self.batch_tamper: BatchTamper = lambda answers: answers
        self.raw_answer: bytes | None = None  # sent as it is, with HTTP 200, if set
        self.status = 200
        self.batches = 0
        url = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                upstream_conn = http.client.HTTPConnection(str(url.hostname), url.port, timeout=10)
                upstream_conn.request(
                    "POST", url.path or "/", body, {"Content-Type": "application/json"}
                )
                honest = json.loads(upstream_conn.getresponse().read())
                upstream_conn.close()
                request = json.loads(body)
                if isinstance(request, list):
                    proxy.batches += 1
                    by_id = {a["id"]: a for a in honest}
                    answers = [proxy.tamper(r, by_id[r["id"]]) for r in request]
                    out: Any = proxy.batch_tamper(answers)
                else:
                    out = proxy.tamper(request, honest)
                data = proxy.raw_answer if proxy.raw_answer is not None else json.dumps(out)
                if isinstance(data, str):
                    data = data.encode()
                self.send_response(proxy.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def world(anvil_node: Any) -> dict[str, Any]:
    from ledger.chain.local import dev_private_keys

    chain = ChainClient.connect(
        anvil_node.rpc_url, private_key=dev_private_keys()[0], allow_evm_mine=True
    )
    chain.deploy()
    made = _make_world(chain)
    made["rpc"] = anvil_node.rpc_url
    return made


@pytest.fixture
def hostile(world: dict[str, Any]) -> Iterator[Hostile]:
    proxy = Hostile(world["rpc"])
    yield proxy
    proxy.close()


def _verdicts(
    world: dict[str, Any], chain: Any, receipts: list[dict[str, Any]]
) -> tuple[list[tuple[bool, str | None]], CachingChain]:
    """What `qledger verify-receipts` decides for each receipt (fast path included)."""
    cached = CachingChain(chain)
    trust = world["trust"]

    def one(data: dict[str, Any]) -> VerificationReport:
        return verify_receipt(None, data, cached, trust)

    items = [ReceiptInput(f"r{n}", r) for n, r in enumerate(receipts)]
    verdicts = verify_all(items, one, FastChainVerifier(cached, trust))
    return [(v.ok, v.failed_check) for v in verdicts], cached


def _both(world: dict[str, Any], url: str) -> tuple[Any, Any]:
    """(web3 path, lean path) verdicts through the endpoint at ``url``, same receipts."""
    web3_client = ChainClient.connect_ledger(url, world["trust"].ledger)
    raw = RawLedgerReads(url, web3_client.ledger_address)
    return _verdicts(world, web3_client, world["receipts"]), _verdicts(
        world, raw, world["receipts"]
    )


def test_honest_endpoint_same_verdicts_same_reads_fewer_requests(
    world: dict[str, Any], hostile: Hostile
) -> None:
    (web3_verdicts, web3_cached), (raw_verdicts, raw_cached) = _both(world, hostile.url)
    assert raw_verdicts == web3_verdicts
    assert all(ok for ok, _ in raw_verdicts)
    # Same questions answered by the node, counted the same way; a signer's three role
    # histories came in one batch request.
    assert raw_cached.calls == web3_cached.calls == BATCHES * 3 + 2 * 4 + 2
    inner = raw_cached._inner
    assert isinstance(inner, RawLedgerReads)
    assert inner.calls_sent == raw_cached.calls
    assert inner.requests_sent == raw_cached.calls - 2 * 2
    assert hostile.batches == 2


def test_a_batch_answered_in_reverse_order_is_matched_by_id(
    world: dict[str, Any], hostile: Hostile
) -> None:
    hostile.batch_tamper = lambda answers: list(reversed(answers))
    web3_side, raw_side = _both(world, hostile.url)
    assert raw_side[0] == web3_side[0]
    assert all(ok for ok, _ in raw_side[0])
    # Each role was given its own history, not its neighbour's.
    reader = RawLedgerReads(hostile.url, world["trust"].ledger)
    signer = world["receipts"][0]["record"]["record"]["signer"]
    histories = reader.role_histories(signer, [Role.SUPPLIER, Role.OEM, Role.AUDITOR])
    assert histories[1:] == [[], []]
    assert isinstance(histories[0], list) and len(histories[0]) == 1


def test_a_missing_or_duplicated_id_leaves_that_question_unanswered(
    world: dict[str, Any], hostile: Hostile
) -> None:
    reader = RawLedgerReads(hostile.url, world["trust"].ledger)
    signer = world["receipts"][0]["record"]["record"]["signer"]
    roles = [Role.SUPPLIER, Role.OEM, Role.AUDITOR]

    hostile.batch_tamper = lambda answers: answers[1:]  # the SUPPLIER history's id is missing
    missing = reader.role_histories(signer, roles)
    assert isinstance(missing[0], ChainError) and "got 0" in str(missing[0])
    assert missing[1:] == [[], []]

    def forged_twice(answers: list[Any]) -> list[Any]:
        # the same id answered twice, once with a forged empty history: neither is taken
        forged = {**answers[0], "result": "0x" + (32).to_bytes(32, "big").hex() + "00" * 32}
        return [answers[0], forged, *answers[1:]]

    hostile.batch_tamper = forged_twice
    duplicated = reader.role_histories(signer, roles)
    assert isinstance(duplicated[0], ChainError) and "got 2" in str(duplicated[0])

    # Through the verifier, the unanswered history is asked again alone (one request, one
    # answer): the verdicts are the honest ones, and no forged answer was believed.
    web3_side, raw_side = _both(world, hostile.url)
    assert raw_side[0] == web3_side[0]
    assert all(ok for ok, _ in raw_side[0])

    hostile.batch_tamper = lambda answers: {"jsonrpc": "2.0", "id": None, "error": {}}  # type: ignore[assignment,return-value]
    refused = reader.role_histories(signer, roles)
    assert all(isinstance(h, ChainError) for h in refused)


def _oem_history_refused(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    oem = "0x" + ROLE_IDS[Role.OEM].hex()
    if _is_call(request, ROLE_HISTORY) and request["params"][0]["data"].endswith(oem[2:]):
        return {"jsonrpc": "2.0", "id": answer["id"], "error": {"code": -32000, "message": "no"}}
    return answer


def _anchor_truncated(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    if _is_call(request, ANCHORED_AT) and "result" in answer:
        return {**answer, "result": answer["result"][: 2 + 64 * 3]}  # 3 words of 4
    return answer


def _other_chain(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    if request.get("method") == "eth_chainId":
        return {**answer, "result": "0x3e7"}
    return answer


def _block_hash_forged(world: dict[str, Any], number: int | None = None) -> Tamper:
    anchored = hex(world["receipts"][0]["blockNumber"] if number is None else number)

    def tamper(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        if (
            request.get("method") == "eth_getBlockByNumber"
            and request["params"][0] == anchored
            and answer.get("result")
        ):
            return {**answer, "result": {**answer["result"], "hash": "0x" + "ab" * 32}}
        return answer

    return tamper


@pytest.mark.parametrize(
    ("name", "expected_check"),
    [
        ("error object for one signer's OEM history", Check.CHAIN_ID),
        ("anchoredAt's return data one word short", Check.CHAIN_ID),
        ("another chain id", Check.CHAIN_ID),  # the first check to compare it
        ("the anchoring block's hash forged", Check.BLOCK_CANONICAL),
        ("the pinned block's hash forged", Check.PINNED_CHAIN),
    ],
)
def test_tampered_answers_fail_the_check_the_web3_client_fails(
    world: dict[str, Any], hostile: Hostile, name: str, expected_check: Check
) -> None:
    tampers: dict[str, Tamper] = {
        "error object for one signer's OEM history": _oem_history_refused,
        "anchoredAt's return data one word short": _anchor_truncated,
        "another chain id": _other_chain,
        "the anchoring block's hash forged": _block_hash_forged(world),
        "the pinned block's hash forged": _block_hash_forged(world, world["trust"].anchor.number),
    }
    hostile.tamper = tampers[name]
    (web3_verdicts, _), (raw_verdicts, _) = _both(world, hostile.url)
    assert raw_verdicts == web3_verdicts
    failed = [check for ok, check in raw_verdicts if not ok]
    assert failed and set(failed) == {expected_check.value}
    if name == "the anchoring block's hash forged":  # that batch only
        assert len(failed) == PER_BATCH
    else:
        assert len(failed) == len(raw_verdicts)


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (b"<html>not json</html>", 200, ChainError),
        (b'{"jsonrpc": "2.0", "id": 999999, "result": "0x1"}', 200, ChainError),
        (b'{"jsonrpc": "2.0", "id": 1}', 200, ChainError),
        (b"[]", 200, ChainError),
        (b"gateway", 502, ChainUnavailable),
    ],
    ids=["not-json", "another-id", "no-result", "a-list", "http-502"],
)
def test_garbage_answers_raise_typed_errors_and_fail_the_receipt(
    world: dict[str, Any], hostile: Hostile, answer: bytes, status: int, error: type[Exception]
) -> None:
    reader = RawLedgerReads(hostile.url, world["trust"].ledger)
    hostile.raw_answer, hostile.status = answer, status
    with pytest.raises(error):
        reader.anchored_at(bytes(32))
    with pytest.raises(error):
        _ = reader.chain_id
    verdicts, _ = _verdicts(world, reader, world["receipts"][:3])
    assert verdicts == [(False, Check.CHAIN_ID.value)] * 3


def test_an_endpoint_that_is_gone_is_unavailable(world: dict[str, Any]) -> None:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there now
    reader = RawLedgerReads(f"http://127.0.0.1:{port}", world["trust"].ledger)
    with pytest.raises(ChainUnavailable):
        reader.block_hash(0)


def test_cli_through_a_hostile_endpoint_names_the_forged_batch(
    world: dict[str, Any], hostile: Hostile, tmp_path: Path
) -> None:
    hostile.tamper = _block_hash_forged(world)
    export = tmp_path / "receipts.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in world["receipts"]))
    trust_file = tmp_path / "trust.json"
    world["trust"].save(trust_file)
    args = ["verify-receipts", str(export), "--rpc", hostile.url, "--trust", str(trust_file)]
    result = CliRunner().invoke(app, [*args, "--failures-only"])
    assert result.exit_code == 1, result.output
    fails = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(fails) == PER_BATCH
    assert all(" block_canonical: " in line for line in fails)
    assert f"{BATCHES * PER_BATCH - PER_BATCH} valid, {PER_BATCH} invalid" in result.output


class ForwardProxy:
    """An HTTP forward proxy, as a corporate network puts in front of the chain: forwards
    absolute-URI requests, answers ``CONNECT`` with 502 (no TLS endpoint here), and records what
    it was asked and with which ``Proxy-Authorization``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, target, proxy auth)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(("CONNECT", self.path, self.headers["Proxy-Authorization"]))
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                proxy.seen.append(("POST", self.path, self.headers["Proxy-Authorization"]))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                target = urlsplit(self.path)
                assert target.scheme == "http", self.path  # a forward proxy gets absolute URIs
                upstream = http.client.HTTPConnection(str(target.hostname), target.port, timeout=10)
                upstream.request(
                    "POST", target.path or "/", body, {"Content-Type": "application/json"}
                )
                data = upstream.getresponse().read()
                upstream.close()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def forward_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    proxy = ForwardProxy()
    yield proxy
    proxy.close()


def test_the_environment_proxy_is_used_as_the_web3_client_uses_it(
    world: dict[str, Any], forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An auditor whose network reaches the chain only through a proxy: the lean reader must
    # go where the web3 client goes, with the proxy's credentials, and reach the same verdicts.
    monkeypatch.setenv("HTTP_PROXY", f"http://aud%40it:s3cret@{forward_proxy.address}")
    web3_client = ChainClient.connect_ledger(world["rpc"], world["trust"].ledger)
    web3_verdicts, _ = _verdicts(world, web3_client, world["receipts"])
    assert forward_proxy.seen, "the web3 client went around the proxy"
    web3_seen = len(forward_proxy.seen)
    raw = RawLedgerReads(world["rpc"], web3_client.ledger_address)
    raw_verdicts, _ = _verdicts(world, raw, world["receipts"])
    assert raw_verdicts == web3_verdicts and all(ok for ok, _ in raw_verdicts)
    raw_seen = forward_proxy.seen[web3_seen:]
    assert len(raw_seen) == raw.requests_sent > 0
    expected = "Basic " + base64.b64encode(b"aud@it:s3cret").decode()
    assert set(raw_seen) == {("POST", world["rpc"] + "/", expected)}

    # NO_PROXY names the chain's host: both go direct, the proxy sees nothing more.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    before = len(forward_proxy.seen)
    direct = RawLedgerReads(world["rpc"], world["trust"].ledger)
    assert (
        direct.chain_id
        == ChainClient.connect_ledger(world["rpc"], world["trust"].ledger).w3.eth.chain_id
    )
    assert len(forward_proxy.seen) == before


def test_an_https_endpoint_is_tunnelled_and_a_refused_tunnel_is_unavailable(
    world: dict[str, Any], forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://u:p@{forward_proxy.address}")
    reader = RawLedgerReads("https://chain.example:8545/rpc", world["trust"].ledger)
    with pytest.raises(ChainUnavailable, match="502"):
        reader.block_hash(0)
    # The proxy saw only where to connect (TLS stays end to end), never the request itself.
    assert forward_proxy.seen == [
        ("CONNECT", "chain.example:8545", "Basic " + base64.b64encode(b"u:p").decode())
    ]


def test_a_proxy_it_cannot_speak_is_named_not_bypassed(
    world: dict[str, Any], forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ChainError, match=r"expected an http:// proxy .* got 'socks5'"):
        RawLedgerReads(world["rpc"], world["trust"].ledger)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert RawLedgerReads(world["rpc"], world["trust"].ledger).chain_id > 0
