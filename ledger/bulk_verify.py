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

Receipts that are exactly what the service issues and pass take a fast path
(``ledger._bulk_fast``): the same checks without a model object or a check report per receipt,
reading only chain facts (or opened checkpoints) that the run already read. It can only say
"valid", and only where the full verifier would; anything else, a failing receipt above all, is
verified the full way and reported exactly as ``qledger verify`` reports it.

Input: a directory of receipt files (``*.json``, one receipt each, as ``GET
/v1/records/{structHash}/receipt`` serves it) or a JSONL file (one receipt per line). A line or
file that is not a receipt is a failed receipt (``receipt_format``), never a crash, and the
others are still verified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import orjson

from ledger._bulk_fast import MISSING, ChainPath, FastRecordPath, LogPath
from ledger.errors import ChainError
from ledger.merkle import leaf_hash, process_proof
from ledger.records import Role
from ledger.tlog.note import SignedCheckpoint, Verifier
from ledger.tlog.verify import CheckpointCache
from ledger.trust import TrustRoot
from ledger.verify import PARTICIPANT_ROLES, ChainReader, Check, VerificationReport

# A receipt with a full log proof is a few kilobytes; a line or file far beyond that is not one,
# and reading it whole would let one hostile input exhaust memory.
MAX_RECEIPT_BYTES = 1 << 20
# Checkpoint notes the offline fast path remembers as good (a run has one per batch or
# checkpoint; beyond this many it asks the CheckpointCache each time).
MAX_OPENED_NOTES = 1 << 14


class ReceiptInput(NamedTuple):
    """One receipt to verify: where it came from (file name or ``file:line``) and its JSON, or
    why it could not be read. (A named tuple, not a frozen dataclass: one is made per receipt,
    and a named tuple costs well under half as much to make.)"""

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
    name = path.name  # a property that costs as much as the rest of a line's reading
    loads, decode_error, limit = orjson.loads, orjson.JSONDecodeError, MAX_RECEIPT_BYTES
    number = 0
    with path.open("rb") as lines:
        # Lines a megabyte's worth at a time (fewer calls into the file than one per line),
        # and _decode's common case inline: this runs once per receipt.
        while chunk := lines.readlines(1 << 20):
            for line in chunk:
                number += 1
                if line.isspace():  # line.strip() without the copy (a line is never empty)
                    continue
                if len(line) <= limit:
                    try:
                        data = loads(line)
                    except decode_error:
                        pass
                    else:
                        if type(data) is dict:
                            yield ReceiptInput(f"{name}:{number}", data)
                            continue
                yield _decode(f"{name}:{number}", line)


def remember_chain_id(client: object) -> None:
    """Let a web3 HTTP client (``ledger.chain.ChainClient``) remember the endpoint's chain id.

    web3's validation middleware asks ``eth_chainId`` twice before every ``eth_call``: three
    HTTP requests per contract read, where one is the read (measured by scripts/bench_verify.py:
    a third of a read's CPU). An endpoint's chain id does not change during a run, and the
    client read it when it connected (that is the one ``rpc_serves_pinned_chain`` compares).
    ``cache_allowed_requests`` and ``cacheable_requests`` are web3's own provider options;
    only ``eth_chainId`` is cached, so every fact the checks read is still read from the node.
    A client without a web3 HTTP provider is left as it is."""
    provider = getattr(getattr(client, "w3", None), "provider", None)
    if provider is not None and hasattr(provider, "cache_allowed_requests"):
        provider.cacheable_requests = {"eth_chainId"}
        provider.cache_allowed_requests = True


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

    def peek(self, key: tuple[Any, ...]) -> Any:
        """The answer already read for ``key`` (the memo's key: the question's name and its
        arguments as the methods below spell them), or ``MISSING``; never asks ``inner``."""
        return self._memo.get(key, MISSING)

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
        lower = account.lower()
        self.signers.add(lower)
        key = ("role_history", lower, role)
        if key not in self._memo and role in PARTICIPANT_ROLES:
            self._read_role_histories(account, lower)
        history = self._ask(key, lambda: self._inner.role_history(account, role))
        return list(history)

    def _read_role_histories(self, account: str, lower: str) -> None:
        """The verifier asks a signer's three participant role histories together: where
        ``inner`` can (``RawLedgerReads.role_histories``), read the missing ones in one request.
        Each answer is remembered and counted as one read; one the batch did not answer (an
        error, a missing or duplicated id, bad return data) is left unread, so that asking it
        alone reads it again and raises what that read raises (as the web3 client would)."""
        batch = getattr(self._inner, "role_histories", None)
        if batch is None:
            return
        missing = [r for r in PARTICIPANT_ROLES if ("role_history", lower, r) not in self._memo]
        for role, history in zip(missing, batch(account, missing), strict=True):
            if not isinstance(history, ChainError):
                self.calls += 1
                self._memo["role_history", lower, role] = history

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


class Verdict(NamedTuple):
    """A receipt's one-line verdict (a named tuple: one is made per receipt)."""

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


FastPath = Callable[[str, dict[str, Any]], Verdict | None]


class FastChainVerifier:
    """The fast path of ``verify_receipt(None, receipt, chain, trust)`` over a
    :class:`CachingChain`: a receipt's OK verdict, or None (verify it the full way)."""

    def __init__(self, chain: CachingChain, trust: TrustRoot | None) -> None:
        self._chain = chain
        self._trust = trust
        self._record = FastRecordPath()
        self._path: ChainPath | None = None

    def _pin(self) -> ChainPath | None:
        """The chain checks, once the facts read show that the chain serves the pinned chain
        and ledger (``rpc_serves_pinned_chain``; without a trust root the connection is the
        pin); None while they do not (yet)."""
        peek = self._chain.peek
        chain_id = peek(("chain_id",))
        if chain_id is MISSING:
            return None
        trust = self._trust
        reads = self._chain.ledger_address
        if trust is None:
            pinned = (int(chain_id), (reads or "").lower())
        else:
            if int(chain_id) != trust.chain_id:
                return None
            if trust.anchor is not None:
                seen = peek(("block_hash", trust.anchor.number))
                if seen is MISSING or seen is None or str(seen) != trust.anchor.hash:
                    return None
            if reads is None or reads.lower() != trust.ledger.lower():
                return None
            pinned = (trust.chain_id, trust.ledger.lower())
        self._path = ChainPath(peek, pinned)
        return self._path

    def __call__(self, name: str, data: dict[str, Any]) -> Verdict | None:
        path = self._path or self._pin()
        if path is None:
            return None
        facts = self._record.check(data)
        if facts is None or not path.passes(facts, data):
            return None
        return Verdict(name, True, data["structHash"], None, None)


class FastLogVerifier:
    """The fast path of ``verify_receipt_offline(None, receipt, ...)`` sharing
    ``checkpoints``: a receipt's OK verdict, or None (verify it the full way)."""

    def __init__(
        self,
        checkpoints: CheckpointCache,
        *,
        log_key: Verifier,
        witnesses: Sequence[Verifier] = (),
        quorum: int = 0,
        trust: TrustRoot | None = None,
    ) -> None:
        self._checkpoints = checkpoints
        self._log_key = log_key
        self._witnesses = tuple(witnesses)
        self._quorum = quorum
        pinned = None if trust is None else (trust.chain_id, trust.ledger.lower())
        self._record = FastRecordPath(folds_log=True)
        self._path = LogPath(self._opened, pinned)
        # (note, origin) -> its checkpoint, once both openings succeeded (they never change)
        self._good: dict[tuple[str, str], SignedCheckpoint] = {}

    def _opened(self, note: str, origin: str) -> SignedCheckpoint | None:
        """The checkpoint as the log key alone opened it, if both that and the opening with
        the witnesses succeeded before (what ``_log_checks`` needs to pass)."""
        good = self._good.get((note, origin))
        if good is not None:
            return good
        checkpoints = self._checkpoints
        alone = checkpoints.opened(note, self._log_key, origin)
        if not isinstance(alone, SignedCheckpoint):
            return None
        cosigned = checkpoints.opened(note, self._log_key, origin, self._witnesses, self._quorum)
        if not isinstance(cosigned, SignedCheckpoint):
            return None
        if len(self._good) < MAX_OPENED_NOTES:
            self._good[note, origin] = alone
        return alone

    def __call__(self, name: str, data: dict[str, Any]) -> Verdict | None:
        facts = self._record.check(data)
        if facts is None or not self._path.passes(facts, data):
            return None
        return Verdict(name, True, data["structHash"], None, None)


def verify_all(
    items: Sequence[ReceiptInput] | Iterator[ReceiptInput],
    verify_one: Callable[[dict[str, Any]], VerificationReport],
    fast: FastPath | None = None,
) -> Iterator[Verdict]:
    """Each receipt's verdict, in input order: ``fast``'s where it vouches for the receipt,
    else ``verify_one``'s (the full verifier, whose report gives a failure's check and
    reason)."""
    for item in items:
        data = item.data
        if data is None:
            yield verdict_of(item, None)
            continue
        if fast is not None:
            verdict = fast(item.name, data)
            if verdict is not None:
                yield verdict
                continue
        yield verdict_of(item, verify_one(data))


def write_verdicts(
    verdicts: Iterable[Verdict], out: TextIO, *, failures_only: bool = False, as_json: bool = False
) -> tuple[int, int]:
    """Write each verdict as ``qledger verify-receipts`` prints it (a line, or with ``as_json``
    a JSON line; with ``failures_only`` the failures alone). Returns (receipts, failed)."""
    total = failed = 0
    write = out.write
    for verdict in verdicts:
        total += 1
        if verdict.ok:
            if failures_only:
                continue
        else:
            failed += 1
        if as_json:
            write(orjson.dumps(verdict.to_json()).decode() + "\n")
        elif verdict.ok:  # Verdict.line's OK form, without the call (once per receipt)
            write(f"OK   {verdict.name} {verdict.struct_hash}\n")
        else:
            write(verdict.line() + "\n")
    return total, failed
