"""Shamir secret sharing for SecAgg+, the same scheme as Flower's, without its slow arithmetic.

Flower 1.41's SecAgg+ splits and recombines secrets with ``flwr.common.secure_aggregation.
crypto.shamir``: PKCS#7-pad the secret to 16-byte chunks, share each chunk with pycryptodome's
``Shamir`` (GF(2^128), x^128 + x^7 + x^2 + x + 1, no "ssss" diffusion), and lay the shares out
as ``<4-byte little-endian index><16 bytes per chunk>``. pycryptodome multiplies field elements
with a loop that builds a 128-character string per bit, and inverts one element per share per
chunk; Flower adds a new thread pool on every call. Measured (docs/benchmarks.md): 9.7 ms to
recombine one 32-byte seed from 8 shares, ~80 ms of every simulated 8-supplier round, and each
supplier's split of its PEM key (20 chunks) dominates its key-sharing step.

This module computes the same values with plain integer carry-less arithmetic:

- :func:`create_shares` evaluates the same random polynomial per chunk (Horner, the chunk as
  constant term, k-1 random coefficients from the OS) at indices 1..n, in the same layout;
- :func:`combine_shares` interpolates at zero with Lagrange coefficients that depend only on
  the share indices, so they are computed once per index set and cached.

Timing: Python integers are not constant-time, and neither is pycryptodome's masked loop in
practice. Here the split's multiplications loop over the public share index, not the secret;
the recombination runs on the server, which is meant to learn the seeds it recombines.

Both are byte-for-byte interchangeable with Flower's (tests/federated/test_fl_units.py checks
shares made here against pycryptodome's given the same random bytes, and recombination both
ways). :func:`use_fast_shamir` points Flower's SecAgg+ client mod and server workflow at them.
"""

from __future__ import annotations

import functools
import importlib
import secrets
from collections.abc import Callable
from typing import Any

from Crypto.Util.Padding import pad, unpad

# The field of pycryptodome's Shamir (Crypto.Protocol.SecretSharing._Element.irr_poly).
_DEGREE = 128
_IRREDUCIBLE = (1 << 128) | 0x87  # x^128 + x^7 + x^2 + x + 1
_MASK = (1 << _DEGREE) - 1
CHUNK = 16  # bytes per field element; Flower pads secrets to this
_INDEX_BYTES = 4  # Flower's share layout: little-endian index first

# Flower's modules that use the shares (client: split at key sharing; server: recombine at
# unmasking).
CLIENT_MOD = "flwr.client.mod.secure_aggregation.secaggplus_mod"
SERVER_WORKFLOW = "flwr.server.workflow.secure_aggregation.secaggplus_workflow"

# Source of the polynomials' random coefficients (16 bytes per call, as pycryptodome draws).
random_bytes: Callable[[int], bytes] = secrets.token_bytes


def _clmul(a: int, b: int) -> int:
    """Carry-less (GF(2)[x]) product."""
    if b > a:
        a, b = b, a
    z = 0
    while b:
        if b & 1:
            z ^= a
        a <<= 1
        b >>= 1
    return z


def _reduce(z: int) -> int:
    """``z`` modulo the field polynomial (x^128 = x^7 + x^2 + x + 1)."""
    while z >> _DEGREE:
        high = z >> _DEGREE
        z = (z & _MASK) ^ high ^ (high << 1) ^ (high << 2) ^ (high << 7)
    return z


def _mul(a: int, b: int) -> int:
    return _reduce(_clmul(a, b))


def _inverse(a: int) -> int:
    """Multiplicative inverse by the extended Euclidean algorithm over GF(2)[x]."""
    if a == 0:
        raise ValueError("Inversion of zero")
    r0, r1, s0, s1 = a, _IRREDUCIBLE, 1, 0
    while r1:
        quotient, remainder = 0, r0
        width = r1.bit_length()
        while remainder.bit_length() >= width:
            shift = remainder.bit_length() - width
            quotient ^= 1 << shift
            remainder ^= r1 << shift
        r0, r1 = r1, remainder
        s0, s1 = s1, s0 ^ _clmul(quotient, s1)
    return _reduce(s0)


@functools.lru_cache(maxsize=256)
def _lagrange_at_zero(indices: tuple[int, ...]) -> tuple[int, ...]:
    """l_j(0) = prod_{m != j} x_m / (x_j - x_m) for each share index x_j (minus is xor)."""
    coefficients = []
    for j, x_j in enumerate(indices):
        numerator = denominator = 1
        for m, x_m in enumerate(indices):
            if m != j:
                numerator = _mul(numerator, x_m)
                denominator = _mul(denominator, x_j ^ x_m)
        coefficients.append(_mul(numerator, _inverse(denominator)))
    return tuple(coefficients)


def _chunks(secret: bytes) -> list[int]:
    padded = pad(secret, CHUNK)
    return [int.from_bytes(padded[i : i + CHUNK], "big") for i in range(0, len(padded), CHUNK)]


def create_shares(secret: bytes, threshold: int, num: int) -> list[bytes]:
    """Split ``secret`` into ``num`` shares, any ``threshold`` of which recombine it."""
    if not 1 <= threshold <= num:
        raise ValueError(f"need 1 <= threshold <= num shares, got {threshold} of {num}")
    shares = [bytearray(index.to_bytes(_INDEX_BYTES, "little")) for index in range(1, num + 1)]
    for chunk in _chunks(secret):
        # pycryptodome's order: k-1 random coefficients (highest degree first), then the chunk.
        coefficients = [int.from_bytes(random_bytes(CHUNK), "big") for _ in range(threshold - 1)]
        coefficients.append(chunk)
        for index, share in enumerate(shares, start=1):
            value = 0
            for coefficient in coefficients:
                value = _mul(index, value) ^ coefficient
            share += value.to_bytes(CHUNK, "big")
    return [bytes(share) for share in shares]


def combine_shares(share_list: list[bytes]) -> bytes:
    """Recombine a secret from shares made by :func:`create_shares` (or Flower's)."""
    if not share_list:
        raise ValueError("no shares to combine")
    chunk_count = (len(share_list[0]) - _INDEX_BYTES) // CHUNK
    indices = tuple(int.from_bytes(share[:_INDEX_BYTES], "little") for share in share_list)
    if len(set(indices)) != len(indices):
        raise ValueError("Duplicate share")
    # As Flower: the first share sets the chunk count; a shorter share cannot be combined.
    expected = _INDEX_BYTES + chunk_count * CHUNK
    if chunk_count == 0 or any(len(share) < expected for share in share_list):
        raise ValueError(
            f"shares too short: expected at least {expected} bytes each, got "
            f"{sorted({len(share) for share in share_list})}"
        )
    coefficients = _lagrange_at_zero(indices)
    padded = bytearray()
    for chunk in range(chunk_count):
        start = _INDEX_BYTES + chunk * CHUNK
        value = 0
        for share, coefficient in zip(share_list, coefficients, strict=True):
            value ^= _mul(int.from_bytes(share[start : start + CHUNK], "big"), coefficient)
        padded += value.to_bytes(CHUNK, "big")
    try:
        return unpad(bytes(padded), CHUNK)
    except ValueError:
        raise ValueError("Failed to combine shares") from None


def use_fast_shamir() -> None:
    """Point Flower's SecAgg+ client mod and server workflow at this module (idempotent).

    Both import the functions by name from ``flwr.common.secure_aggregation.crypto.shamir``,
    so that is what is replaced, in those two modules only. (The modules are looked up by name:
    ``flwr.client.mod.secure_aggregation`` re-exports a *function* called ``secaggplus_mod``
    that shadows its submodule, so attribute access would find the function.)
    """
    # Any: these are Flower's module globals, replaced from outside their module on purpose.
    client_mod: Any = importlib.import_module(CLIENT_MOD)
    server_workflow: Any = importlib.import_module(SERVER_WORKFLOW)
    client_mod.create_shares = create_shares
    server_workflow.combine_shares = combine_shares
