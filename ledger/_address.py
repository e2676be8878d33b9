"""EIP-55 checksummed addresses through our keccak (eth_utils' version costs ~100 us a call
and runs twice per record at intake)."""

from __future__ import annotations

import re
from functools import lru_cache

from ledger._hash import keccak

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


@lru_cache(maxsize=65536)
def to_checksum(address: str) -> str:
    """EIP-55 form of a 0x-prefixed 20-byte hex address (raises ValueError if not one)."""
    if not _HEX40.fullmatch(address):
        raise ValueError("expected a 0x-prefixed 20-byte hex address")
    lower = address[2:].lower()
    digest = keccak(lower.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(lower, digest[:40], strict=True)
    )


def is_valid_checksum(address: str) -> bool:
    """All-lower and all-upper hex carry no checksum; mixed case must be exact EIP-55."""
    body = address[2:]
    return body == body.lower() or body == body.upper() or to_checksum(address) == address
