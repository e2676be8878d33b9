"""The key agreement and mask generator our SecAgg+ runs on, in place of Flower 1.41's.

Flower's SecAgg+ code (client mod and server workflow) is used as it is; two of the primitives
it imports by name are replaced, on both sides, by :func:`use_secagg_primitives` (together with
the Shamir arithmetic of :mod:`federated.shamir`).

Masks: a full-strength seed, a cryptographic generator.
    Every supplier hides its update under a private mask and one pairwise mask per neighbour,
    each expanded from a seed (a random 32-byte seed, or a key agreed with the neighbour).
    Flower's ``secaggplus_utils.pseudo_rand_gen`` folds the seed into 32 bits (XOR of its
    4-byte words) and expands it with numpy's Mersenne Twister. So each mask is one of only
    2**32. A server that colludes with some of a supplier's neighbours (the threat SecAgg+ is
    built to withstand, up to its threshold) is left with the masks of the others; when one
    honest neighbour remains, trying its 2**32 possible seeds against the masked vector (a
    wrong seed leaves uniform noise, the right one a vector of small quantised weights) gives
    that supplier's update away.
    :func:`pseudo_rand_gen` keys ChaCha20 with SHA-256 of the whole seed (domain-separated), so
    each mask has the seed's full strength, and draws 64 bits per element, reduced modulo the
    range: exact for the power-of-two ranges SecAgg+ uses (2**32 here), bias below
    range / 2**64 otherwise. It is also faster: ~10 us for a model's masks, against ~0.13 ms.

Key agreement: NIST P-256 instead of P-384.
    Each supplier makes two key pairs per round (one to encrypt the key shares it sends its
    neighbours, one for the pairwise masks), runs one Diffie-Hellman agreement per neighbour
    with each, and reloads its PEM private key for every agreement. Flower makes them on P-384
    (``flwr.supercore.primitives.asymmetric.generate_key_pairs``). Measured here
    (cryptography on OpenSSL, one core): key generation 0.112 ms on P-384 against 0.009 ms on
    P-256, one agreement 0.257 against 0.033 ms, one PEM load 0.137 against 0.013 ms; with
    eight suppliers ~5.5 ms of each supplier's round on P-384 and ~0.6 ms on P-256.
    P-256 gives 128-bit security. P-384's 192 bits bought nothing: the secrets the masks hang on
    (each supplier's mask seed and mask key) travel to its neighbours as Shamir shares under
    Fernet, which encrypts with AES-128, so the protocol never had more than 128 bits whatever
    the curve. P-256 is also the curve of the SecAgg authors' own implementation (Bonawitz et
    al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
    section 7). Only generation changes: serialisation, the agreement and the server's
    rebuilding of a dropped supplier's key read the curve from the key itself.

Both ends must use the same generator, or unmasking yields noise: the ClientApp module applies
these when it is imported (simulation workers and deployment ClientApp processes alike) and
:func:`federated.secagg.secagg_round` before every round. Neither is compatible with a stock
Flower SecAgg+ peer, which qledger never has: both apps are ours.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from federated.shamir import CLIENT_MOD, SERVER_WORKFLOW, use_fast_shamir

CURVE = ec.SECP256R1
# Separates mask keys from any other use of the same seed (the agreed keys also key Fernet).
MASK_DOMAIN = b"qledger/secagg+/mask/v1\x00"
# Each mask seed keys one stream, so a fixed nonce never repeats under a key.
_NONCE = bytes(16)  # cryptography's ChaCha20 nonce: 4-byte counter + 12-byte nonce
_WORD = 8  # bytes drawn per mask element


def generate_key_pairs() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    """A fresh P-256 key pair, in the shape Flower's ``generate_key_pairs`` returns."""
    private_key = ec.generate_private_key(CURVE())
    return private_key, private_key.public_key()


def pseudo_rand_gen(
    seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """Masks of the given shapes, uniform in ``[0, num_range)``, determined by all of ``seed``.

    Same signature and output types as Flower's ``pseudo_rand_gen`` (int64 arrays, a 0-d array
    for an empty shape).
    """
    if num_range < 1:
        raise ValueError(f"num_range must be positive, got {num_range}")
    key = hashlib.sha256(MASK_DOMAIN + seed).digest()
    sizes = [math.prod(shape) for shape in dimensions_list]
    stream = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    words = np.frombuffer(stream.update(bytes(_WORD * sum(sizes))), dtype="<u8")
    values = (words % np.uint64(num_range)).astype(np.int64)
    masks: list[np.ndarray] = []
    offset = 0
    for shape, size in zip(dimensions_list, sizes, strict=True):
        masks.append(values[offset : offset + size].reshape(shape))
        offset += size
    return masks


def use_secagg_primitives() -> None:
    """Point Flower's SecAgg+ client mod and server workflow at our primitives (idempotent).

    Both import the functions by name, so the names are replaced in those two modules only
    (looked up by name: see :func:`federated.shamir.use_fast_shamir`).
    """
    use_fast_shamir()
    # Any: these are Flower's module globals, replaced from outside their module on purpose.
    client: Any = importlib.import_module(CLIENT_MOD)
    server_workflow: Any = importlib.import_module(SERVER_WORKFLOW)
    client.generate_key_pairs = generate_key_pairs
    client.pseudo_rand_gen = pseudo_rand_gen
    server_workflow.pseudo_rand_gen = pseudo_rand_gen
