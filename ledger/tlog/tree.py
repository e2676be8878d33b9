"""RFC 6962 / RFC 9162 Merkle tree of the transparency log (SHA-256, leaf 0x00, node 0x01).

This tree is not the OpenZeppelin batch tree (``ledger.merkle``): that one is what the chain
checks; this one is what checkpoints commit to, so that anyone with a C2SP/CT tool can check
inclusion and append-only consistency between any two checkpoints.

Proof generation follows RFC 6962 §2.1.1-2.1.2 (PATH and SUBPROOF); verification follows
RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.tlog.errors import ProofError

HASH_SIZE = 32  # SHA-256
LEAF_PREFIX = b"\x00"  # RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 6962 §2.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 §2.1: MTH({}) = SHA-256()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


class LogTree:
    """An append-only list of leaf hashes with root, PATH and SUBPROOF at any past size.

    Hashes of complete, aligned subtrees never change once their last leaf is in, so they are
    cached: after the first proof, each further proof or root costs O(log n) hashes.
    """

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._full: dict[tuple[int, int], bytes] = {}
        self.extend(leaf_hashes)

    def __len__(self) -> int:
        return len(self._leaves)

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, got {len(leaf)}")
        self._leaves.append(leaf)

    def extend(self, leaves: Sequence[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def truncate(self, size: int) -> None:
        """Forget leaves from ``size`` on (and the cached subtrees that reach them)."""
        del self._leaves[size:]
        self._full = {k: v for k, v in self._full.items() if k[0] + k[1] <= size}

    def leaf(self, index: int) -> bytes:
        return self._leaves[index]

    def _hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end])."""
        n = end - start
        if n == 1:
            return self._leaves[start]
        full = n & (n - 1) == 0 and start % n == 0
        if full and (start, n) in self._full:
            return self._full[(start, n)]
        k = _split(n)
        value = node_hash(self._hash(start, start + k), self._hash(start + k, end))
        if full:
            self._full[(start, n)] = value
        return value

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self._leaves):
            raise ProofError(
                "tree_size", "no such tree size", expected=f"0..{len(self._leaves)}", got=size
            )

    def root(self, size: int | None = None) -> bytes:
        size = len(self._leaves) if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[0:size])."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofError("leaf_index", "leaf index outside the tree", expected=size, got=index)
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start += k
        proof.reverse()  # RFC order: from the leaf's sibling up to the root's child
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(old_size, D[0:new_size])."""
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ProofError(
                "consistency_sizes", "old size above new size", expected=new_size, got=old_size
            )
        if old_size == 0 or old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _subproof(self, m: int, start: int, end: int, whole: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if whole else [self._hash(start, end)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, whole), self._hash(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self._hash(start, start + k)]


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError("hash_size", f"{what} is not a SHA-256 hash", expected=32, got=len(value))


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root an inclusion proof folds to (raises if malformed)."""
    if not 0 <= index < size:
        raise ProofError(
            "inclusion_proof", "leaf index outside the tree", expected=f"< {size}", got=index
        )
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion_proof", "proof is longer than the path", got=len(proof))
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion_proof", "proof is shorter than the path", got=len(proof))
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ``ProofError('inclusion_proof')`` unless ``leaf`` is at ``index`` of the tree of
    ``size`` leaves whose root is ``root``."""
    got = root_from_inclusion(index, size, leaf, proof)
    if got != root:
        raise ProofError(
            "inclusion_proof",
            "proof does not fold to the checkpoint's root",
            expected=root.hex(),
            got=got.hex(),
        )


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2: raise ``ProofError('consistency_proof')`` unless the tree of
    ``new_size`` leaves with ``new_root`` extends the one of ``old_size`` with ``old_root``."""

    def fail(message: str, **kw: object) -> ProofError:
        return ProofError("consistency_proof", message, **kw)

    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    for p in proof:
        _check_hash(p, "proof hash")
    if not 0 <= old_size <= new_size:
        raise fail("the newer checkpoint is smaller", expected=f">= {old_size}", got=new_size)
    if old_size == new_size:
        if proof:
            raise fail("a proof between equal sizes must be empty", got=len(proof))
        if old_root != new_root:
            raise fail(
                "two different roots at one size", expected=old_root.hex(), got=new_root.hex()
            )
        return
    if old_size == 0:
        # Every tree extends the empty one; RFC 9162 proves nothing for it (empty proof).
        if proof:
            raise fail("a proof from the empty tree must be empty", got=len(proof))
        return
    path = list(proof)
    # Step 1: if first is an exact power of 2, prepend first_hash to the proof.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        raise fail("empty proof between different sizes")
    fn, sn = old_size - 1, new_size - 1
    # Step 3: right-shift both while LSB(fn) is set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise fail("proof is longer than needed", got=len(proof))
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise fail("proof is shorter than needed", got=len(proof))
    if fr != old_root:
        raise fail(
            "the proof does not rebuild the older root (history rewritten)",
            expected=old_root.hex(),
            got=fr.hex(),
        )
    if sr != new_root:
        raise fail(
            "the proof does not rebuild the newer root", expected=new_root.hex(), got=sr.hex()
        )
