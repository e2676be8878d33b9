"""OpenZeppelin ``StandardMerkleTree`` (leaf encoding ``["bytes32"]``), byte-for-byte.

Layout follows @openzeppelin/merkle-tree 1.0.x: leaves are double-hashed
(``keccak256(keccak256(abi.encode(structHash)))``), sorted, placed at the end of an array-backed
complete binary tree in reverse order, and inner nodes hash their children as a sorted pair. The
same root therefore comes out of ``StandardMerkleTree.of(values, ["bytes32"])`` in JavaScript,
and proofs verify with ``MerkleProof.verify`` on chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger._hash import keccak
from ledger.errors import MerkleError


def leaf_hash(value: bytes) -> bytes:
    """StandardMerkleTree leaf of one ``bytes32`` value (abi.encode of bytes32 is the value)."""
    if len(value) != 32:
        raise MerkleError("leaf values are 32-byte struct hashes", expected=32, got=len(value))
    return keccak(keccak(value))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a < b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Fold a proof up from a leaf hash, exactly as OpenZeppelin ``MerkleProof.processProof``."""
    computed = leaf
    for sibling in proof:
        computed = hash_pair(computed, sibling)
    return computed


def verify_proof(root: bytes, value: bytes, proof: Sequence[bytes]) -> bool:
    return process_proof(leaf_hash(value), proof) == root


@dataclass
class StandardMerkleTree:
    """An immutable tree over 32-byte values; build with :meth:`of`."""

    tree: list[bytes]
    values: list[bytes]
    _tree_index: dict[bytes, int] = field(repr=False)

    @classmethod
    def of(cls, values: Sequence[bytes]) -> StandardMerkleTree:
        if not values:
            raise MerkleError("a Merkle tree needs at least one leaf")
        hashed = sorted((leaf_hash(v), i) for i, v in enumerate(values))
        n = len(hashed)
        size = 2 * n - 1
        tree: list[bytes] = [b""] * size
        for position, (h, _) in enumerate(hashed):
            tree[size - 1 - position] = h
        for i in range(size - 1 - n, -1, -1):
            left, right = tree[2 * i + 1], tree[2 * i + 2]
            tree[i] = keccak(left + right if left < right else right + left)
        tree_index: dict[bytes, int] = {}
        for position, (_, value_index) in enumerate(hashed):
            value = bytes(values[value_index])
            if value in tree_index:
                raise MerkleError("duplicate leaf value", got="0x" + value.hex())
            tree_index[value] = size - 1 - position
        return cls(tree=tree, values=[bytes(v) for v in values], _tree_index=tree_index)

    @property
    def root(self) -> bytes:
        return self.tree[0]

    def __len__(self) -> int:
        return len(self.values)

    def proof(self, value: bytes) -> list[bytes]:
        """Sibling hashes from the value's leaf up to (not including) the root."""
        try:
            index = self._tree_index[bytes(value)]
        except KeyError:
            raise MerkleError("value is not a leaf of this tree", got="0x" + value.hex()) from None
        proof = []
        while index > 0:
            proof.append(self.tree[index + 1 if index % 2 else index - 1])
            index = (index - 1) // 2
        return proof

    def all_proofs(self) -> dict[bytes, list[bytes]]:
        return {value: self.proof(value) for value in self.values}
