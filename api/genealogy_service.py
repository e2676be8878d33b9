"""Genealogy in the service (issue 19): the intake hook that derives and checks links, and the
containment answers the API, the dashboard and the CLI share."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import ApiError
from api.store.genealogy import SqlLinks, anchoring
from ledger.records import QualityRecord, Role
from traceability.genealogy import (
    GENEALOGY_KINDS,
    Direction,
    Filters,
    LinkRow,
    Node,
    WalkTooLarge,
    check_new_links,
    derive_links,
    key_node,
    node_key,
    walk,
)

# At most this many suspect lots in one scope request, nodes and records listed in one answer,
# and links followed by one walk (a resin lot in every vehicle of a fleet is ~10^6 links: the
# answer then asks for a narrower question rather than holding a worker for seconds).
MAX_SUSPECTS = 100
MAX_LIST = 10_000
MAX_WALK_LINKS = 500_000
# Key of the PostgreSQL advisory lock that serialises genealogy writers (an arbitrary constant,
# ASCII "qlgenea").
GENEALOGY_LOCK_KEY = 0x716C67656E6561
# Who sees any genealogy: purchasing and audit. A supplier asks only about its own lots.
READERS = (Role.OEM, Role.AUDITOR, Role.ADMIN)


def genealogy_links(
    session: Session, items: list[tuple[int, str, QualityRecord, dict[str, Any]]]
) -> tuple[dict[int, ApiError], list[LinkRow]]:
    """For the new records of one intake transaction: which genealogy records are refused
    (by index) and the links of the others, to be inserted with them."""
    stated = [
        (index, struct_hash, r, payload)
        for index, struct_hash, r, payload in items
        if r.kind in GENEALOGY_KINDS
    ]
    if not stated:
        return {}, []
    if session.get_bind().dialect.name == "postgresql":
        # Two workers' transactions could each add half of a loop, each seeing no loop (READ
        # COMMITTED): genealogy writers take turns. Released with the transaction. (SQLite's
        # BEGIN IMMEDIATE already admits one writer; a repeated link is also caught by the
        # unique key, and the intake retries and reclassifies it.)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GENEALOGY_LOCK_KEY})
    per_record = [
        derive_links(
            kind=r.kind,
            subject=r.subject,
            part_number=r.partNumber,
            lot_id=r.lotId,
            event_time=r.eventTime,
            payload=payload,
            struct_hash=struct_hash,
        )
        for _, struct_hash, r, payload in stated
    ]
    refused: dict[int, ApiError] = {}
    links: list[LinkRow] = []
    verdicts = check_new_links(SqlLinks(session), per_record)
    for (index, *_), rows, verdict in zip(stated, per_record, verdicts, strict=True):
        if verdict is None:
            links.extend(rows)
            continue
        child, parent = verdict.link
        refused[index] = ApiError(
            409,
            verdict.code,
            verdict.detail,
            expected="a link not yet recorded"
            if verdict.code == "duplicate_link"
            else "an acyclic genealogy",
            got={"child": _node_json(key_node(child)), "parent": _node_json(key_node(parent))},
        )
    return refused, links


def _node_json(node: Node) -> dict[str, str]:
    return {"maker": node[0], "partNumber": node[1], "lotId": node[2]}


def may_trace(user: Principal, roots: list[Node]) -> None:
    """Purchasing and auditors trace anything; a supplier only from lots it made (where its
    lots went, what its products contain), so it learns nothing about a competitor's."""
    if user.role in READERS:
        return
    if user.role is Role.SUPPLIER:
        foreign = [n for n in roots if n[0] != user.org_id]
        if not foreign:
            return
        raise ApiError(
            403,
            "forbidden_trace",
            "a supplier traces only lots it made",
            expected=user.org_id,
            got=foreign[0][0],
        )
    raise ApiError(
        403,
        "forbidden_role",
        "genealogy is for purchasing, auditors and the makers of the lots",
        expected=["OEM", "AUDITOR", "ADMIN", "SUPPLIER"],
        got=user.role.value,
    )


@dataclass(frozen=True)
class TraceQuery:
    roots: list[Node]
    direction: Direction
    filters: Filters = field(default_factory=Filters)
    limit: int = 1000


def trace(session: Session, query: TraceQuery) -> dict[str, Any]:
    """Where-used / where-from / recall scope as JSON: the matched nodes with their level and
    the records each was reached through, per-level counts (by part number too), and every
    record the answer rests on with its anchoring state, so each can be fetched with its
    receipt and verified offline (``qledger verify``)."""
    try:
        w = walk(
            SqlLinks(session),
            [node_key(n) for n in query.roots],
            query.direction,
            query.filters,
            max_links=MAX_WALK_LINKS,
        )
    except WalkTooLarge as exc:
        raise ApiError(
            422,
            "trace_too_large",
            "the genealogy below these lots is too large for one answer; ask about fewer lots",
            expected=f"<= {exc.max_links} links",
            got=f"> {exc.max_links}",
        ) from exc
    via: dict[str, list[str]] = defaultdict(list)
    for row in w.links:
        far = row.parent if query.direction == "where-used" else row.child
        if far in w.matched and row.struct_hash not in via[far]:
            via[far].append(row.struct_hash)
    ordered = sorted(w.matched, key=lambda k: (w.depth[k], k))
    shown = ordered[: query.limit]
    hashes = w.records()
    listed = hashes[: query.limit]
    status = anchoring(session, listed)
    parts: dict[int, Counter[str]] = defaultdict(Counter)
    for k in w.matched:
        parts[w.depth[k]][key_node(k)[1]] += 1
    return {
        "direction": query.direction,
        "roots": [_node_json(n) for n in query.roots],
        "filters": {
            "since": query.filters.since,
            "until": query.filters.until,
            "site": query.filters.site,
        },
        "total": len(w.matched),
        "levels": [
            {"depth": d, "count": c, "parts": dict(sorted(parts[d].items()))} for d, c in w.levels()
        ],
        "nodes": [{**_node_json(key_node(k)), "depth": w.depth[k], "via": via[k]} for k in shown],
        "records": [status[h] for h in listed if h in status],
        "recordCount": len(hashes),
        "truncated": len(ordered) > len(shown) or len(hashes) > len(listed),
        "depthLimited": w.depth_limited,
    }


# An as-built tree page shows at most this many rows: a vehicle's full tree is a few hundred
# lots; a shared lot reached twice (a diamond) is shown under each parent, so rows can exceed
# nodes and the bound keeps a pathological graph from rendering megabytes.
MAX_TREE_ROWS = 2000


@dataclass(frozen=True)
class TreeRow:
    depth: int
    node: Node
    via: str | None  # struct hash of the record linking it to the row above
    site: str | None
    event_time: int | None
    repeated: bool  # already shown above (its subtree is not repeated)


def as_built_tree(
    session: Session, root: Node, direction: Direction = "where-from"
) -> tuple[list[TreeRow], bool]:
    """The as-built part tree under ``root`` (or the product tree above it for where-used), in
    display order (depth first), and whether it was cut at :data:`MAX_TREE_ROWS`."""
    w = walk(SqlLinks(session), [node_key(root)], direction, max_links=MAX_WALK_LINKS)
    below: dict[str, list[LinkRow]] = defaultdict(list)
    for row in w.links:
        near, far = (
            (row.parent, row.child) if direction == "where-from" else (row.child, row.parent)
        )
        if far != near:
            below[near].append(row)
    rows: list[TreeRow] = []
    shown: set[str] = set()
    cut = False

    def visit(key: str, depth: int) -> None:
        nonlocal cut
        for link in sorted(below.get(key, []), key=lambda r: (r.child, r.parent)):
            far = link.child if direction == "where-from" else link.parent
            if len(rows) >= MAX_TREE_ROWS:
                cut = True
                return
            repeated = far in shown
            rows.append(
                TreeRow(
                    depth, key_node(far), link.struct_hash, link.site, link.event_time, repeated
                )
            )
            if not repeated:
                shown.add(far)
                visit(far, depth + 1)

    visit(node_key(root), 1)
    return rows, cut or w.depth_limited
