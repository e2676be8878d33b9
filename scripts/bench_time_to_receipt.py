"""Time from acknowledgement to an available receipt, under sustained intake.

    PYTHONPATH=. .venv/bin/python scripts/bench_time_to_receipt.py [--rate 1000] [--seconds 60]
        [--batch-seconds 1] [--block-time 1] [--confirmations 1]

Starts anvil mining a block every ``--block-time`` seconds (127.0.0.1, ``--prune-history``) and
the real ``qledger serve`` on SQLite (anchorer in its own process) with
``QLEDGER_BATCH_MAX_SECONDS=--batch-seconds`` and ``QLEDGER_CONFIRMATIONS=--confirmations``.
Records are signed by 8 registered suppliers before the clock starts. The driver then sends
``--rate`` records per second for ``--seconds`` seconds as ``POST /v1/records:batch`` requests
of rate/10 records every 100 ms (paced by the clock, not by the answers). The first record of
each request is followed: from the moment its 202 arrives (the acknowledgement), its supplier
polls ``GET /v1/records/{structHash}/receipt`` every ``--poll`` seconds until it answers 200.

The bound checked: p99 <= batch interval + confirmation time + 1 s, where the confirmation
time is (confirmations + 1) block times (the block that includes the anchor, then the
confirmations on top of it). Figures carry the polling resolution.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

from api.auth import personal_sign_digest
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil, stop_anvil
from ledger.eip712 import record_struct_hash
from ledger.keys import Signer
from ledger.records import Domain, Role
from ledger.signing import sign_record

ROOT = Path(__file__).resolve().parent.parent
SUPPLIERS = 8
TICK = 0.1  # seconds between batch requests
PAYLOAD = {
    "disposition": "conformant",
    "inspectionType": "incoming",
    "lotSize": 1000,
    "sampleSize": 50,
    "defectList": [],
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit("service exited during start-up")
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit("service did not start")


def login(http: httpx.Client, signer: Signer) -> str:
    challenge = http.post("/v1/auth/challenge", json={"address": signer.address})
    challenge.raise_for_status()
    body = challenge.json()
    token = http.post(
        "/v1/auth/token",
        json={
            "address": signer.address,
            "nonce": body["nonce"],
            "signature": signer.sign_digest(personal_sign_digest(body["message"])),
        },
    )
    token.raise_for_status()
    return str(token.json()["accessToken"])


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="records per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--confirmations", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.1, help="receipt polling interval (s)")
    args = parser.parse_args()
    per_request = max(1, round(args.rate * TICK))
    requests = round(args.seconds / TICK)

    tmp = Path(tempfile.mkdtemp(prefix="qledger-ttr-"))
    chain = start_anvil(tmp / "anvil", block_time=args.block_time)
    proc: subprocess.Popen[bytes] | None = None
    try:
        key = dev_private_keys()[0]
        client = ChainClient.connect(chain.rpc_url, private_key=key)
        deployment = client.deploy()
        data = tmp / "data"
        data.mkdir()
        deployment.save(data / "deployment.json")
        signers = [Signer.generate() for _ in range(SUPPLIERS)]
        for i, s in enumerate(signers):
            client.register_participant(s.address, Role.SUPPLIER, f"SUP-{i:02d}")
        domain = Domain(chainId=deployment.chain_id, verifyingContract=deployment.ledger)

        total = per_request * requests
        print(f"signing {total:,} records ...", flush=True)
        now = int(time.time())
        bodies: list[bytes] = []
        followed: list[tuple[int, str]] = []  # (supplier index, struct hash) per request
        for r in range(requests):
            who = r % SUPPLIERS  # one supplier per request: its token polls the receipt
            signed = [
                sign_record(
                    signers[who],
                    domain,
                    subject=f"SUP-{who:02d}",
                    kind="inspection",
                    part_number="P-100",
                    lot_id=f"LOT-{r}-{i}",
                    event_time=now - 3600,
                    quantity=50,
                    defects=0,
                    nonce=r * per_request + i,
                    payload=PAYLOAD,
                )
                for i in range(per_request)
            ]
            bodies.append(orjson.dumps({"records": [s.model_dump(mode="json") for s in signed]}))
            followed.append((who, "0x" + record_struct_hash(signed[0].record).hex()))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "QLEDGER_DATA_DIR": str(data),
            "QLEDGER_RPC_URL": chain.rpc_url,
            "QLEDGER_ANCHORER_KEY": key,
            "QLEDGER_TOKEN_SECRET": "b" * 40,
            "QLEDGER_BATCH_MAX_SECONDS": str(args.batch_seconds),
            "QLEDGER_CONFIRMATIONS": str(args.confirmations),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        wait_up(url, proc)
        with httpx.Client(base_url=url, timeout=30) as http:
            tokens = [login(http, s) for s in signers]
            # Warm-up: the anchorer runs in its own process, which starts after the API; the
            # clock starts once one record has gone all the way to a receipt.
            warm = sign_record(
                signers[0],
                domain,
                subject="SUP-00",
                kind="inspection",
                part_number="P-100",
                lot_id="LOT-warm-up",
                event_time=now - 3600,
                quantity=50,
                defects=0,
                nonce=10**9,
                payload=PAYLOAD,
            )
            posted = http.post("/v1/records", content=orjson.dumps(warm.model_dump(mode="json")),
                               headers={"content-type": "application/json"})  # fmt: skip
            posted.raise_for_status()
            warm_hash = "0x" + record_struct_hash(warm.record).hex()
            ready_by = time.monotonic() + 180
            while (
                http.get(
                    f"/v1/records/{warm_hash}/receipt",
                    headers={"Authorization": f"Bearer {tokens[0]}"},
                ).status_code
                != 200
            ):
                if time.monotonic() > ready_by:
                    sys.exit("the warm-up record got no receipt in 180 s")
                time.sleep(0.2)

        acked: queue.Queue[tuple[float, int, str] | None] = queue.Queue()
        refused: list[int] = []
        accepted = 0
        lock = threading.Lock()
        local = threading.local()

        def send(r: int) -> None:
            nonlocal accepted
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=url, timeout=60)
            resp = local.http.post(
                "/v1/records:batch",
                content=bodies[r],
                headers={"content-type": "application/json"},
            )
            at = time.monotonic()
            if resp.status_code == 202:
                with lock:
                    accepted += per_request
                acked.put((at, *followed[r]))
            else:
                with lock:
                    refused.append(resp.status_code)

        latencies: list[float] = []
        unanswered: list[str] = []

        def poll() -> None:
            waiting: list[tuple[float, int, str]] = []
            done = False
            deadline = None
            with httpx.Client(base_url=url, timeout=30) as http:
                while True:
                    try:
                        while True:
                            item = acked.get_nowait()
                            if item is None:
                                done = True
                                deadline = time.monotonic() + 60
                            else:
                                waiting.append(item)
                    except queue.Empty:
                        pass
                    still = []
                    for at, who, struct_hash in waiting:
                        resp = http.get(
                            f"/v1/records/{struct_hash}/receipt",
                            headers={"Authorization": f"Bearer {tokens[who]}"},
                        )
                        if resp.status_code == 200:
                            latencies.append(time.monotonic() - at)
                        elif resp.status_code == 202:
                            still.append((at, who, struct_hash))
                        else:
                            sys.exit(f"receipt of {struct_hash}: {resp.status_code} {resp.text}")
                    waiting = still
                    if done and (not waiting or time.monotonic() > (deadline or 0)):
                        unanswered.extend(h for _, _, h in waiting)
                        return
                    time.sleep(args.poll)

        poller = threading.Thread(target=poll)
        poller.start()
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for r in range(requests):
                delay = start + r * TICK - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(send, r)
        sent_for = time.monotonic() - start
        acked.put(None)
        poller.join()
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        stop_anvil(tmp / "anvil")

    confirmation = (args.confirmations + 1) * args.block_time
    bound = args.batch_seconds + confirmation + 1.0
    print(
        f"\nservice: 1 uvicorn worker, SQLite, anchorer in its own process; anvil block time "
        f"{args.block_time:g} s; batch interval {args.batch_seconds:g} s; "
        f"{args.confirmations} confirmation(s); {os.cpu_count()} cores shared by all"
    )
    print(
        f"offered {args.rate:,} records/s for {args.seconds} s as {requests} requests of "
        f"{per_request}; sent in {sent_for:.1f} s; accepted {accepted:,} "
        f"({accepted / sent_for:,.0f} records/s); refused requests {len(refused)}"
    )
    if not latencies:
        sys.exit("no receipt became available")
    print(
        f"time from acknowledgement to receipt ({len(latencies)} followed records, polled "
        f"every {args.poll:g} s): p50 {pct(latencies, 50):.2f} s  p99 {pct(latencies, 99):.2f} s"
        f"  max {max(latencies):.2f} s"
    )
    print(
        f"bound: batch interval {args.batch_seconds:g} s + confirmation "
        f"{confirmation:g} s + 1 s = {bound:g} s; p99 / bound = {pct(latencies, 99) / bound:.2f}"
        f" ({'met' if pct(latencies, 99) <= bound else 'NOT met'})"
    )
    if unanswered:
        print(f"{len(unanswered)} followed records had no receipt 60 s after the last request")


if __name__ == "__main__":
    main()
