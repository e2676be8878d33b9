"""The log's compact range (api.tlog_service.Frontier), from which each new checkpoint's root
is computed, against the RFC 6962 tree (ledger.tlog.LogTree) that proofs are made from: a
checkpoint whose root the proofs do not reach would be a log that cannot be verified."""

from __future__ import annotations

import hashlib
import random

from api.tlog_service import Frontier
from ledger.tlog import LogTree
from ledger.tlog.tree import leaf_hash


def _leaves(n: int, seed: int) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(f"{seed}:{i}".encode()).digest()) for i in range(n)]


def test_every_size_up_to_300_has_the_trees_root() -> None:
    leaves = _leaves(300, 1)
    tree, frontier = LogTree(), Frontier()
    assert frontier.root() == tree.root()  # the empty log
    for leaf in leaves:
        tree.append(leaf)
        frontier.push(leaf)
        assert frontier.size == len(tree)
        assert frontier.root() == tree.root(), len(tree)


def test_a_copy_grown_by_a_batch_leaves_the_original_as_it_was() -> None:
    """What append_and_sign does: a copy takes the new batch, the original (the committed log)
    is untouched, whatever sizes the batches fall on (powers of two and around them)."""
    rng = random.Random(7)
    tree, frontier = LogTree(), Frontier()
    for batch in [1, 1, 2, 4, 7, 64, 63, 65, 1024, 3, rng.randrange(1, 2000)]:
        before = frontier.root()
        new = _leaves(batch, len(tree))
        grown = frontier.copy()
        for leaf in new:
            grown.push(leaf)
        tree.extend(new)
        assert grown.root() == tree.root() and grown.size == len(tree)
        assert frontier.root() == tree.root(len(tree) - batch) == before
        frontier = grown
