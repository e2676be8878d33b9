"""Genealogy benchmark (issue 19): recall-scope latency on a genealogy of >= 1,000,000 links,
and the ingest rate of signed genealogy records through the real intake path.

    .venv/bin/python scripts/bench_trace.py [--database-url URL] [--queries 500]
        [--ingest 2000] [--scale 1.0]

Default database: a fresh SQLite file in a temporary directory. For PostgreSQL give a database
of its own (its tables are dropped first), e.g. ``createdb -h 127.0.0.1 -U postgres
genealogy_bench`` and ``--database-url postgresql+psycopg://postgres@127.0.0.1:5432/genealogy_bench``.

The graph (seeded, deterministic), four tiers:
  2,000 raw-material lots of 1,000 suppliers
  -> 20,000 component lots (transformation, 2 raw lots each: 40,000 links)
  -> 250,000 module serials (aggregation, 3 component lots each: 750,000 links)
  -> 100,000 vehicles (aggregation, 2-3 modules each: 250,000 links)        = 1,040,000 links
is written DIRECTLY into the store with bulk inserts (one placeholder record row per
genealogy record, 370,000 of them, for the links' foreign key and the anchoring join): signing
and checking 370,000 records would take an hour on this machine and measures intake, which the
second phase measures on its own.

Phase 1 times ``api.genealogy_service.trace`` (what ``POST /v1/trace/scope`` runs, minus
HTTP: the level-by-level walk, per-level counts, the listed nodes and the anchoring state of
every record listed) for random suspect raw-material lots, and for sets of 10 at once.
Phase 2 submits signed aggregation records (new modules from existing component lots, new
vehicles from those modules) through ``api.intake.submit_many`` (signature, role, kind and
subject checks, cycle and duplicate checks, one transaction per batch) against the same
database, and the same number of inspection records the same way: the ratio is the cost of
the genealogy checks.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, insert, text

from api.context import ServiceContext
from api.genealogy_service import TraceQuery, trace
from api.intake import submit_many
from api.settings import Settings
from api.store.db import make_engine, migrate, session_factory
from api.store.genealogy import SqlLinks
from api.store.models import GenealogyLink, Record, utcnow
from ledger.chain import ChainClient
from ledger.keys import Signer
from ledger.records import Role
from ledger.signing import sign_record
from traceability.evidence import sign_aggregation
from traceability.genealogy import Filters, Node, node_key, walk

SEED = 19
PLANTS = ["plant-1", "plant-2", "plant-3", "plant-4"]
YEAR = 365 * 86_400
CHUNK = 20_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def shape(scale: float) -> dict[str, int]:
    return {
        "suppliers": max(10, int(1000 * scale)),
        "raw": max(20, int(2000 * scale)),
        "components": max(100, int(20_000 * scale)),
        "modules": max(500, int(250_000 * scale)),
        "vehicles": max(200, int(100_000 * scale)),
    }


def genealogy(scale: float, t0: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(struct hash, its link rows) per placeholder record, tier by tier."""
    rng = random.Random(SEED)
    n = shape(scale)
    raw = [node_key((f"SUP-{i % n['suppliers']:04d}", "RESIN", f"R-{i}")) for i in range(n["raw"])]
    comps = [
        node_key((f"SUP-{i % n['suppliers']:04d}", "HOUSING", f"C-{i}"))
        for i in range(n["components"])
    ]
    modules = [node_key((f"T1-{i % 50:02d}", "ECU", f"SN-{i}")) for i in range(n["modules"])]
    serial = 0

    def record(
        children: list[str], parent: str, kind: str, site: str
    ) -> tuple[str, list[dict[str, Any]]]:
        nonlocal serial
        serial += 1
        h = f"0x{serial:064x}"
        t = t0 + rng.randrange(YEAR)
        return h, [
            {
                "child": c,
                "parent": parent,
                "struct_hash": h,
                "kind": kind,
                "event_time": t,
                "site": site,
            }
            for c in children
        ]

    for comp in comps:
        yield record(rng.sample(raw, 2), comp, "transformation", "supplier-site")
    for module in modules:
        yield record(rng.sample(comps, 3), module, "aggregation", "tier1-site")
    per_vehicle: dict[int, list[str]] = {}
    for j, module in enumerate(modules):
        per_vehicle.setdefault(j % n["vehicles"], []).append(module)
    for v in range(n["vehicles"]):
        parent = node_key(("OEM-01", "VEHICLE", f"VIN-{v}"))
        yield record(per_vehicle[v], parent, "aggregation", PLANTS[v % len(PLANTS)])


def placeholder(h: str, link: dict[str, Any], i: int) -> dict[str, Any]:
    maker, part, lot = link["parent"].split("|")
    return dict(
        struct_hash=h,
        signer=f"0x{i:040x}",
        signer_role="OEM" if maker.startswith("OEM") else "SUPPLIER",
        subject=maker,
        kind=link["kind"],
        part_number=part,
        lot_id=lot,
        event_time=link["event_time"],
        signed_at=link["event_time"],
        quantity=1,
        defects=0,
        nonce=i,
        salt="0x" + "0" * 64,
        payload_hash="0x" + "0" * 64,
        payload={},
        signature="0x",
        chain_id=1,
        contract="0x" + "0" * 40,
        received_at=utcnow(),
    )


def fresh_schema(url: str) -> None:
    if url.startswith("postgresql"):
        engine = create_engine(url)
        existing = MetaData()
        existing.reflect(engine)
        existing.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


def build(url: str, scale: float, t0: int) -> tuple[int, int, float]:
    engine = make_engine(url)
    records: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    count_links = count_records = 0
    start = time.perf_counter()

    def flush() -> None:
        with engine.begin() as conn:
            if records:
                conn.execute(insert(Record), records)
            if links:
                conn.execute(insert(GenealogyLink), links)
        records.clear()
        links.clear()

    for h, rows in genealogy(scale, t0):
        count_records += 1
        records.append(placeholder(h, rows[0], count_records))
        links.extend(rows)
        count_links += len(rows)
        if len(links) >= CHUNK:
            flush()
    flush()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE genealogy_links"))
            conn.execute(text("ANALYZE records"))
        else:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return count_links, count_records, time.perf_counter() - start


def time_scopes(url: str, scale: float, queries: int, per_query: int) -> dict[str, Any]:
    """Recall scope for random suspect raw lots (every other query filtered by a plant), and
    in the same loop what bounds it: the walk alone (the level queries and their rows), and a
    one-row primary-key read of the same database (this machine's floor per statement)."""
    rng = random.Random(SEED + per_query)
    n = shape(scale)
    engine = make_engine(url)
    sessions = session_factory(engine)
    lat: list[float] = []
    walks: list[float] = []
    floor: list[float] = []
    totals: list[int] = []
    followed: list[int] = []
    # Warm-up (not counted): the first reads of a cold file come from disk, not the cache.
    for i in range(min(20, n["raw"])):
        with sessions() as s:
            trace(
                s, TraceQuery([(f"SUP-{i % n['suppliers']:04d}", "RESIN", f"R-{i}")], "where-used")
            )
    # As the service does at start-up (api/main.py, lifespan): the start-up heap is frozen, so a
    # full collection does not walk it in the middle of a query.
    gc.collect()
    gc.freeze()
    for q in range(queries):
        lots: list[Node] = [
            (f"SUP-{i % n['suppliers']:04d}", "RESIN", f"R-{i}")
            for i in rng.sample(range(n["raw"]), per_query)
        ]
        query = TraceQuery(lots, "where-used", Filters(site=PLANTS[q % 4] if q % 2 else None))
        start = time.perf_counter()
        with sessions() as s:
            answer = trace(s, query)
        lat.append((time.perf_counter() - start) * 1000)
        totals.append(answer["total"])
        start = time.perf_counter()
        with sessions() as s:
            w = walk(SqlLinks(s), [node_key(x) for x in lots], "where-used", query.filters)
        walks.append((time.perf_counter() - start) * 1000)
        followed.append(len(w.links))
        start = time.perf_counter()
        with sessions() as s:
            s.get(Record, f"0x{q + 1:064x}")
        floor.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    return {
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "max": max(lat),
        "walk_p50": pct(walks, 0.5),
        "walk_p99": pct(walks, 0.99),
        "floor_p50": pct(floor, 0.5),
        "links_median": statistics.median(followed),
        "links_max": max(followed),
        "nodes_median": statistics.median(totals),
        "nodes_max": max(totals),
    }


def ingest(url: str, count: int, batch: int) -> dict[str, float]:
    """Signed genealogy vs inspection records through intake, same service, same database."""
    chain = ChainClient.in_process()
    chain.deploy()
    tmp = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    cfg = Settings(
        data_dir=tmp / "data",
        database_url=url,
        confirmations=0,
        token_secret="bench-secret-" + "0" * 32,
    )
    # A fresh in-process chain each run: forget the role mirror of an earlier run's chain (this
    # database is the benchmark's own).
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM role_events"))
        conn.execute(text("DELETE FROM chain_cursors"))
    engine.dispose()
    ctx = ServiceContext.create(cfg, chain=chain)
    tag = time.time_ns() // 1000  # fresh lot names per run (a rerun on --reuse)
    tier1, oem = Signer.generate(), Signer.generate()
    chain.register_participant(tier1.address, Role.SUPPLIER, "T1-99")
    chain.register_participant(oem.address, Role.OEM, "OEM-02")
    ctx.follower.sync()
    now = int(time.time())
    t = now - 3600
    rng = random.Random(SEED)
    # Existing component lots of the built graph (at --scale 1); new modules consume them.
    comps = [(f"SUP-{i % 1000:04d}", "HOUSING", f"C-{i}") for i in range(1000)]
    records: list[dict[str, Any]] = []
    for i in range(count // 2):
        nonce = i + 1
        module = ("T1-99", "ECU", f"NEW-{tag}-{i}")
        records.append(
            sign_aggregation(
                tier1,
                ctx.domain,
                parent=module,
                children=rng.sample(comps, 3),
                event_time=t,
                nonce=nonce,
                site="tier1-site",
                signed_at=now,
            ).model_dump(mode="json")
        )
        records.append(
            sign_aggregation(
                oem,
                ctx.domain,
                parent=("OEM-02", "VEHICLE", f"NEWVIN-{tag}-{i}"),
                children=[module],
                event_time=t,
                nonce=nonce,
                site="plant-9",
                signed_at=now,
            ).model_dump(mode="json")
        )
    inspections = [
        sign_record(
            tier1,
            ctx.domain,
            subject="T1-99",
            kind="inspection",
            part_number="ECU",
            lot_id=f"I-{tag}-{i}",
            event_time=t,
            quantity=50,
            defects=0,
            nonce=10**6 + i,
            signed_at=now,
            payload={
                "disposition": "conformant",
                "inspectionType": "incoming",
                "lotSize": 1000,
                "sampleSize": 50,
                "defectList": [],
                "sensorReport": [],
            },
        ).model_dump(mode="json")
        for i in range(len(records))
    ]

    def timed(items: list[dict[str, Any]]) -> float:
        start = time.perf_counter()
        outcomes = submit_many(ctx, items)
        bad = [o for o in outcomes if o.status != "accepted"]
        if bad:
            raise SystemExit(f"intake refused a record: {bad[0].to_json()}")
        return time.perf_counter() - start

    # Batches alternate (genealogy, inspection, genealogy, ...) so the shared machine's load
    # falls on both alike; within a genealogy batch each module comes before its vehicle.
    spent = {"genealogy": 0.0, "inspection": 0.0}
    for k in range(0, len(records), batch):
        spent["genealogy"] += timed(records[k : k + batch])
        spent["inspection"] += timed(inspections[k : k + batch])
    genealogy_rate = len(records) / spent["genealogy"]
    inspection_rate = len(inspections) / spent["inspection"]
    ctx.engine.dispose()
    return {"genealogy": genealogy_rate, "inspection": inspection_rate, "n": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ingest", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1,040,000 links")
    parser.add_argument(
        "--reuse", action="store_true", help="skip the build: the database holds it already"
    )
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'trace.db'}"
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    t0 = int(time.time()) - 2 * YEAR
    if args.reuse:
        print(f"[{dialect}] reusing the genealogy already built in {url}")
    else:
        fresh_schema(url)
        links, records, seconds = build(url, args.scale, t0)
        print(f"[{dialect}] built {links:,} links / {records:,} records in {seconds:.0f} s (bulk)")
    for per in (1, 10) if args.queries >= 10 else ():  # --queries 0: intake only
        r = time_scopes(url, args.scale, args.queries // per, per)
        print(
            f"[{dialect}] recall scope, {per} suspect lot(s), {args.queries // per} queries: "
            f"p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  max {r['max']:.1f} ms  "
            f"(in scope: median {r['nodes_median']:.0f} lots, max {r['nodes_max']}; links "
            f"followed: median {r['links_median']:.0f}, max {r['links_max']})"
        )
        print(
            f"[{dialect}]   of which the walk: p50 {r['walk_p50']:.1f} ms  p99 "
            f"{r['walk_p99']:.1f} ms; one-row primary-key read (this machine's floor per "
            f"statement) p50 {r['floor_p50']:.2f} ms; p50 / floor = "
            f"{r['p50'] / r['floor_p50']:.0f}"
        )
    ing = ingest(url, args.ingest, args.batch)
    print(
        f"[{dialect}] intake of signed records (submit_many, batches of {args.batch}, "
        f"n={ing['n']:.0f} each): genealogy {ing['genealogy']:.0f}/s, "
        f"inspection {ing['inspection']:.0f}/s, ratio {ing['genealogy'] / ing['inspection']:.2f}"
    )


if __name__ == "__main__":
    main()
