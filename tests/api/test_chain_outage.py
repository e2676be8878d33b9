"""The node paused (SIGSTOP) for 30 s while a client submits at a steady rate: intake does not
notice (p99 under 100 ms), records queue for anchoring, and once the node resumes every
acknowledged record is anchored with a receipt that verifies against the chain.

A real service (uvicorn on a free port, its anchorer and role follower as threads, the same
10 s RPC timeout as production) against its own anvil, so pausing it disturbs no other test.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.auth import personal_sign_digest
from api.context import ServiceContext
from api.main import create_app
from api.settings import Settings
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil
from ledger.errors import ChainError
from ledger.keys import Signer
from ledger.records import Role, SignedRecord
from ledger.signing import sign_record
from ledger.verify import verify_receipt
from tests.helpers import inspection_payload

PAUSE_SECONDS = 30.0  # issue 18's "Done means": the node paused for 30 s under load
RATE_PER_SECOND = 20  # a steady trickle of single-record submissions
BEFORE_SECONDS = 2.0  # submissions before the pause (the chain answering)
P99_LIMIT_SECONDS = 0.100


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def _token(http: httpx.Client, signer: Signer) -> dict[str, str]:
    challenge = http.post("/v1/auth/challenge", json={"address": signer.address}).json()
    answer = http.post(
        "/v1/auth/token",
        json={
            "address": signer.address,
            "nonce": challenge["nonce"],
            "signature": signer.sign_digest(personal_sign_digest(challenge["message"])),
        },
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['accessToken']}"}


@pytest.mark.slow
@pytest.mark.anvil
def test_a_paused_node_does_not_slow_intake_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        node = start_anvil(tmp_path / "anvil")
    except ChainError as exc:  # no anvil binary here (make install provides it)
        pytest.skip(f"anvil is not available: {exc}")
    paused = False
    try:
        key = dev_private_keys()[0]
        admin_chain = ChainClient.connect(node.rpc_url, private_key=key, allow_evm_mine=True)
        deployment = admin_chain.deploy()
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        deployment.save(data_dir / "deployment.json")
        supplier = Signer.generate()
        admin_chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-01")

        settings = Settings(
            data_dir=data_dir,
            rpc_url=node.rpc_url,
            anchorer_key=key,
            confirmations=1,
            batch_max_seconds=0.5,
            retry_max_seconds=2.0,  # resume quickly after the node does
            token_secret="outage-" + "0" * 40,
        )
        ctx = ServiceContext.create(settings)  # the production path: 10 s RPC timeout
        monkeypatch.setenv("QLEDGER_SERVE_ANCHORER", "inside")  # anchor from the start
        server, thread, url = _serve(create_app(ctx=ctx, run_anchorer=True))

        total = int((BEFORE_SECONDS + PAUSE_SECONDS) * RATE_PER_SECOND)
        records: list[SignedRecord] = []
        for nonce in range(1, total + 1):
            records.append(
                sign_record(
                    supplier,
                    ctx.domain,
                    subject="SUP-01",
                    kind="inspection",
                    part_number="P-1",
                    lot_id=f"L-{nonce}",
                    event_time=int(time.time()) - 3600,  # within the eventTime bound
                    quantity=50,
                    defects=1,
                    nonce=nonce,
                    payload=inspection_payload(),
                )
            )
        with httpx.Client(base_url=url, timeout=30) as http:
            auth = _token(http, supplier)
            acknowledged: dict[str, SignedRecord] = {}
            during: list[float] = []
            status_in_pause: dict[str, Any] = {}
            interval = 1.0 / RATE_PER_SECOND
            start = time.monotonic()
            pause_at = start + BEFORE_SECONDS
            for i, signed in enumerate(records):
                slot = start + i * interval
                time.sleep(max(0.0, slot - time.monotonic()))
                if not paused and time.monotonic() >= pause_at:
                    os.kill(node.pid, signal.SIGSTOP)
                    paused = True
                t0 = time.perf_counter()
                answer = http.post("/v1/records", json=signed.model_dump(mode="json"))
                elapsed = time.perf_counter() - t0
                assert answer.status_code == 202, answer.text
                acknowledged[answer.json()["structHash"]] = signed
                if paused:
                    during.append(elapsed)
                if paused and not status_in_pause and time.monotonic() - pause_at > 10:
                    status_in_pause = http.get("/v1/status").json()["roles"]
            # Hold the pause to its full length even if submitting finished early.
            time.sleep(max(0.0, pause_at + PAUSE_SECONDS - time.monotonic()))
            os.kill(node.pid, signal.SIGCONT)
            paused = False
            resumed = time.monotonic()

            p50, p99 = statistics.median(during), _percentile(during, 0.99)
            print(
                f"\nintake while the node was paused: {len(during)} requests, "
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(during) * 1000:.1f} ms"
            )
            assert len(during) >= PAUSE_SECONDS * RATE_PER_SECOND * 0.9
            assert p99 < P99_LIMIT_SECONDS, f"p99 {p99 * 1000:.1f} ms"
            # The follower's lag shows while the node does not answer.
            assert status_in_pause["stale"] is True, status_in_pause

            # After SIGCONT: every acknowledged record anchored, its receipt available.
            pending = set(acknowledged)
            deadline = time.monotonic() + 90
            while pending and time.monotonic() < deadline:
                for struct_hash in list(pending):
                    answer = http.get(f"/v1/records/{struct_hash}/receipt", headers=auth)
                    if answer.status_code == 200:
                        pending.discard(struct_hash)
                    else:
                        assert answer.status_code == 202, answer.text
                        break
                else:
                    continue
                time.sleep(0.5)
            assert not pending, f"{len(pending)} acknowledged records not anchored"
            print(
                f"all {len(acknowledged)} anchored {time.monotonic() - resumed:.1f} s after resume"
            )
            checker = ChainClient.connect(node.rpc_url, deployment=deployment)
            hashes = list(acknowledged)
            for struct_hash in (hashes[0], hashes[len(hashes) // 2], hashes[-1]):
                receipt = http.get(f"/v1/records/{struct_hash}/receipt", headers=auth).json()
                report = verify_receipt(acknowledged[struct_hash], receipt, checker)
                assert report.ok, report.to_json()
            assert http.get("/v1/status").json()["roles"]["stale"] is False
        server.should_exit = True
        thread.join(20)
        ctx.engine.dispose()
    finally:
        if paused:
            os.kill(node.pid, signal.SIGCONT)
        node.stop()
