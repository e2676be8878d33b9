"""Public-key recovery on reused buffers: the one place qledger reaches into coincurve.

coincurve's ``PublicKey.from_signature_and_message(...).format(compressed=False)`` allocates four
cffi objects and a PublicKey around the three libsecp256k1 calls that do the work (parse the
compact signature, recover, serialise uncompressed). Intake and bulk verification make those
three calls directly on buffers allocated once per thread, ~3-5 us of a ~45 us recovery (issue
21). The binding they use, ``coincurve._libsecp256k1``, is private, so it is used only at the
coincurve version the tests pin (:data:`COINCURVE_PINNED`, the one in constraints.txt and
pyproject.toml); any other version, or a coincurve without that module, takes the public API,
with a warning, and gives the same answers (tests/ledger/test_secp256k1.py checks both).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from importlib.metadata import version as installed_version
from typing import Any, Final

from coincurve import PublicKey

COINCURVE_PINNED: Final = "21.0.0"

# (compact signature r||s, recovery id 0/1, 32-byte digest) -> 65-byte uncompressed key or None
Recover = Callable[[bytes, int, bytes], "bytes | None"]


def recover_public(rs: bytes, recovery_id: int, digest: bytes) -> bytes | None:
    """coincurve's public recovery: the uncompressed key, None where coincurve raises."""
    try:
        return PublicKey.from_signature_and_message(
            rs[:64] + bytes((recovery_id,)), digest, hasher=None
        ).format(compressed=False)
    except ValueError:
        return None


def _binding_recover() -> Recover:
    """The three libsecp256k1 calls on per-thread buffers (the pinned coincurve only)."""
    # A compiled cffi module: no stubs exist for it.
    from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
    from coincurve.context import GLOBAL_CONTEXT

    ctx = GLOBAL_CONTEXT.ctx
    uncompressed = lib.SECP256K1_EC_UNCOMPRESSED
    parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
    recover = lib.secp256k1_ecdsa_recover
    serialize = lib.secp256k1_ec_pubkey_serialize
    local = threading.local()  # buffers the C calls write: one set per thread

    def buffers() -> tuple[Any, Any, Any, Any]:
        made = (
            ffi.new("secp256k1_ecdsa_recoverable_signature *"),
            ffi.new("secp256k1_pubkey *"),
            ffi.new("unsigned char[65]"),
            ffi.new("size_t *"),
        )
        local.buffers = made
        return made

    def recover_uncompressed(rs: bytes, recovery_id: int, digest: bytes) -> bytes | None:
        try:
            signature, public_key, out, out_len = local.buffers
        except AttributeError:
            signature, public_key, out, out_len = buffers()
        if not parse(ctx, signature, rs[:64], recovery_id) or not recover(
            ctx, public_key, signature, digest
        ):
            return None  # r or s not below the curve order, or no key recovers
        out_len[0] = 65
        serialize(ctx, out, out_len, public_key, uncompressed)
        return bytes(ffi.buffer(out, 65))

    return recover_uncompressed


def make_recover(coincurve_version: str | None = None) -> Recover:
    """The reused-buffer recovery at the pinned coincurve, its public API on any other."""
    found = coincurve_version or installed_version("coincurve")
    if found == COINCURVE_PINNED:
        try:
            return _binding_recover()
        except (ImportError, AttributeError) as exc:
            reason = f"its binding is not as pinned ({exc})"
    else:
        reason = f"coincurve {found} is not the pinned {COINCURVE_PINNED}"
    warnings.warn(
        f"{reason}: signature recovery uses coincurve's public API (slower, same results)",
        RuntimeWarning,
        stacklevel=2,
    )
    return recover_public


recover_uncompressed: Final[Recover] = make_recover()
