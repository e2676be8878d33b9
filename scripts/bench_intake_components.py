"""Where intake's per-record CPU goes, in-process (no HTTP, no profiler): microseconds per
record for each step of a 1,000-record batch, the model path (before issue #21's second pass)
beside the fast path (now), next to one raw coincurve recovery measured in the same run.
Every figure is the best of 5, the rows of one pair measured alternately.

    PYTHONPATH=. .venv/bin/python scripts/bench_intake_components.py \
        [--before-url postgresql+psycopg://...  --now-url postgresql+psycopg://...]

The store row writes the same batches into two fresh stores, one with the indexes of migration
0016 and one with those of 0018 (SQLite files by default; --before-url and --now-url name two
PostgreSQL databases instead, whose tables are dropped first).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from coincurve import PrivateKey, PublicKey

from api.edges import _parse_fast, parse_strict_json
from api.intake import _fast_check, check_record, check_records, store
from api.main import GC_GEN0_THRESHOLD
from api.store.db import MIGRATIONS_DIR, make_engine, migrate, session_factory
from ledger.canonical import canonical_json, canonical_json_fast
from ledger.eip712 import domain_separator, record_struct_hash, record_struct_hash_of
from ledger.records import load_signed_record, screen_signed_record
from ledger.signing import check_signature, sign_record, signature_recovers_to
from tests.api.conftest import _fresh_postgres, make_service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import payload

N = 1000
REPEATS = 5


def once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / N * 1e6


def per_record(fn: Callable[[], object]) -> float:
    """Best of REPEATS runs of ``fn`` (which handles N records), in us per record."""
    return min(once(fn) for _ in range(REPEATS))


def pair(before: Callable[[], object], after: Callable[[], object]) -> tuple[float, float]:
    """Both, best of REPEATS, measured alternately (the machine's load drifts)."""
    runs = [(once(before), once(after)) for _ in range(REPEATS)]
    return min(b for b, _ in runs), min(a for _, a in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before-url", default=None, help="store with 0016's indexes")
    parser.add_argument("--now-url", default=None, help="store with 0018's indexes")
    args = parser.parse_args()
    svc = make_service(Path(tempfile.mkdtemp(prefix="qledger-components-")), "sqlite")
    ctx = svc.ctx
    supplier = svc.parties["supplier"]
    now = int(time.time())

    def signed_batch(first_nonce: int, count: int = N) -> list[Any]:
        return [
            sign_record(
                supplier.signer,
                ctx.domain,
                subject=supplier.org,
                kind="inspection",
                part_number="P-100",
                lot_id=f"LOT-{first_nonce + i}",
                event_time=now - 3600,
                quantity=50,
                defects=0,
                nonce=first_nonce + i,
                payload=payload(first_nonce + i),
            )
            for i in range(count)
        ]

    signed = signed_batch(1)
    records = [s.model_dump(mode="json") for s in signed]
    body = orjson.dumps({"records": records})
    ctx.roles.get(supplier.address)  # the mirror is loaded, as in the service
    key = PrivateKey(os.urandom(32))
    samples = []
    for _ in range(200):  # as bench_ingest.raw_recover_rate: 200 signatures, one core
        digest = os.urandom(32)
        samples.append((key.sign_recoverable(digest, hasher=None), digest))

    def raw() -> None:
        for i in range(N):
            sig, digest = samples[i % 200]
            PublicKey.from_signature_and_message(sig, digest, hasher=None)

    # The collector as the service runs it (api/main.py): the start-up heap frozen, the
    # first generation's threshold raised.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    separator = domain_separator(ctx.domain)
    screened = [screen_signed_record(r, ctx.domain) for r in records]
    pending = [_fast_check(ctx, r, now, {}, separator) for r in records]
    rows: list[tuple[str, float, float | None]] = []
    raw_us = per_record(raw)
    rows.append(("raw coincurve recover (the reference)", raw_us, None))
    rows.append(
        (
            "strict-JSON edge, 1,000-record body (per record)",
            *pair(lambda: parse_strict_json(body), lambda: _parse_fast(body)),
        )
    )
    rows.append(
        (
            "  parse of the same body by the route (orjson; now handed over)",
            per_record(lambda: orjson.loads(body)),
            0.0,
        )
    )
    rows.append(
        (
            "JCS canonical JSON of the payload",
            *pair(
                lambda: [canonical_json(r["payload"]) for r in records],
                lambda: [canonical_json_fast(r["payload"]) for r in records],
            ),
        )
    )
    rows.append(
        (
            "parse + validate envelope (models / screen)",
            *pair(
                lambda: [load_signed_record(r) for r in records],
                lambda: [screen_signed_record(r, ctx.domain) for r in records],
            ),
        )
    )
    rows.append(
        (
            "struct hash",
            *pair(
                lambda: [record_struct_hash(s.record) for s in signed],
                lambda: [
                    record_struct_hash_of(
                        bytes.fromhex(s.signer[2:]),
                        s.subject,
                        s.kind.value,
                        s.partNumber,
                        s.lotId,
                        s.eventTime,
                        s.signedAt,
                        s.quantity,
                        s.defects,
                        s.nonce,
                        bytes.fromhex(s.salt[2:]),
                        bytes.fromhex(s.payloadHash[2:]),
                    )
                    for s in screened
                    if s is not None
                ],
            ),
        )
    )
    rows.append(
        (
            "signature check (incl. struct hash / recovery alone)",
            *pair(
                lambda: [check_signature(s) for s in signed],
                lambda: [
                    signature_recovers_to(p.digest, p.signature, p.signer)
                    for p in pending
                    if p is not None
                ],
            ),
        )
    )
    rows.append(
        (
            "all checks (check_record per record / check_records)",
            *pair(
                lambda: [check_record(ctx, r, now) for r in records],
                lambda: check_records(ctx, records, now),
            ),
        )
    )

    # Storage: 1,000 fresh records a transaction into two stores that grow as they go, one
    # with the indexes of migration 0016 (before) and one with those of 0018 (now), the same
    # batches into both, alternately.
    def fresh_store(url: str, revision: str) -> SimpleNamespace:
        if url.startswith("postgresql"):
            _fresh_postgres(url)
        engine = make_engine(url)
        migrate(engine)
        if revision != "head":
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, revision)
        return SimpleNamespace(sessions=session_factory(engine))  # all store() reads of ctx

    scratch = Path(tempfile.mkdtemp(prefix="qledger-stores-"))
    before_store = fresh_store(args.before_url or f"sqlite:///{scratch / 'before.db'}", "0016")
    now_store = fresh_store(args.now_url or f"sqlite:///{scratch / 'now.db'}", "head")
    fresh = iter(range(10_000, 10**9, N))

    def checked_batch() -> list[tuple[int, Any]]:
        batch = [s.model_dump(mode="json") for s in signed_batch(next(fresh))]
        return [(i, c) for i, c in enumerate(check_records(ctx, batch, now))]

    def stored(target: SimpleNamespace, items: list[tuple[int, Any]]) -> float:
        start = time.perf_counter()
        store(target, items)  # type: ignore[arg-type]
        return (time.perf_counter() - start) / N * 1e6

    warm = checked_batch()
    stored(before_store, warm)
    stored(now_store, warm)
    full: list[float] = []
    lean: list[float] = []
    for k in range(2 * REPEATS):
        items = checked_batch()
        order = [(before_store, full), (now_store, lean)]
        for target, times in order if k % 2 else order[::-1]:
            times.append(stored(target, items))
    rows.append(("store (records + outbox rows, 1,000 a transaction)", min(full), min(lean)))

    width = max(len(name) for name, *_ in rows)
    print(f"{'':<{width}}  {'before':>9}  {'now':>9}   us/record")
    for name, before, after in rows:
        now_text = f"{after:9.1f}" if after is not None else ""
        print(f"{name:<{width}}  {before:9.1f}  {now_text:>9}")
    edge_before, edge_now = rows[1][1], rows[1][2] or 0.0
    check_before, check_now = rows[-2][1], rows[-2][2] or 0.0
    store_before, store_now = rows[-1][1], rows[-1][2] or 0.0
    route_parse = rows[2][1]
    before_total = edge_before + route_parse + check_before + store_before
    now_total = edge_now + check_now + store_now
    for label, total in (("before", before_total), ("now", now_total)):
        print(
            f"{'intake total, ' + label + ' (edge + parse + checks + store)':<{width}}  "
            f"{total:9.1f}              = {raw_us / total:.0%} of the raw recover rate "
            "on one core"
        )


if __name__ == "__main__":
    main()
