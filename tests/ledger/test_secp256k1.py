"""The one adaptation of coincurve (ledger._secp256k1): recovery on reused buffers gives exactly
coincurve's public answers, at the pinned version, and any other version falls back to the public
API with a warning."""

from __future__ import annotations

import random

import pytest

from ledger._secp256k1 import COINCURVE_PINNED, make_recover, recover_public, recover_uncompressed
from ledger.keys import SECP256K1_N, Signer


@pytest.mark.parametrize("coincurve_version", [COINCURVE_PINNED, "22.0.0"])
def test_recover_on_reused_buffers_is_coincurves_recovery(coincurve_version: str) -> None:
    """The fast path's recovery (libsecp256k1 on buffers allocated once) gives coincurve's
    public key where coincurve gives one and nothing where it raises, also for the signatures
    an adversary makes: r or s zero or beyond the curve order, the other recovery id, a digest
    the signature is not for, and after a failure (no state left in the buffers)."""
    from coincurve import PublicKey

    if coincurve_version == COINCURVE_PINNED:
        recover = make_recover(coincurve_version)
        assert recover is not recover_public
        # the guard reads the installed version: the pin and the environment agree
        assert recover_uncompressed is not recover_public
    else:
        # another coincurve: coincurve's public API, with a warning, and the same answers
        with pytest.warns(RuntimeWarning, match="not the pinned"):
            recover = make_recover(coincurve_version)
        assert recover is recover_public
    signer = Signer.generate()
    rng = random.Random(21)
    n_bytes = SECP256K1_N.to_bytes(32, "big")
    cases: list[tuple[bytes, int, bytes]] = []
    for _ in range(40):
        digest = rng.randbytes(32)
        sig = bytes.fromhex(signer.sign_digest(digest)[2:])
        body, v = sig[:64], sig[64] - 27
        cases += [
            (body, v, digest),
            (body, 1 - v, digest),
            (body, v, rng.randbytes(32)),
            (bytes(32) + body[32:], v, digest),
            (body[:32] + bytes(32), v, digest),
            (n_bytes + body[32:], v, digest),
            (body[:32] + n_bytes, v, digest),
            (b"\xff" * 64, v, digest),
        ]
    rng.shuffle(cases)
    for body, v, digest in cases:
        try:
            expected: bytes | None = PublicKey.from_signature_and_message(
                body + bytes((v,)), digest, hasher=None
            ).format(compressed=False)
        except ValueError:
            expected = None
        assert recover(body, v, digest) == expected
    assert any(e is None for e in (recover(b, v, d) for b, v, d in cases))
