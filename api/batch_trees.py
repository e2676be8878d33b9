"""Merkle trees of anchored batches, derived from the store when a receipt asks for one.

A batch's leaves are the records whose ``batch_id`` is that batch (the anchorer sets it in the
transaction that confirms the batch, and it never changes after). ``StandardMerkleTree`` sorts
its leaves by hash, so the order the rows come back in does not matter: the same set gives the
same tree, root and proofs as the tree the anchorer built at claim time. Before migration 0017
each record stored its own proof; the derived one is byte-for-byte the same
(tests/api/test_batch_trees.py).

Trees are cached per process, keyed by root (a root names its leaf set), in an LRU bounded by
the total leaves held, so a burst of receipt requests for one batch builds its tree once.
Every derived tree is checked against the stored root before it is cached or used: a store
whose rows no longer reproduce an anchored root must not serve proofs that do not verify.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.store.models import Batch, Record
from ledger.merkle import StandardMerkleTree

# Leaves held by the cache, all trees together. A 1,024-leaf tree (the default batch cap) holds
# ~2,000 node hashes plus its values and index, ~250 KB in CPython (tracemalloc), so 262,144
# leaves is ~64 MB: 256 default batches, and the most recent tree whatever the cap
# (batch_max_leaves goes up to 65,536).
MAX_CACHED_LEAVES = 262_144

_lock = threading.Lock()
_trees: OrderedDict[str, StandardMerkleTree] = OrderedDict()
_held = 0  # leaves in _trees


class BatchLeavesMismatch(RuntimeError):
    """The records of a batch do not hash to the batch's stored root (a damaged store)."""

    def __init__(self, batch_id: int, expected: str, got: str, leaves: int) -> None:
        super().__init__(
            f"the {leaves} records of batch {batch_id} build root {got}, the batch says "
            f"{expected}: refusing to derive proofs from them"
        )
        self.batch_id, self.expected, self.got = batch_id, expected, got


def tree_of(hex_hashes: list[str]) -> StandardMerkleTree:
    """The batch tree over 0x-hex struct hashes (any order: the tree sorts its leaves)."""
    return StandardMerkleTree.of([bytes.fromhex(h[2:]) for h in hex_hashes])


def hex_proof(tree: StandardMerkleTree, hex_hash: str) -> list[str]:
    return ["0x" + p.hex() for p in tree.proof(bytes.fromhex(hex_hash[2:]))]


def batch_leaves(session: Session, batch_id: int) -> list[str]:
    return list(session.scalars(select(Record.struct_hash).where(Record.batch_id == batch_id)))


def checked_tree(batch_id: int, root: str, leaves: list[str]) -> StandardMerkleTree:
    """The tree over ``leaves``, which must hash to ``root``."""
    if not leaves:
        raise BatchLeavesMismatch(batch_id, root, "(no records)", 0)
    tree = tree_of(leaves)
    got = "0x" + tree.root.hex()
    if got != root.lower():
        raise BatchLeavesMismatch(batch_id, root, got, len(leaves))
    return tree


def _cached(root: str) -> StandardMerkleTree | None:
    with _lock:
        tree = _trees.get(root)
        if tree is not None:
            _trees.move_to_end(root)
        return tree


def _keep(root: str, tree: StandardMerkleTree) -> None:
    global _held
    with _lock:
        if root in _trees:
            return
        _trees[root] = tree
        _held += len(tree)
        while _held > MAX_CACHED_LEAVES and len(_trees) > 1:
            _, old = _trees.popitem(last=False)
            _held -= len(old)


def batch_tree(
    ctx: ServiceContext, batch: Batch, session: Session | None = None
) -> StandardMerkleTree:
    """The tree of a batch, from the cache or built from its records (one query, in
    ``session`` when the caller has one open, else in a read-only session: on SQLite an
    ordinary transaction takes the one write lock, a read-only one does not)."""
    root = batch.root.lower()
    tree = _cached(root)
    if tree is None:
        if session is not None:
            leaves = batch_leaves(session, batch.id)
        else:
            with ctx.read_sessions() as s:
                leaves = batch_leaves(s, batch.id)
        tree = checked_tree(batch.id, root, leaves)
        _keep(root, tree)
    return tree


def record_proof(
    ctx: ServiceContext, batch: Batch, struct_hash: str, session: Session | None = None
) -> list[str]:
    """The Merkle proof of one record of a batch, as a receipt carries it (0x-hex, leaf up)."""
    return hex_proof(batch_tree(ctx, batch, session), struct_hash)


def clear_cache() -> None:
    """Forget every cached tree (tests that rewrite a store behind the service's back)."""
    global _held
    with _lock:
        _trees.clear()
        _held = 0
