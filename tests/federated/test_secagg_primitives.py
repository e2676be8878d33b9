"""The SecAgg+ masks and key agreement that replace Flower's (federated/secagg_primitives)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower_prg
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    private_key_to_bytes,
    public_key_to_bytes,
)

from federated import secagg_primitives
from federated.secagg_primitives import generate_key_pairs, pseudo_rand_gen

# A model's shapes as the SecAgg+ code hands them over, a 0-d entry included.
SHAPES = [(32, 10), (32,), (16, 32), (16,), (1, 16), (1,), ()]
MOD_RANGE = 1 << 32  # SecAgg+'s default modulus


def test_masks_have_flowers_shapes_and_types_and_are_reproducible() -> None:
    seed = bytes(range(32))
    ours = pseudo_rand_gen(seed, MOD_RANGE, SHAPES)
    theirs = flower_prg(seed, MOD_RANGE, SHAPES)
    assert [m.shape for m in ours] == [m.shape for m in theirs] == SHAPES
    assert [m.dtype for m in ours] == [m.dtype for m in theirs]
    again = pseudo_rand_gen(seed, MOD_RANGE, SHAPES)
    assert all(np.array_equal(a, b) for a, b in zip(ours, again, strict=True))
    assert all(((m >= 0) & (m < MOD_RANGE)).all() for m in ours)


def test_every_byte_of_the_seed_changes_the_masks() -> None:
    """Flower folds the seed into 32 bits; seeds with equal folds give it equal masks."""
    seed = bytes(range(32))
    swapped = seed[4:8] + seed[0:4] + seed[8:]  # same XOR of 4-byte words
    flipped_twice = bytes([seed[0] ^ 1]) + seed[1:4] + bytes([seed[4] ^ 1]) + seed[5:]
    for other in (swapped, flipped_twice):
        theirs = [flower_prg(s, MOD_RANGE, SHAPES) for s in (seed, other)]
        assert all(np.array_equal(a, b) for a, b in zip(*theirs, strict=True))
        ours = [pseudo_rand_gen(s, MOD_RANGE, SHAPES) for s in (seed, other)]
        assert not np.array_equal(ours[0][0], ours[1][0])


def test_masks_are_uniform_over_the_range() -> None:
    seeds = [s.to_bytes(32, "big") for s in range(20)]
    masks = np.concatenate([pseudo_rand_gen(seed, 16, [(5000,)])[0] for seed in seeds])
    counts = np.bincount(masks, minlength=16)
    expected = masks.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 15 degrees of freedom: p ~ 1e-4
    assert masks.max() == 15


def test_masks_cancel_in_a_secagg_sum() -> None:
    """What the protocol needs: pairwise masks from the same agreed key cancel in the sum."""
    (sk_a, pk_a), (sk_b, pk_b) = generate_key_pairs(), generate_key_pairs()
    key_ab, key_ba = generate_shared_key(sk_a, pk_b), generate_shared_key(sk_b, pk_a)
    assert key_ab == key_ba
    x_a, x_b = np.arange(10, dtype=np.int64), np.arange(10, 20, dtype=np.int64)
    (mask,) = pseudo_rand_gen(key_ab, MOD_RANGE, [(10,)])
    (same,) = pseudo_rand_gen(key_ba, MOD_RANGE, [(10,)])
    total = ((x_a + mask) + (x_b - same)) % MOD_RANGE
    assert np.array_equal(total, x_a + x_b)


def test_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError, match="num_range must be positive"):
        pseudo_rand_gen(b"seed", 0, [(3,)])


def test_p256_keys_go_through_flowers_serialisation_and_encryption() -> None:
    sk, pk = generate_key_pairs()
    assert isinstance(sk.curve, ec.SECP256R1)
    # The server rebuilds a dropped supplier's key from PEM bytes; the curve travels with it.
    rebuilt = bytes_to_private_key(private_key_to_bytes(sk))
    other_sk, other_pk = generate_key_pairs()
    peer = bytes_to_public_key(public_key_to_bytes(other_pk))
    key = generate_shared_key(rebuilt, peer)
    assert key == generate_shared_key(other_sk, pk)
    assert decrypt(key, encrypt(key, b"share")) == b"share"


def test_use_secagg_primitives_reaches_the_names_flower_secagg_calls() -> None:
    """What counts is the name each SecAgg+ step looks up at run time, in its own globals."""
    from flwr.client.mod import secaggplus_mod
    from flwr.server.workflow import SecAggPlusWorkflow

    secagg_primitives.use_secagg_primitives()
    client = secaggplus_mod.__globals__
    setup, collect = client["_setup"], client["_collect_masked_vectors"]
    assert setup.__globals__["generate_key_pairs"] is generate_key_pairs
    assert "generate_key_pairs" in setup.__code__.co_names
    assert collect.__globals__["pseudo_rand_gen"] is pseudo_rand_gen
    assert "pseudo_rand_gen" in collect.__code__.co_names
    unmask = SecAggPlusWorkflow.unmask_stage
    assert unmask.__globals__["pseudo_rand_gen"] is pseudo_rand_gen
    assert "pseudo_rand_gen" in unmask.__code__.co_names
