"""The anchorer's own work per record, in-process (no HTTP, no profiler): CPU microseconds per
record of its claim (deciding, reading the leaves, the tree, the claiming write) and of its
confirming transaction (records joined to the batch, log entries, checkpoint), and how long
each holds a write transaction, over batches of ``batch_max_leaves`` (1,024) intake stored.
The chain is the in-process test chain; its time is not counted.

    PYTHONPATH=. .venv/bin/python scripts/bench_anchorer_steps.py [--batches 8]
        [--database-url postgresql+psycopg://...]

Run it from two trees (before and after a change) alternately to compare: it measures
``Anchorer._claim`` and ``Anchorer._confirm``, which both have.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event

from api.anchorer import Anchorer
from api.intake import submit_many
from ledger.signing import sign_record
from tests.api.conftest import make_service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import payload

LEAVES = 1024  # Settings.batch_max_leaves' default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    print(f"{datetime.now():%Y-%m-%d %H:%M}, load average {os.getloadavg()[0]:.1f}", flush=True)
    svc = make_service(Path(tempfile.mkdtemp()), args.database_url or "sqlite")
    ctx = svc.ctx
    supplier = svc.parties["supplier"]
    total = args.batches * LEAVES
    signed_at = int(time.time())
    records = [
        sign_record(
            supplier.signer,
            ctx.domain,
            subject=supplier.org,
            kind="inspection",
            part_number="P-100",
            lot_id=f"LOT-{i}",
            event_time=signed_at - 3600,
            quantity=50,
            defects=0,
            nonce=i + 1,
            payload=payload(i),
        ).model_dump(mode="json")
        for i in range(total)
    ]
    for start in range(0, total, 1000):
        outcomes = submit_many(ctx, records[start : start + 1000])
        assert all(o.status == "accepted" for o in outcomes)

    # Time inside write transactions (BEGIN IMMEDIATE on SQLite, any BEGIN on PostgreSQL).
    held = {"s": 0.0, "since": 0.0}

    @event.listens_for(ctx.engine, "begin")
    def _began(conn: Any) -> None:
        held["since"] = time.perf_counter()

    @event.listens_for(ctx.engine, "commit")
    def _ended(conn: Any) -> None:
        held["s"] += time.perf_counter() - held["since"]

    cpu = {"claim": 0.0, "confirm": 0.0}
    lock = {"claim": 0.0, "confirm": 0.0}

    @contextmanager
    def counted(step: str) -> Iterator[None]:
        # thread_time: this thread's CPU only (the chain's py-evm runs in it too, but not
        # inside these two steps).
        cpu0, held0 = time.thread_time(), held["s"]
        yield
        cpu[step] += time.thread_time() - cpu0
        lock[step] += held["s"] - held0

    def wrap(name: str, step: str) -> None:
        real: Callable[..., Any] = getattr(Anchorer, name)

        def timed(self: Anchorer, *a: Any, **k: Any) -> Any:
            with counted(step):
                return real(self, *a, **k)

        setattr(Anchorer, name, timed)

    wrap("_claim", "claim")
    wrap("_confirm", "confirm")
    anchorer = Anchorer(ctx, max_in_flight=1)
    outcomes_ = anchorer.run_once(force=True)
    anchored = sum(o.leaf_count for o in outcomes_)
    assert anchored == total, (anchored, total)
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{store}: {len(outcomes_)} batches of {LEAVES} leaves, {anchored} records")
    for step in ("claim", "confirm"):
        print(
            f"{step:8s} CPU {cpu[step] / anchored * 1e6:6.1f} us/record, "
            f"in write transactions {lock[step] / anchored * 1e6:6.1f} us/record (wall)"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    ctx.engine.dispose()


if __name__ == "__main__":
    main()
