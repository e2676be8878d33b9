import os

import pytest

from ledger.errors import MerkleError
from ledger.merkle import StandardMerkleTree, leaf_hash, process_proof, verify_proof
from tests.helpers import run_node


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1025])
def test_same_root_and_valid_proofs_as_openzeppelin_merkle_tree(n: int) -> None:
    values = [os.urandom(32) for _ in range(n)]
    tree = StandardMerkleTree.of(values)
    proofs = {"0x" + v.hex(): ["0x" + p.hex() for p in tree.proof(v)] for v in values[:50]}
    out = run_node(
        "merkle.js",
        {
            "values": ["0x" + v.hex() for v in values],
            "root": "0x" + tree.root.hex(),
            "proofs": proofs,
        },
    )
    assert out["root"] == "0x" + tree.root.hex()
    assert out["verified"] == [True] * len(proofs)


def test_single_leaf_tree_has_empty_proof() -> None:
    value = os.urandom(32)
    tree = StandardMerkleTree.of([value])
    assert tree.root == leaf_hash(value)
    assert tree.proof(value) == []


def test_proofs_fail_for_other_values_and_flipped_siblings() -> None:
    values = [os.urandom(32) for _ in range(10)]
    tree = StandardMerkleTree.of(values)
    proof = tree.proof(values[3])
    assert verify_proof(tree.root, values[3], proof)
    assert not verify_proof(tree.root, values[4], proof)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert process_proof(leaf_hash(values[3]), bad) != tree.root


def test_errors_are_typed() -> None:
    with pytest.raises(MerkleError, match="at least one leaf"):
        StandardMerkleTree.of([])
    value = os.urandom(32)
    with pytest.raises(MerkleError, match="duplicate"):
        StandardMerkleTree.of([value, value])
    with pytest.raises(MerkleError, match="not a leaf"):
        StandardMerkleTree.of([value]).proof(os.urandom(32))
    with pytest.raises(MerkleError, match="32-byte"):
        leaf_hash(b"short")
