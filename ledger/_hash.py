"""keccak256, through the fastest backend installed.

safe-pysha3's C keccak is ~1 us per short input against ~7-10 us through eth-hash's default
pycryptodome backend (measured by scripts/bench_ledger.py); struct hashing and Merkle trees are
keccak-bound, so this is the difference between ~3k and ~15k records/s. The fallback keeps the
ledger importable in environments without it (e.g. the ape tool venv).
"""

from __future__ import annotations

try:
    from sha3 import keccak_256 as _keccak_256

    def keccak(data: bytes) -> bytes:
        return _keccak_256(data).digest()

    BACKEND = "safe-pysha3"
except ImportError:  # pragma: no cover - exercised only where safe-pysha3 is absent
    from eth_hash.auto import keccak as _eth_keccak

    def keccak(data: bytes) -> bytes:
        return _eth_keccak(data)

    BACKEND = "eth-hash"

__all__ = ["BACKEND", "keccak"]
