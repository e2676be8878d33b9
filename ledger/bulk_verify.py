"""Verification of many receipts at once: the same checks as :func:`ledger.verify.verify_receipt`
(or, with no RPC, :func:`ledger.tlog.verify.verify_receipt_offline`) for every receipt, with
each chain fact read once.

A receipt's chain checks ask about its batch (is the root anchored, with which batch id, block
and time; is that block canonical; did that transaction go to the pinned ledger) and about its
signer (role history, organisation). Receipts of one batch share the first, receipts of one
signer the second, so :class:`CachingChain` asks the chain once per distinct batch root and once
per distinct signer, and answers the per-receipt question "does this proof verify on chain"
(``QualityLedger.verifyRecord``) locally from the batch's answer: that function is
``anchored(root) && MerkleProof.verify(proof, root, leaf(structHash))``, and the proof is folded
here with the same leaf encoding and hash (``ledger.merkle``). Offline, each distinct
checkpoint's signatures are checked once (:class:`CheckpointCache`).

Input: a directory of receipt files (``*.json``, one receipt each, as ``GET
/v1/records/{structHash}/receipt`` serves it) or a JSONL file (one receipt per line). A line or
file that is not a receipt is a failed receipt (``receipt_format``), never a crash, and the
others are still verified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ledger.merkle import leaf_hash, process_proof
from ledger.records import Role
from ledger.verify import ChainReader, Check, VerificationReport

# A receipt with a full log proof is a few kilobytes; a line or file far beyond that is not one,
# and reading it whole would let one hostile input exhaust memory.
MAX_RECEIPT_BYTES = 1 << 20


@dataclass(frozen=True)
class ReceiptInput:
    """One receipt to verify: where it came from (file name or ``file:line``) and its JSON, or
    why it could not be read."""

    name: str
    data: dict[str, Any] | None
    error: str | None = None


def _decode(name: str, raw: bytes) -> ReceiptInput:
    if len(raw) > MAX_RECEIPT_BYTES:
        return ReceiptInput(name, None, f"larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return ReceiptInput(name, None, f"not JSON: {exc}")
    if not isinstance(data, dict):
        return ReceiptInput(name, None, f"a receipt is a JSON object, got {type(data).__name__}")
    return ReceiptInput(name, data)


def read_receipts(path: Path) -> Iterator[ReceiptInput]:
    """The receipts of a directory (``*.json``, in name order) or of a JSONL file (blank lines
    skipped). Raises OSError when ``path`` itself cannot be read."""
    if path.is_dir():
        for file in sorted(path.glob("*.json")):
            if file.stat().st_size > MAX_RECEIPT_BYTES:
                yield ReceiptInput(file.name, None, f"larger than {MAX_RECEIPT_BYTES} bytes")
                continue
            yield _decode(file.name, file.read_bytes())
        return
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _decode(f"{path.name}:{number}", line)


class CachingChain:
    """A :class:`ledger.verify.ChainReader` that asks ``inner`` each question once.

    ``calls`` counts the questions that reached ``inner`` (each one RPC on a real chain)."""

    def __init__(self, inner: ChainReader) -> None:
        self._inner = inner
        self._memo: dict[tuple[Any, ...], Any] = {}
        self.calls = 0
        self.roots: set[bytes] = set()
        self.signers: set[str] = set()

    def _ask(self, key: tuple[Any, ...], ask: Callable[[], Any]) -> Any:
        try:
            return self._memo[key]
        except KeyError:
            self.calls += 1
            value = self._memo[key] = ask()
            return value

    @property
    def chain_id(self) -> int:
        return int(self._ask(("chain_id",), lambda: self._inner.chain_id))

    @property
    def ledger_address(self) -> str | None:
        # The address the reader was attached to: local state, no RPC.
        return self._inner.ledger_address

    def block_hash(self, number: int) -> str | None:
        value = self._ask(("block_hash", number), lambda: self._inner.block_hash(number))
        return None if value is None else str(value)

    def role_history(self, account: str, role: Role) -> list[tuple[int, int]]:
        self.signers.add(account.lower())
        history = self._ask(
            ("role_history", account.lower(), role),
            lambda: self._inner.role_history(account, role),
        )
        return list(history)

    def org_of(self, account: str) -> str | None:
        value = self._ask(("org_of", account.lower()), lambda: self._inner.org_of(account))
        return None if value is None else str(value)

    def anchored_at(self, root: bytes) -> Any:
        self.roots.add(root)
        return self._ask(("anchored_at", root), lambda: self._inner.anchored_at(root))

    def verify_record_on_chain(self, root: bytes, proof: list[bytes], struct_hash: bytes) -> bool:
        # QualityLedger.verifyRecord is `_anchors[root].batchId != 0 &&
        # MerkleProof.verifyCalldata(proof, root, _leaf(structHash))`: the same fold, here.
        return (
            process_proof(leaf_hash(struct_hash), proof) == root
            and self.anchored_at(root) is not None
        )

    def transaction_block(self, tx_hash: str) -> tuple[int, str] | None:
        value = self._ask(
            ("transaction_block", tx_hash.lower()),
            lambda: self._inner.transaction_block(tx_hash),
        )
        return None if value is None else (int(value[0]), str(value[1]))


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    struct_hash: str | None
    failed_check: str | None
    reason: str | None

    def line(self) -> str:
        """One line: ``OK name 0x..`` or ``FAIL name check: reason``."""
        if self.ok:
            return f"OK   {self.name} {self.struct_hash}"
        return f"FAIL {self.name} {self.failed_check}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "structHash": self.struct_hash,
            "failedCheck": self.failed_check,
            "reason": self.reason,
        }


def verdict_of(item: ReceiptInput, report: VerificationReport | None) -> Verdict:
    """The one-line verdict of a receipt (``report`` None: it could not be read)."""
    if report is None:
        return Verdict(item.name, False, None, Check.RECEIPT_FORMAT.value, item.error)
    struct_hash = None
    if item.data is not None and isinstance(item.data.get("structHash"), str):
        struct_hash = str(item.data["structHash"])[:66]
    failure = report.first_failure
    return Verdict(
        item.name,
        report.ok,
        struct_hash,
        failure.check.value if failure else None,
        failure.detail if failure else None,
    )


def verify_all(
    items: Sequence[ReceiptInput] | Iterator[ReceiptInput],
    verify_one: Callable[[dict[str, Any]], VerificationReport],
) -> Iterator[Verdict]:
    """Each receipt's verdict, in input order."""
    for item in items:
        if item.data is None:
            yield verdict_of(item, None)
        else:
            yield verdict_of(item, verify_one(item.data))
