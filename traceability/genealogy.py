"""Part genealogy (issue 19): as-built links from signed aggregation/transformation records,
the rules a new link must keep (no cycle, no link twice), and the containment queries.

A node is one lot or serial of one part of one maker, ``(maker, partNumber, lotId)``; a link
says "child went into parent" and rests on the signed record that said so. Queries walk the
links level by level (breadth first, one indexed ``IN`` query per level) through a
:class:`LinkStore` that the service implements over its database; the walk keeps each node's
shortest distance, so a diamond (one lot reaching a vehicle through two modules) is counted once
and its level is well defined, which a recursive SQL CTE carrying a depth column could not do
without enumerating every path.

Filters (time window, site) select which reached nodes an answer counts, not which links are
followed: a module built at a supplier's site still leads to the vehicles built at the OEM plant
the filter names. A reached node passes when some link the walk followed to it has its event
time in the window and its site equal to the filter's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from ledger.records import (
    AggregationPayload,
    LotRef,
    RecordKind,
    SignedRecord,
    TransformationPayload,
    parse_payload,
)

Node = tuple[str, str, str]  # (maker, partNumber, lotId)
Direction = Literal["where-used", "where-from"]

# A node's key in the store: ID_PATTERN allows "/" (and ":", "#") inside identifiers but not
# "|", so the key splits back unambiguously.
SEP = "|"
NODE_KEY_MAX = 3 * 64 + 2
# Deeper than any bill of materials (vehicles are 5-8 tiers deep); a walk stops there and says so.
MAX_DEPTH = 32
GENEALOGY_KINDS = frozenset({RecordKind.AGGREGATION, RecordKind.TRANSFORMATION})


def node_key(node: Node) -> str:
    return SEP.join(node)


def key_node(key: str) -> Node:
    maker, part, lot = key.split(SEP)
    return (maker, part, lot)


class LinkRow(NamedTuple):
    """One stored link (child went into parent) and the record it rests on."""

    child: str
    parent: str
    struct_hash: str
    kind: str
    event_time: int
    site: str | None


class LinkStore(Protocol):
    """What the genealogy needs of a store (api/store/genealogy.py implements it in SQL)."""

    def up(self, children: Collection[str]) -> list[LinkRow]:
        """Every link whose child is one of ``children``."""
        ...

    def down(self, parents: Collection[str]) -> list[LinkRow]:
        """Every link whose parent is one of ``parents``."""
        ...

    def existing(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (child, parent) pairs are already linked."""
        ...


# -- links of a record ----------------------------------------------------------------------


def _ref(ref: LotRef) -> str:
    return node_key(ref.node)


def derive_links(
    *,
    kind: RecordKind,
    subject: str,
    part_number: str,
    lot_id: str,
    event_time: int,
    payload: dict[str, Any],
    struct_hash: str,
) -> list[LinkRow]:
    """The links a genealogy record states (none for any other kind).

    Aggregation: each child into the record's own node. Transformation: each input into each
    output (EPCIS 2.0: the inputs went into all outputs). The payload was validated at intake;
    parsing it again raises ``InvalidRecord`` for anything else.
    """
    if kind not in GENEALOGY_KINDS:
        return []
    parsed = parse_payload(kind, payload)
    if isinstance(parsed, AggregationPayload):
        parent = node_key((subject, part_number, lot_id))
        return [
            LinkRow(_ref(c), parent, struct_hash, kind.value, event_time, parsed.bizLocation)
            for c in parsed.childEPCs
        ]
    assert isinstance(parsed, TransformationPayload)
    return [
        LinkRow(_ref(i), _ref(o), struct_hash, kind.value, event_time, parsed.bizLocation)
        for o in parsed.outputs
        for i in parsed.inputs
    ]


# -- rules for new links --------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    code: Literal["genealogy_cycle", "duplicate_link"]
    detail: str
    link: tuple[str, str]  # (child, parent) keys


@dataclass
class _UpCache:
    """Parents of nodes, from the store once per node, plus the links accepted so far."""

    store: LinkStore
    known: dict[str, list[str]] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)

    def load(self, nodes: Iterable[str]) -> None:
        missing = {n for n in nodes if n not in self.known}
        if not missing:
            return
        for n in missing:
            self.known[n] = []
        for row in self.store.up(missing):
            self.known[row.child].append(row.parent)

    def parents(self, node: str) -> list[str]:
        return self.known[node] + self.pending.get(node, [])

    def reaches(self, starts: Collection[str], targets: Collection[str]) -> str | None:
        """A target that lies downstream of (contains) one of ``starts``, if any."""
        wanted = set(targets)
        seen = set(starts)
        frontier = list(starts)
        while frontier:
            self.load(frontier)
            nxt: list[str] = []
            for node in frontier:
                for parent in self.parents(node):
                    if parent in wanted:
                        return parent
                    if parent not in seen:
                        seen.add(parent)
                        nxt.append(parent)
            frontier = nxt
        return None


def check_new_links(store: LinkStore, batches: Sequence[list[LinkRow]]) -> list[Refusal | None]:
    """For each record's links, in order: ``None`` if they may be stored, else why not.

    A record is refused whole (its links are one signed statement): ``duplicate_link`` if one
    of its links is already stored or was stated by an earlier record of the same batch,
    ``genealogy_cycle`` if one of its children already contains one of its parents (directly
    or through any depth), counting the links accepted earlier in the batch.
    """
    pairs = {(r.child, r.parent) for links in batches for r in links}
    stored = store.existing(pairs) if pairs else set()
    cache = _UpCache(store)
    cache.load({r.parent for links in batches for r in links})
    accepted: set[tuple[str, str]] = set()
    out: list[Refusal | None] = []
    for links in batches:
        refusal = _refusal(links, stored, accepted, cache)
        out.append(refusal)
        if refusal is None:
            for r in links:
                accepted.add((r.child, r.parent))
                cache.pending.setdefault(r.child, []).append(r.parent)
    return out


def _refusal(
    links: list[LinkRow],
    stored: set[tuple[str, str]],
    accepted: set[tuple[str, str]],
    cache: _UpCache,
) -> Refusal | None:
    if not links:
        return None
    for r in links:
        pair = (r.child, r.parent)
        if pair in stored or pair in accepted:
            where = "already recorded" if pair in stored else "stated twice in this batch"
            return Refusal(
                "duplicate_link", f"{_show(r.child)} -> {_show(r.parent)} is {where}", pair
            )
    parents = {r.parent for r in links}
    children = {r.child for r in links}
    hit = cache.reaches(parents, children)
    if hit is not None:
        parent = next(r.parent for r in links if r.child == hit)
        return Refusal(
            "genealogy_cycle",
            f"{_show(hit)} already contains {_show(parent)}: linking it into that would close "
            "a loop",
            (hit, parent),
        )
    return None


def _show(key: str) -> str:
    return "/".join(key_node(key))


# -- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    since: int | None = None  # event time, Unix seconds, inclusive
    until: int | None = None
    site: str | None = None

    def match(self, row: LinkRow) -> bool:
        if self.since is not None and row.event_time < self.since:
            return False
        if self.until is not None and row.event_time > self.until:
            return False
        return self.site is None or row.site == self.site


@dataclass
class Walk:
    """What a walk from ``roots`` reached: each node's shortest depth, the nodes the filters
    keep, and every link it followed (the records the answer rests on)."""

    direction: Direction
    roots: list[str]
    depth: dict[str, int]
    matched: set[str]
    links: list[LinkRow]
    depth_limited: bool

    def levels(self) -> list[tuple[int, int]]:
        """(depth, how many matched nodes) in depth order."""
        counts = Counter(self.depth[n] for n in self.matched)
        return sorted(counts.items())

    def records(self) -> list[str]:
        """Struct hashes of every record a followed link rests on (first use first)."""
        return list(dict.fromkeys(r.struct_hash for r in self.links))


def walk(
    store: LinkStore,
    roots: Iterable[str],
    direction: Direction,
    filters: Filters = Filters(),
    max_depth: int = MAX_DEPTH,
    max_links: int | None = None,
) -> Walk:
    """Breadth-first walk: ``where-used`` goes child -> parent (every product a lot went into,
    any depth), ``where-from`` parent -> child (every lot a product contains).

    Roots are depth 0 and never reported, even when one root lies downstream of another.
    ``max_links`` bounds the work: a walk that would follow more links raises
    :class:`WalkTooLarge` (the caller answers it, never a partial answer without saying so).
    """
    up = direction == "where-used"
    fetch = store.up if up else store.down
    root_list = list(dict.fromkeys(roots))
    seen = set(root_list)
    depth: dict[str, int] = {}
    matched: set[str] = set()
    links: list[LinkRow] = []
    frontier = root_list
    level = 0
    limited = False
    while frontier:
        if level >= max_depth:
            limited = True
            break
        level += 1
        nxt: list[str] = []
        for row in fetch(frontier):
            far = row.parent if up else row.child
            links.append(row)
            if max_links is not None and len(links) > max_links:
                raise WalkTooLarge(max_links)
            if far not in seen:
                seen.add(far)
                depth[far] = level
                nxt.append(far)
            if far in depth and far not in matched and filters.match(row):
                matched.add(far)
        frontier = nxt
    return Walk(direction, root_list, depth, matched, links, limited)


class WalkTooLarge(Exception):
    def __init__(self, max_links: int) -> None:
        super().__init__(f"the walk follows more than {max_links} links")
        self.max_links = max_links


# -- an in-memory store (tests, the simulator, offline checks) -------------------------------


class MemoryLinks:
    """A :class:`LinkStore` over a list of links, for tests and offline use."""

    def __init__(self, rows: Iterable[LinkRow] = ()) -> None:
        self._up: dict[str, list[LinkRow]] = {}
        self._down: dict[str, list[LinkRow]] = {}
        for row in rows:
            self.add(row)

    def add(self, row: LinkRow) -> None:
        self._up.setdefault(row.child, []).append(row)
        self._down.setdefault(row.parent, []).append(row)

    def up(self, children: Collection[str]) -> list[LinkRow]:
        return [r for c in children for r in self._up.get(c, [])]

    def down(self, parents: Collection[str]) -> list[LinkRow]:
        return [r for p in parents for r in self._down.get(p, [])]

    def existing(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        have = {(r.child, r.parent) for rows in self._up.values() for r in rows}
        return {p for p in pairs if p in have}


def links_of_record(signed: SignedRecord, struct_hash: str) -> list[LinkRow]:
    """The links a signed record states (an auditor rebuilds an answer's graph from the records
    embedded in its receipts, then walks it with :class:`MemoryLinks`)."""
    r = signed.record
    return derive_links(
        kind=r.kind,
        subject=r.subject,
        part_number=r.partNumber,
        lot_id=r.lotId,
        event_time=r.eventTime,
        payload=signed.payload,
        struct_hash=struct_hash,
    )
