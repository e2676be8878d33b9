"""where-used, where-from, recall scope and the link rules against brute-force references on
random DAGs, over the in-memory store and over the SQL store (the service's)."""

from __future__ import annotations

import graphlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from api.store.db import make_engine, migrate, session_factory
from api.store.genealogy import SqlLinks, insert_links
from api.store.models import Record, utcnow
from traceability.genealogy import (
    Direction,
    Filters,
    LinkRow,
    MemoryLinks,
    check_new_links,
    node_key,
    walk,
)

SITES = ["plant-1", "plant-2", "sup-site"]


def _random_dag(rng: random.Random, n: int, m: int) -> list[LinkRow]:
    """Links only from a lower to a higher index (a DAG), random times and sites."""
    nodes = [node_key((f"ORG-{i % 7}", f"P-{i % 5}", f"L-{i}")) for i in range(n)]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < m:
        a, b = sorted(rng.sample(range(n), 2))
        pairs.add((a, b))
    rows = []
    for k, (a, b) in enumerate(sorted(pairs)):
        rows.append(
            LinkRow(
                nodes[a],
                nodes[b],
                f"0x{k % (m // 3 + 1):064x}",  # several links share a record, as aggregations do
                "aggregation",
                1_000 + rng.randrange(100),
                rng.choice([*SITES, None]),
            )
        )
    return rows


def _brute(
    rows: list[LinkRow], roots: set[str], direction: Direction, f: Filters
) -> tuple[dict[str, int], set[str], set[str]]:
    """Shortest distances by Bellman-Ford relaxation over every link, the filter applied to
    every link into a reached node, and the records of every link leaving a reached node."""
    up = direction == "where-used"
    edges = [((r.child, r.parent) if up else (r.parent, r.child), r) for r in rows]
    dist = dict.fromkeys(roots, 0)
    for _ in range(len(rows) + 1):
        changed = False
        for (near, far), _r in edges:
            if near in dist and (far not in dist or dist[far] > dist[near] + 1):
                dist[far] = dist[near] + 1
                changed = True
        if not changed:
            break
    depth = {k: d for k, d in dist.items() if k not in roots}
    matched = {far for (near, far), r in edges if near in dist and far in depth and f.match(r)}
    records = {r.struct_hash for (near, _far), r in edges if near in dist}
    return depth, matched, records


def _check(rows: list[LinkRow], store: object, rng: random.Random) -> None:
    nodes = sorted({r.child for r in rows} | {r.parent for r in rows})
    for _ in range(25):
        roots = set(rng.sample(nodes, rng.randint(1, 3)))
        direction: Direction = rng.choice(["where-used", "where-from"])
        since = rng.choice([None, 1_020, 1_050])
        f = Filters(
            since=since,
            until=rng.choice([None, 1_080]),
            site=rng.choice([None, *SITES]),
        )
        w = walk(store, roots, direction, f)  # type: ignore[arg-type]
        depth, matched, records = _brute(rows, roots, direction, f)
        assert w.depth == depth
        assert w.matched == matched
        assert set(w.records()) == records
        assert sum(c for _, c in w.levels()) == len(matched)
        assert not w.depth_limited


@pytest.mark.parametrize("seed", range(12))
def test_walk_equals_brute_force_on_random_dags(seed: int) -> None:
    rng = random.Random(seed)
    rows = _random_dag(rng, rng.randint(5, 60), rng.randint(4, 120))
    _check(rows, MemoryLinks(rows), rng)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    with session_factory(engine)() as s, s.begin():
        yield s
    engine.dispose()


def _records_for(session: Session, rows: list[LinkRow]) -> None:
    """Record rows for the links' foreign keys (their content does not matter here)."""
    hashes = sorted({r.struct_hash for r in rows})
    session.execute(
        insert(Record),
        [
            dict(
                struct_hash=h,
                signer=f"0x{i:040x}",
                signer_role="OEM",
                subject="ORG-1",
                kind="aggregation",
                part_number="P",
                lot_id="L",
                event_time=1,
                signed_at=1,
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
            for i, h in enumerate(hashes)
        ],
    )


@pytest.mark.parametrize("seed", range(4))
def test_sql_store_answers_as_the_reference(session: Session, seed: int) -> None:
    rng = random.Random(100 + seed)
    rows = _random_dag(rng, 80, 200)
    _records_for(session, rows)
    insert_links(session, rows)
    _check(rows, SqlLinks(session), rng)


def test_depth_limit_is_reported() -> None:
    chain = [node_key(("M", "P", f"L{i}")) for i in range(6)]
    rows = [LinkRow(a, b, "0x1", "aggregation", 1, None) for a, b in itertools.pairwise(chain)]
    w = walk(MemoryLinks(rows), [chain[0]], "where-used", max_depth=3)
    assert w.depth_limited and max(w.depth.values()) == 3
    assert not walk(MemoryLinks(rows), [chain[0]], "where-used").depth_limited


def _would_cycle(graph: list[tuple[str, str]], new: list[tuple[str, str]]) -> bool:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for child, parent in [*graph, *new]:
        sorter.add(parent, child)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return True
    return False


@pytest.mark.parametrize("seed", range(10))
def test_new_links_refused_exactly_when_they_close_a_loop_or_repeat(seed: int) -> None:
    """Hostile batches: random proposed records, many of them closing loops through any depth
    or restating a link, checked in order against topological sort and a set of pairs."""
    rng = random.Random(seed)
    rows = _random_dag(rng, 30, 50)
    store = MemoryLinks(rows)
    nodes = sorted({r.child for r in rows} | {r.parent for r in rows})
    proposals: list[list[LinkRow]] = []
    for k in range(40):
        parent = rng.choice(nodes)
        children = rng.sample([n for n in nodes if n != parent], rng.randint(1, 3))
        proposals.append(
            [LinkRow(c, parent, f"0xnew{k}", "aggregation", 1, None) for c in children]
        )
    verdicts = check_new_links(store, proposals)
    graph = [(r.child, r.parent) for r in rows]
    for links, verdict in zip(proposals, verdicts, strict=True):
        pairs = [(r.child, r.parent) for r in links]
        if any(p in graph for p in pairs):
            assert verdict is not None and verdict.code == "duplicate_link"
        elif _would_cycle(graph, pairs):
            assert verdict is not None and verdict.code == "genealogy_cycle"
            assert _would_cycle(graph, [verdict.link, *pairs])
        else:
            assert verdict is None
            graph.extend(pairs)
    assert any(v is None for v in verdicts)
    assert any(v is not None and v.code == "genealogy_cycle" for v in verdicts)


def test_sql_existing_and_cycle_check_see_stored_links(session: Session) -> None:
    a, b, c = (node_key(("M", "P", x)) for x in "abc")
    rows = [
        LinkRow(a, b, "0x" + "1" * 64, "aggregation", 1, "plant-1"),
        LinkRow(b, c, "0x" + "2" * 64, "aggregation", 2, None),
    ]
    _records_for(session, rows)
    insert_links(session, rows)
    store = SqlLinks(session)
    assert store.existing({(a, b), (a, c)}) == {(a, b)}
    loop = [LinkRow(c, a, "0x3", "aggregation", 3, None)]
    again = [LinkRow(a, b, "0x4", "aggregation", 3, None)]
    fine = [LinkRow(a, c, "0x5", "aggregation", 3, None)]
    twice = [LinkRow(a, c, "0x6", "aggregation", 3, None)]
    verdicts = check_new_links(store, [loop, again, fine, twice])
    assert [v.code if v else None for v in verdicts] == [
        "genealogy_cycle",
        "duplicate_link",
        None,
        "duplicate_link",
    ]
