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
confirmations on top of it). Figures carry the polling resolution. The service logs (JSON) go
to ``--log`` (default: the run's temporary directory); from the anchorer's lines the script
prints how many batches it made, their sizes, the time from claim to confirmed and how many
were in flight at once: what bounds the latency when the goal is not met.

    PYTHONPATH=. .venv/bin/python scripts/bench_time_to_receipt.py --anchorer-only 4096

measures the anchorer's own work per leaf instead (no HTTP, an in-process chain, SQLite):
the claim (outbox read, the batch's one tree, outbox update), the confirming transaction
(records join the batch, log entries, checkpoint, outbox delete) and within it the
transparency-log append, over batches of ``QLEDGER_BATCH_MAX_LEAVES`` (1,024) leaves.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
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
from typing import Any

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
SLOW_GET = 1.0  # a receipt GET slower than this is listed (it delays every figure after it)
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


def fresh_database(server: str) -> str:
    """An empty database on ``server`` for this run (the service migrates it at start)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"qledger_ttr_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def anchorer_only(leaves: int) -> None:
    """The anchorer's work per leaf, timed step by step (see the module docstring)."""
    from api.anchorer import Anchorer
    from api.context import ServiceContext
    from api.intake import submit_many
    from api.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="qledger-anchor-"))
    chain = ChainClient.in_process()
    chain.deploy()
    settings = Settings(data_dir=tmp, confirmations=0, token_secret="b" * 40)
    ctx = ServiceContext.create(settings, chain=chain)
    supplier = Signer.generate()
    chain.register_participant(supplier.address, Role.SUPPLIER, "SUP-00")
    ctx.follower.sync()
    now = int(time.time())
    records = [
        sign_record(
            supplier,
            ctx.domain,
            subject="SUP-00",
            kind="inspection",
            part_number="P-100",
            lot_id=f"LOT-{n}",
            event_time=now - 3600,
            quantity=50,
            defects=0,
            nonce=n,
            payload=PAYLOAD,
        ).model_dump(mode="json")
        for n in range(leaves)
    ]
    for start in range(0, leaves, 1000):
        submit_many(ctx, records[start : start + 1000])
    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, wrapper)

    import api.anchorer as anchorer_module

    timed(Anchorer, "_claim", "claim (outbox read, tree, outbox update)")
    timed(Anchorer, "_confirm", "confirming transaction, all of it")
    timed(anchorer_module, "append_and_sign", "  of which the log append + checkpoint")
    timed(Anchorer, "_finish", "send + wait (in-process chain) + confirm")
    anchorer = Anchorer(ctx)
    anchorer._backfill_log()  # the once-per-start check, outside the timing
    t0 = time.perf_counter()
    done = anchorer.run_once(force=True)
    total = time.perf_counter() - t0
    ctx.engine.dispose()
    print(
        f"anchorer work for {leaves:,} leaves in {len(done)} batches of up to "
        f"{settings.batch_max_leaves:,} (SQLite, in-process chain; {load()}):"
    )
    for label in (
        "claim (outbox read, tree, outbox update)",
        "send + wait (in-process chain) + confirm",
        "confirming transaction, all of it",
        "  of which the log append + checkpoint",
    ):
        print(f"  {label:44s} {spent.get(label, 0.0) / leaves * 1e6:8.1f} us/leaf")
    print(f"  {'run_once, all of it':44s} {total / leaves * 1e6:8.1f} us/leaf")


def anchorer_log(path: Path, seen: list[tuple[float, str]], latencies: list[float]) -> None:
    """What the anchorer's log says about its batches (sizes, claim -> confirmed, overlap),
    and where each followed record's time went: acknowledged -> its batch claimed ->
    confirmed -> its receipt seen by the poller."""
    from datetime import datetime

    claimed: dict[int, tuple[float, int]] = {}
    roots: dict[int, str] = {}
    at_root: dict[str, tuple[float, float]] = {}
    spans: list[tuple[float, float, int]] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") != "qledger.anchorer":
            continue
        at = datetime.fromisoformat(entry["time"]).timestamp()
        words = entry["message"].split()
        if words[:2] == ["claimed", "batch"]:
            claimed[int(words[2].rstrip(":"))] = (at, int(words[3]))
            roots[int(words[2].rstrip(":"))] = words[-1]
        elif words[:1] == ["batch"] and len(words) > 2 and words[2] == "confirmed:":
            batch = int(words[1])
            if batch in claimed:
                start, size = claimed[batch]
                spans.append((start, at, size))
                at_root[roots[batch]] = (start, at)
    if not spans:
        print(f"anchorer log {path}: no batch claimed and confirmed")
        return
    durations = [end - start for start, end, _ in spans]
    sizes = [size for _, _, size in spans]
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    flying = most = 0
    for _, step in edges:
        flying += step
        most = max(most, flying)
    print(
        f"anchorer ({path}): {len(spans)} batches, leaves per batch p50 "
        f"{statistics.median(sizes):.0f} max {max(sizes)}; claim -> confirmed p50 "
        f"{statistics.median(durations):.2f} s p99 "
        f"{statistics.quantiles(durations, n=100, method='inclusive')[98]:.2f} s max "
        f"{max(durations):.2f} s; at most {most} batches in flight at once"
    )
    parts: list[tuple[float, float, float]] = []
    for (acked, root), latency in zip(seen, latencies, strict=True):
        if root in at_root:
            claim, confirm = at_root[root]
            parts.append((claim - acked, confirm - claim, acked + latency - confirm))
    if parts:
        names = ("acknowledged -> claimed", "claimed -> confirmed", "confirmed -> seen")
        print("where the followed records' time went (p50 / p99 / max):")
        for k, name in enumerate(names):
            values = [p[k] for p in parts]
            print(
                f"  {name:26s} {statistics.median(values):6.2f} / "
                f"{statistics.quantiles(values, n=100, method='inclusive')[98]:6.2f} / "
                f"{max(values):6.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="records per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--confirmations", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.1, help="receipt polling interval (s)")
    parser.add_argument(
        "--poll-mode",
        choices=["oldest-first", "all"],
        default="oldest-first",
        help="which waiting records a polling round asks about (see poll())",
    )
    parser.add_argument("--log", type=Path, help="the service's log file (JSON lines)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="store on this PostgreSQL server (a database is made for the run and dropped)",
    )
    parser.add_argument(
        "--anchorer-only", type=int, metavar="LEAVES", help="time the anchorer's work per leaf"
    )
    args = parser.parse_args()
    if args.anchorer_only:
        anchorer_only(args.anchorer_only)
        return
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S')}, {load()}", flush=True)
    per_request = max(1, round(args.rate * TICK))
    requests = round(args.seconds / TICK)

    tmp = Path(tempfile.mkdtemp(prefix="qledger-ttr-"))
    log_path = args.log or tmp / "service.log"
    store_url = None
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
            "QLEDGER_LOG_FORMAT": "json",
        }
        if args.postgres:
            env["QLEDGER_DATABASE_URL"] = store_url = fresh_database(args.postgres)
        service_log = log_path.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=service_log,
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

        ticks: list[float] = []  # how long each polling round took
        seen: list[tuple[float, str]] = []  # (acknowledged at, batch root) per receipt
        slow: list[tuple[float, float, int]] = []  # GETs slower than SLOW_GET
        gets = 0

        def poll() -> None:
            # Waiting records in acknowledgement order. "oldest-first" (the default) asks the
            # oldest first and stops at the first still pending: receipts become available
            # in about intake order, so a round is one or two GETs and the resolution stays
            # --poll whatever the backlog; a record ready before an older one is counted when
            # the older one is (over-counted, never under-counted). "all" asks every waiting
            # record every round, as the first version did: with seconds of backlog that is
            # hundreds of GETs a second through the one worker, and a round takes longer than
            # --poll, so the figures then measure the poller too.
            nonlocal gets
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
                                bisect.insort(waiting, item)
                    except queue.Empty:
                        pass
                    began = time.monotonic()
                    still = []
                    for n, (at, who, struct_hash) in enumerate(waiting):
                        if still and args.poll_mode == "oldest-first":
                            still.extend(waiting[n:])
                            break
                        gets += 1
                        asked = time.time()
                        resp = http.get(
                            f"/v1/records/{struct_hash}/receipt",
                            headers={"Authorization": f"Bearer {tokens[who]}"},
                        )
                        if time.time() - asked > SLOW_GET:
                            slow.append((asked, time.time() - asked, resp.status_code))
                        if resp.status_code == 200:
                            latencies.append(time.monotonic() - at)
                            # wall clocks, to line up with the anchorer's log afterwards
                            seen.append((time.time() - latencies[-1], resp.json()["root"]))
                        elif resp.status_code == 202:
                            still.append((at, who, struct_hash))
                        else:
                            sys.exit(f"receipt of {struct_hash}: {resp.status_code} {resp.text}")
                    waiting = still
                    ticks.append(time.monotonic() - began)
                    if done and (not waiting or time.monotonic() > (deadline or 0)):
                        unanswered.extend(h for _, _, h in waiting)
                        return
                    time.sleep(max(0.0, args.poll - (time.monotonic() - began)))

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
            service_log.close()
        stop_anvil(tmp / "anvil")
        if store_url is not None:
            drop_database(args.postgres, store_url)

    confirmation = (args.confirmations + 1) * args.block_time
    bound = args.batch_seconds + confirmation + 1.0
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nservice: 1 uvicorn worker, {store}, anchorer in its own process; anvil block time "
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
        f"every {args.poll:g} s, {args.poll_mode}): p50 {pct(latencies, 50):.2f} s  p99 "
        f"{pct(latencies, 99):.2f} s  max {max(latencies):.2f} s"
    )
    print(
        f"poller: {gets:,} receipt GETs ({gets / sent_for:,.0f}/s while sending); a round took "
        f"p50 {statistics.median(ticks) * 1000:.0f} ms, max {max(ticks) * 1000:.0f} ms"
    )
    print(
        f"bound: batch interval {args.batch_seconds:g} s + confirmation "
        f"{confirmation:g} s + 1 s = {bound:g} s; p99 / bound = {pct(latencies, 99) / bound:.2f}"
        f" ({'met' if pct(latencies, 99) <= bound else 'NOT met'})"
    )
    if unanswered:
        print(f"{len(unanswered)} followed records had no receipt 60 s after the last request")
    for asked, took, status in slow[:10]:
        when = time.strftime("%H:%M:%S", time.localtime(asked))
        print(f"slow receipt GET at {when}: {took:.1f} s (answered {status})")
    anchorer_log(log_path, seen, latencies)
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S')}, {load()}")


if __name__ == "__main__":
    main()
