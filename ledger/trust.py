"""The auditor's pinned trust root: which chain and which ledger contract a receipt must name.

A receipt names a chain id and a contract address, but anyone can deploy the same bytecode at
another address (on a fresh anvil even at the same address) and anchor roots there. So the
verifier never takes the ledger from the receipt: it takes it from a file the auditor keeps,
made once from a deployment it was handed (``qledger trust init``) and checked into its own
records. The file also pins one block of that chain (the genesis block or any known block) by
hash, so that an RPC endpoint serving another chain with the same chain id (a fresh dev chain,
a fork) is caught before any of its answers are believed.

Format (JSON, one object, no other members)::

    {"version": 1, "chainId": 31337, "ledger": "0x<checksummed address>",
     "anchor": {"number": 0, "hash": "0x<32 bytes>"},
     "logKey": "<C2SP vkey>" | null, "witnesses": ["<C2SP vkey>", ...], "witnessQuorum": 0}

``logKey``, ``witnesses`` and ``witnessQuorum`` are for checkpoint and witness verification
(the log's note-signing key and the witnesses' cosigning keys, as C2SP signed-note verifier
keys ``<name>+<8 hex key id>+<base64 key>``); this module only checks their syntax.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from ledger._files import write_atomically
from ledger.errors import TrustRootError

TRUST_FILE_VERSION = 1
FIELDS = ("version", "chainId", "ledger", "anchor", "logKey", "witnesses", "witnessQuorum")
_HASH32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
# C2SP signed-note verifier key: a name without whitespace or '+', the 4-byte key id in hex,
# and the base64 key (algorithm byte + public key). https://c2sp.org/signed-note
_VKEY = re.compile(r"^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+={0,2})$")


def check_vkey(value: object, what: str) -> str:
    """``value`` if it is a C2SP signed-note verifier key (syntax only), else TrustRootError."""
    if not isinstance(value, str):
        raise TrustRootError(f"{what} must be a string", got=type(value).__name__)
    match = _VKEY.match(value)
    if match is None:
        raise TrustRootError(
            f"{what} is not a signed-note verifier key",
            expected="<name>+<8 hex>+<base64>",
            got=value,
        )
    try:
        key = base64.b64decode(match.group(3), validate=True)
    except binascii.Error as exc:
        raise TrustRootError(f"{what}: key is not base64 ({exc})", got=value) from None
    if len(key) < 2:  # an algorithm byte and at least one key byte
        raise TrustRootError(f"{what}: key is empty", got=value)
    return value


def _int(value: object, what: str, minimum: int = 0) -> int:
    # bool is an int in Python; true/false in a trust file is a mistake, not 1/0.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TrustRootError(f"{what} must be an integer >= {minimum}", got=value)
    return value


@dataclass(frozen=True)
class BlockAnchor:
    """One block of the pinned chain, by number and hash."""

    number: int
    hash: str

    def __post_init__(self) -> None:
        _int(self.number, "anchor.number")
        if not isinstance(self.hash, str) or not _HASH32.match(self.hash):
            raise TrustRootError("anchor.hash must be 0x + 64 hex digits", got=self.hash)
        object.__setattr__(self, "hash", self.hash.lower())


@dataclass(frozen=True)
class TrustRoot:
    """What an auditor pins: chain id, ledger contract, one known block, and log/witness keys."""

    chain_id: int
    ledger: str
    # None only for a root given as command-line flags without a block: then a fresh chain
    # with the same chain id cannot be told apart. A trust file always pins a block.
    anchor: BlockAnchor | None
    log_key: str | None = None
    witnesses: tuple[str, ...] = field(default_factory=tuple)
    witness_quorum: int = 0

    def __post_init__(self) -> None:
        _int(self.chain_id, "chainId", minimum=1)
        if not isinstance(self.ledger, str) or not is_hex_address(self.ledger):
            raise TrustRootError("ledger must be a 20-byte hex address", got=self.ledger)
        # A mixed-case address that fails its EIP-55 checksum is a typo, not a choice.
        if self.ledger != self.ledger.lower() and not is_checksum_address(self.ledger):
            raise TrustRootError("ledger address fails its EIP-55 checksum", got=self.ledger)
        object.__setattr__(self, "ledger", to_checksum_address(self.ledger))
        if self.log_key is not None:
            check_vkey(self.log_key, "logKey")
        witnesses = tuple(self.witnesses)
        for n, key in enumerate(witnesses):
            check_vkey(key, f"witnesses[{n}]")
        if len(set(witnesses)) != len(witnesses):
            raise TrustRootError("witnesses must be distinct keys", got=list(witnesses))
        object.__setattr__(self, "witnesses", witnesses)
        _int(self.witness_quorum, "witnessQuorum")
        if self.witness_quorum > len(witnesses):
            raise TrustRootError(
                "witnessQuorum exceeds the number of witnesses",
                expected=f"0..{len(witnesses)}",
                got=self.witness_quorum,
            )

    # -- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.anchor is None:
            raise TrustRootError("a trust file must pin a block (anchor number and hash)")
        return {
            "version": TRUST_FILE_VERSION,
            "chainId": self.chain_id,
            "ledger": self.ledger,
            "anchor": {"number": self.anchor.number, "hash": self.anchor.hash},
            "logKey": self.log_key,
            "witnesses": list(self.witnesses),
            "witnessQuorum": self.witness_quorum,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: object) -> TrustRoot:
        if not isinstance(data, Mapping):
            raise TrustRootError("a trust root is a JSON object", got=type(data).__name__)
        unknown = sorted(set(data) - set(FIELDS))
        missing = [f for f in ("version", "chainId", "ledger", "anchor") if f not in data]
        if unknown or missing:
            raise TrustRootError(
                "trust root members",
                expected=list(FIELDS),
                got={"unknown": unknown, "missing": missing},
            )
        if data["version"] != TRUST_FILE_VERSION or isinstance(data["version"], bool):
            raise TrustRootError("unsupported trust file version", expected=1, got=data["version"])
        anchor = data["anchor"]
        if not isinstance(anchor, Mapping) or set(anchor) != {"number", "hash"}:
            raise TrustRootError('anchor must be {"number": int, "hash": "0x.."}', got=anchor)
        witnesses = data.get("witnesses", [])
        if not isinstance(witnesses, list):
            raise TrustRootError("witnesses must be a list", got=type(witnesses).__name__)
        return cls(
            chain_id=data["chainId"],
            ledger=data["ledger"],
            anchor=BlockAnchor(number=anchor["number"], hash=anchor["hash"]),
            log_key=data.get("logKey"),
            witnesses=tuple(witnesses),
            witness_quorum=data.get("witnessQuorum", 0),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustRoot:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TrustRootError(f"trust file is not JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write atomically (a half-written trust file would pin nothing)."""
        write_atomically(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrustRoot:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TrustRootError(f"cannot read trust file {path}: {exc.strerror}") from None
        return cls.from_json(text)

    def names(self, chain_id: int, contract: str) -> bool:
        """Whether (chain id, contract) is the pinned ledger."""
        return chain_id == self.chain_id and contract.lower() == self.ledger.lower()
