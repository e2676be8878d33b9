"""The anchorer: pending leaves -> Merkle batch -> one ``anchorBatch`` -> receipts.

Exactly-once, whatever dies when:
- A batch is *claimed* in one transaction: its root is stored and each outbox row gets the
  batch id. A row is claimed at most once, so no record can end up in two batches.
- Before sending, the chain is asked whether the root is already anchored (a crash after
  sending): then nothing is sent again. A send that reverts because the root is already there
  (a second anchorer, or a transaction from before the crash mined late) is treated the same.
- Only after the anchoring block has the configured confirmations do the batch's records
  join it (``records.batch_id``), enter the transparency log, and the batch become confirmed
  with its outbox rows deleted, all in one transaction. Receipts are then served with proofs
  derived from the batch's records (api.batch_trees); none is stored per record.
On restart every unconfirmed batch is resumed.

Pipelined: several batches are in flight at once (``MAX_IN_FLIGHT``), each in its own thread
from send to confirmation, while the loop goes on claiming. Each batch's steps are exactly the
ones above, so a crash with several in flight leaves several batches to resume, each from its
own state. Sends from the one anchoring account stay ordered: the chain client assigns nonces
under its send lock. Confirming transactions run one at a time (they append to the log).

Reconciliation (at start and every ``reconcile_seconds``): every confirmed batch is checked
against the chain (root anchored under the same batch id at the same block, that block still
canonical). A batch the chain lost (rolled back, reset, reorganised deeper than the
confirmation depth) is withdrawn in one transaction: its receipts are copied to
``superseded_receipts`` (kept, never deleted), its records go back to the outbox under the same
batch, which returns to ``built`` without chain fields, and a ``reconciliations`` row says what
happened. The normal path then re-anchors it (same root, a new on-chain batch) and issues new
receipts. Records never leave their one batch, so nothing is lost or counted twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from api.batch_trees import hex_proof, tree_of
from api.context import ServiceContext
from api.counters import CHAIN_ERRORS
from api.credit_service import RESPONSIBILITY_TOPIC, publish_scores_isolated
from api.settings import Settings
from api.store.db import placeholder
from api.store.models import (
    Batch,
    Commitment,
    LogEntry,
    Outbox,
    Reconciliation,
    Record,
    Responsibility,
    Score,
    SupersededReceipt,
    utcnow,
)
from api.tlog_service import NewEntry, append_and_sign, served_receipt
from credit.score import CREDIT_TOPIC
from ledger.chain import AnchorInfo
from ledger.chain.types import topic_id
from ledger.errors import (
    ChainError,
    ChainUnavailable,
    LedgerContractMissing,
    TransactionReverted,
)
from ledger.tlog import commitment_entry, record_entry

log = logging.getLogger("qledger.anchorer")

OPEN_STATUSES = ("built", "sent", "anchored")
# Batches in flight at once (claimed, not yet confirmed). At 1,000 records/s with 1,024-leaf
# batches one batch closes per second, and each waits for its block and confirmations (up to
# 2 s at 1 s blocks and 1 confirmation): 4 keeps up with bursts above that (the benchmark's
# runs at 1,000-2,000 records/s used 2-4, docs/benchmarks.md) and holds at most
# 4 x batch_max_leaves leaves out of the outbox.
MAX_IN_FLIGHT = 4
# How long a stopping anchorer waits for its batches in flight: a block or two on a live chain.
STOP_WAIT_SECONDS = 10.0
# How often the loop looks for open batches to resume, and for published artefacts to commit,
# besides right after a failure or a withdrawal. When every query took SQLite's one write lock
# (reads too: BEGIN IMMEDIATE; the anchorer's reads now use read-only sessions, which do not,
# api/store/db.py), these two cost 4 of the 5 transactions a loop turn (0.1 s) took, and the
# lock waits they caused showed in receipt latency (scripts/bench_time_to_receipt.py,
# docs/benchmarks.md); once a second is still soon enough.
HOUSEKEEPING_SECONDS = 1.0
# Leaves per claiming UPDATE: batch_max_leaves goes up to 65,536, SQLite binds at most 32,766
# values in one statement.
CLAIM_CHUNK = 8192

# The tables of published artefacts; both have the columns a commitment uses (id,
# commitment_id, proof).
CommittedTable = type[Score] | type[Responsibility]
# What each CommitmentLog topic commits: the table of published artefacts and its hash column.
COMMITTED: dict[str, tuple[CommittedTable, InstrumentedAttribute[str]]] = {
    CREDIT_TOPIC: (Score, Score.response_hash),
    RESPONSIBILITY_TOPIC: (Responsibility, Responsibility.matrix_hash),
}


# Crash-test failpoints (the fail-rs / FreeBSD fail(9) idea): Settings.failpoints
# (QLEDGER_FAILPOINTS) names the steps at which this process SIGKILLs itself, so tests can die
# at exactly the dangerous moments; ``step@N`` dies at the Nth time any batch reaches the step
# (with several batches in flight, the others are then caught wherever they are). Empty in
# production, where each check is one test of an empty string.
_failpoint_hits: dict[str, int] = {}
_failpoint_lock = threading.Lock()


def failpoint(settings: Settings, name: str) -> None:
    if not settings.failpoints:
        return
    for entry in settings.failpoint_names:
        point, _, nth = entry.partition("@")
        if point != name:
            continue
        with _failpoint_lock:
            hits = _failpoint_hits[name] = _failpoint_hits.get(name, 0) + 1
        if hits < int(nth or 1):
            continue
        log.warning("failpoint %s: killing this process", entry)
        if settings.failpoint_log is not None:  # tests learn which process died where
            with open(settings.failpoint_log, "a") as handle:
                handle.write(f"{name} {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)


# A batch sent back to "built": every fact of an anchoring it no longer has is cleared, so it is
# sent again as if new (an in-flight batch whose transaction the chain lost; a confirmed batch
# the chain forgot). Its root and leaves stay.
NOT_ANCHORED: dict[str, Any] = {
    "status": "built",
    "chain_batch_id": None,
    "tx_hash": None,
    "block_number": None,
    "block_hash": None,
    "block_timestamp": None,
    "confirmed_at": None,
}


class _ClaimLost(Exception):
    """A leaf read for a claim was claimed by someone else before the claim's write."""


@dataclass(frozen=True)
class LostBatch:
    """A confirmed batch the chain no longer backs, as reconciliation found it."""

    batch_id: int
    root: str
    leaf_count: int
    reason: str  # root_missing | batch_id_mismatch | block_not_canonical
    detail: str
    reconciliation_id: int | None = None  # None when only checked (nothing changed)


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: int
    root: str
    leaf_count: int
    chain_batch_id: int
    tx_hash: str
    block_number: int
    gas_used: int | None


def _log_failure(exc: ChainError | DBAPIError, delay: float) -> None:
    if isinstance(exc, ChainError):
        CHAIN_ERRORS.labels("anchorer").inc()
    if isinstance(exc, LedgerContractMissing):
        # Not an outage: retrying will not bring the contract back. Say so loudly each time;
        # intake answers 503 ledger_contract_missing meanwhile.
        log.critical("LEDGER CONTRACT MISSING: %s; retrying in %.1f s", exc, delay)
    elif isinstance(exc, ChainUnavailable):
        log.warning("chain unreachable (%s); retrying in %.1f s", exc, delay)
    elif isinstance(exc, DBAPIError):
        log.error("database unavailable (%s); retrying in %.1f s", exc.orig, delay)
    else:
        log.error("anchoring failed (%s); retrying in %.1f s", exc, delay)


class Anchorer:
    def __init__(self, ctx: ServiceContext, *, max_in_flight: int | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._log_checked = False
        # An in-process chain (py-evm through eth-tester) is not safe to call from several
        # threads at once: there each batch is finished in the calling thread, as before.
        in_process = getattr(ctx.chain, "_tester", None) is not None
        if max_in_flight is None:
            max_in_flight = 1 if in_process else MAX_IN_FLIGHT
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._flying: dict[int, Future[BatchOutcome]] = {}
        # One confirming transaction at a time: each appends to the transparency log, whose
        # next index and checkpoint follow from the one before.
        self._confirm_lock = threading.Lock()
        # One reconciliation at a time (the loop's periodic one, a worker's on a taken id).
        self._reconcile_lock = threading.Lock()
        # When the loop next looks for open batches / uncommitted artefacts (0: right away).
        self._resume_at = 0.0
        self._commit_at = 0.0
        self._to_resume: list[int] = []  # open batches found, not yet started (no room)

    def _backfill_log(self) -> None:
        """Log what became final before the transparency log existed (a store upgraded to
        migration 0005): confirmed batches' records, then committed roots, oldest first.
        Entries already logged are skipped, so this is a no-op on every later start."""
        with self.ctx.read_sessions() as s:
            logged = s.scalar(select(func.count()).select_from(LogEntry)) or 0
            final = (
                s.scalar(
                    select(func.count())
                    .select_from(Record)
                    .join(Batch, Record.batch_id == Batch.id)
                    .where(Batch.status == "confirmed")
                )
                or 0
            ) + (
                s.scalar(
                    select(func.count())
                    .select_from(Commitment)
                    .where(Commitment.status == "committed")
                )
                or 0
            )
        if logged < final:
            with self.ctx.sessions() as s, s.begin():
                entries = [
                    NewEntry("record", h, record_entry(h, root))
                    for h, root in s.execute(
                        select(Record.struct_hash, Batch.root)
                        .join(Batch, Record.batch_id == Batch.id)
                        .where(Batch.status == "confirmed")
                        .order_by(Batch.id, Record.struct_hash)
                    )
                ] + [
                    NewEntry("commitment", root, commitment_entry(topic_id(topic), root))
                    for topic, root in s.execute(
                        select(Commitment.topic, Commitment.root)
                        .where(Commitment.status == "committed")
                        .order_by(Commitment.id)
                    )
                ]
                size = append_and_sign(self.ctx, s, entries)
            log.info("transparency log backfilled: %d entries", size)
        self._log_checked = True

    # -- public ---------------------------------------------------------------------------

    def pending_count(self) -> int:
        with self.ctx.read_sessions() as s:
            return (
                s.scalar(select(func.count()).select_from(Outbox).where(Outbox.batch_id.is_(None)))
                or 0
            )

    def run_once(self, *, force: bool = False) -> list[BatchOutcome]:
        """Resume unfinished batches and anchor as many full (or due) batches as there are,
        up to ``max_in_flight`` at once, until none is left in flight; then commit published
        scores and matrices. The first failure is raised once the batches in flight end
        (each failed batch stays open, to be resumed)."""
        if not self._log_checked:
            self._backfill_log()
        outcomes: list[BatchOutcome] = []
        errors: list[BaseException] = []
        # The batches open now are resumed (once); a batch withdrawn while this runs (a
        # reconciliation on a reused on-chain id) waits for the next run, as it always has.
        resume = self._open_batches()
        while True:
            started = 0 if errors else self._fill(resume, force=force)
            if not self._flying and not started:
                break
            if self._flying:
                wait(list(self._flying.values()), return_when=FIRST_COMPLETED)
            done, failed = self._reap()
            outcomes += done
            errors += failed
        if errors:
            raise errors[0]
        self.commit_published()
        return sorted(outcomes, key=lambda o: o.batch_id)

    def step(self, *, force: bool = False) -> list[BatchOutcome]:
        """One turn of the pipeline, without waiting for the chain: collect the batches that
        ended (raising the first failure), start open and newly claimed ones while fewer than
        ``max_in_flight`` fly, then commit published artefacts. What :meth:`run_forever`
        calls every poll."""
        if not self._log_checked:
            self._backfill_log()
        done, failed = self._reap()
        if failed:
            self._resume_at = 0.0  # the failed batches stay open: resume them next turn
            raise failed[0]
        now = time.monotonic()
        if now >= self._resume_at:
            self._to_resume = [b for b in self._open_batches() if b not in self._flying]
            self._resume_at = now + HOUSEKEEPING_SECONDS
        self._fill(self._to_resume, force=force)
        more, failed = self._reap()  # batches finished in this thread (max_in_flight 1)
        if failed:
            self._resume_at = 0.0
            raise failed[0]
        if now >= self._commit_at:
            self.commit_published()
            self._commit_at = now + HOUSEKEEPING_SECONDS
        return sorted(done + more, key=lambda o: o.batch_id)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the batches in flight to end (their outcomes stay to be collected)."""
        if self._flying:
            wait(list(self._flying.values()), timeout=timeout)

    def reconcile(self, *, reanchor: bool = False) -> list[LostBatch]:
        """Withdraw every confirmed batch the chain lost; with ``reanchor``, anchor them again
        right away (otherwise the next :meth:`run_once` does)."""
        with self._reconcile_lock:
            reconciler = Reconciler(self.ctx)
            withdrawn = [reconciler.withdraw(lost) for lost in reconciler.check()]
        if withdrawn:
            self._resume_at = 0.0  # back to built: the loop resumes them on its next turn
        if reanchor:
            for lost in withdrawn:
                self._finish(lost.batch_id)
        return withdrawn

    # -- the pipeline -----------------------------------------------------------------------

    def _fill(self, resume: list[int], *, force: bool) -> int:
        """Start the batches of ``resume`` (taken off it as they start), then newly claimed
        ones, while there is room; returns how many were started."""
        started = 0
        while resume:
            if len(self._flying) >= self.max_in_flight:
                return started
            batch_id = resume.pop(0)
            if batch_id not in self._flying:
                self._start(batch_id)
                started += 1
        while len(self._flying) < self.max_in_flight:
            claimed = self._claim(force=force)
            if claimed is None:
                break
            self._start(claimed)
            started += 1
        return started

    def _start(self, batch_id: int) -> None:
        future: Future[BatchOutcome] = Future()
        self._flying[batch_id] = future

        def finish() -> None:
            try:
                future.set_result(self._finish(batch_id))
            except BaseException as exc:  # handed to whoever reaps it (run_once, step)
                future.set_exception(exc)

        if self.max_in_flight == 1:
            finish()  # in this thread: exactly the sequential anchorer
            return
        # A daemon thread per batch (about one a second at full load): the process can stop
        # while one waits for the chain, and the batch is resumed from its state next start.
        threading.Thread(target=finish, name=f"anchor-batch-{batch_id}", daemon=True).start()

    def _reap(self) -> tuple[list[BatchOutcome], list[BaseException]]:
        done: list[BatchOutcome] = []
        failed: list[BaseException] = []
        for batch_id, future in list(self._flying.items()):
            if not future.done():
                continue
            del self._flying[batch_id]
            exc = future.exception()
            if exc is not None:
                log.warning("batch %s not finished (%s); it stays open", batch_id, exc)
                failed.append(exc)
            else:
                done.append(future.result())
        return done, failed

    # -- commitments of published artefacts -------------------------------------------------

    def commit_published(self) -> int:
        """Commit every published-but-uncommitted score response and responsibility matrix:
        one CommitmentLog entry (a Merkle root) per topic per round, with the same
        claim-first, check-before-send discipline as record batches. Returns entries made."""
        made = 0
        if not self._anything_to_commit():
            return 0
        for commitment_id in self._open_commitments():
            self._finish_commitment(commitment_id)
        for topic, (table, column) in COMMITTED.items():
            claimed = self._claim_commitment(topic, table, column)
            if claimed is not None:
                self._finish_commitment(claimed)
                made += 1
        return made

    def _anything_to_commit(self) -> bool:
        """One read for the usual answer (nothing): an open commitment, or a published score
        or matrix not yet in one."""
        with self.ctx.read_sessions() as s:
            return bool(
                s.scalar(
                    select(
                        select(Commitment.id).where(Commitment.status == "built").exists()
                        | select(Score.id).where(Score.commitment_id.is_(None)).exists()
                        | select(Responsibility.id)
                        .where(Responsibility.commitment_id.is_(None))
                        .exists()
                    )
                )
            )

    def _open_commitments(self) -> list[int]:
        with self.ctx.read_sessions() as s:
            return list(
                s.scalars(
                    select(Commitment.id)
                    .where(Commitment.status == "built")
                    .order_by(Commitment.id)
                )
            )

    def _claim_commitment(
        self, topic: str, table: CommittedTable, column: InstrumentedAttribute[str]
    ) -> int | None:
        with self.ctx.sessions() as s, s.begin():
            hashes = list(
                s.scalars(
                    select(column)
                    .where(table.commitment_id.is_(None))
                    .order_by(table.id)
                    .limit(self.settings.batch_max_leaves)
                )
            )
            if not hashes:
                return None
            tree = tree_of(hashes)
            commitment = Commitment(
                topic=topic, root="0x" + tree.root.hex(), count=len(hashes), status="built"
            )
            s.add(commitment)
            s.flush()
            s.execute(update(table).where(column.in_(hashes)).values(commitment_id=commitment.id))
            return commitment.id

    def _finish_commitment(self, commitment_id: int) -> None:
        with self.ctx.read_sessions() as s:
            commitment = s.get(Commitment, commitment_id)
            assert commitment is not None
            topic, root_hex, count = commitment.topic, commitment.root, commitment.count
        table, column = COMMITTED[topic]
        root = bytes.fromhex(root_hex[2:])
        info = self.ctx.chain.committed_at(root)
        tx_hash = None
        if info is None:
            try:
                tx_hash = self.ctx.chain.commit(topic, root, count).tx_hash
            except TransactionReverted:
                if self.ctx.chain.committed_at(root) is None:
                    raise
            info = self.ctx.chain.committed_at(root)
            assert info is not None
        with self.ctx.sessions() as s, s.begin():
            hashes = list(s.scalars(select(column).where(table.commitment_id == commitment_id)))
            tree = tree_of(hashes)
            s.execute(
                update(table),
                [
                    {"id": row_id, "proof": hex_proof(tree, h)}
                    for row_id, h in s.execute(
                        select(table.id, column).where(table.commitment_id == commitment_id)
                    )
                ],
            )
            s.execute(
                update(Commitment)
                .where(Commitment.id == commitment_id)
                .values(
                    status="committed",
                    seq=info["seq"],
                    block_number=info["block_number"],
                    block_timestamp=info["timestamp"],
                    tx_hash=tx_hash,
                )
            )
            # The transparency log gets the committed root in the same transaction.
            append_and_sign(
                self.ctx,
                s,
                [NewEntry("commitment", root_hex, commitment_entry(topic_id(topic), root))],
            )

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.1) -> None:
        """Loop until ``stop`` is set; chain outages back off exponentially up to the cap.
        Each turn is one :meth:`step`: claims go on while earlier batches wait for the chain.
        Reconciliation runs beside it, at start and every ``reconcile_seconds``, in its own
        thread: it asks the chain about every confirmed batch, seconds of RPC that must not
        hold up claiming."""
        halt = threading.Event()  # ends the reconciler with the loop, however the loop ends
        checker = threading.Thread(
            target=self._reconcile_forever, args=(halt,), name="reconciler", daemon=True
        )
        checker.start()
        try:
            self._loop(stop, poll_seconds)
        finally:
            halt.set()
            # Batches in flight are resumable from their state whatever happens, but a process
            # that goes on (tests, an API worker standing in) should not leave threads sending
            # behind whoever takes the anchorer lock next.
            self.drain(timeout=STOP_WAIT_SECONDS)
            checker.join(STOP_WAIT_SECONDS)

    def _loop(self, stop: threading.Event, poll_seconds: float) -> None:
        delay = poll_seconds
        while not stop.is_set():
            try:
                self.step()
                delay = poll_seconds
            except (ChainError, DBAPIError) as exc:
                # A chain outage, a reverted send, or a database restart/failover: every step
                # is transactional and resumable, so waiting and starting over is safe.
                delay = min(max(delay * 2, 0.5), self.settings.retry_max_seconds)
                _log_failure(exc, delay)
            stop.wait(delay)

    def _reconcile_forever(self, halt: threading.Event) -> None:
        delay = 0.0  # at start
        while not halt.wait(delay):
            try:
                self.reconcile()
                delay = self.settings.reconcile_seconds
            except (ChainError, DBAPIError) as exc:
                delay = min(max(delay * 2, 0.5), self.settings.retry_max_seconds)
                _log_failure(exc, delay)

    # -- steps ----------------------------------------------------------------------------

    def _open_batches(self) -> list[int]:
        with self.ctx.read_sessions() as s:
            return list(
                s.scalars(
                    select(Batch.id).where(Batch.status.in_(OPEN_STATUSES)).order_by(Batch.id)
                )
            )

    def _claim(self, *, force: bool) -> int | None:
        """Claim the oldest unclaimed leaves as a new batch once ``batch_max_leaves`` are
        waiting or the oldest has waited ``batch_max_seconds`` (or ``force``).

        Everything but the claim itself happens outside the write transaction: the loop asks
        this every turn (10 a second), and on SQLite each write transaction holds the one
        lock intake's writer needs. So whether a batch is due is read from a snapshot, the
        leaves are read and their tree built there too, and the write transaction only adds
        the batch and sets the leaves' ``batch_id`` in one statement that claims a leaf only
        while it is still unclaimed: if any was taken meanwhile (a second anchorer), nothing
        is claimed and the next turn reads afresh. A leaf is still claimed at most once."""
        limit = self.settings.batch_max_leaves
        with self.ctx.read_sessions() as s:
            conn = s.connection()
            mark = placeholder(conn.dialect)
            oldest = s.scalar(
                select(Outbox.created_at)
                .where(Outbox.batch_id.is_(None))
                .order_by(Outbox.seq)
                .limit(1)
            )
            if oldest is None:
                return None
            age = time.time() - (
                oldest.timestamp()
                if oldest.tzinfo
                else oldest.replace(tzinfo=utcnow().tzinfo).timestamp()
            )
            if age < self.settings.batch_max_seconds and not force:
                full = conn.exec_driver_sql(
                    "SELECT 1 FROM outbox WHERE batch_id IS NULL ORDER BY seq "
                    f"LIMIT 1 OFFSET {mark}",
                    (limit - 1,),
                ).first()
                if full is None:
                    return None
            hashes = [
                h
                for (h,) in conn.exec_driver_sql(
                    "SELECT struct_hash FROM outbox WHERE batch_id IS NULL ORDER BY seq "
                    f"LIMIT {mark}",
                    (limit,),
                )
            ]
        if not hashes:
            return None
        tree = tree_of(hashes)
        root = "0x" + tree.root.hex()
        try:
            with self.ctx.sessions() as s, s.begin():
                batch = Batch(root=root, leaf_count=len(hashes), status="built")
                s.add(batch)
                s.flush()
                claimed = 0
                for start in range(0, len(hashes), CLAIM_CHUNK):
                    chunk = hashes[start : start + CLAIM_CHUNK]
                    claimed += (
                        s.connection()
                        .exec_driver_sql(
                            f"UPDATE outbox SET batch_id = {mark} WHERE batch_id IS NULL AND "
                            f"struct_hash IN ({', '.join([mark] * len(chunk))})",
                            (batch.id, *chunk),
                        )
                        .rowcount
                    )
                if claimed != len(hashes):
                    raise _ClaimLost  # rolls the batch back with the claim
                failpoint(self.settings, "anchorer.during_claim")
                batch_id = batch.id
        except (_ClaimLost, IntegrityError):
            # Some leaf was claimed since the read; the same leaves all claimed meanwhile give
            # the same root, which the store holds once (batches.root is unique).
            log.warning("a claim of %d leaves lost a race; reading again", len(hashes))
            return None
        log.info("claimed batch %s: %d leaves, root %s", batch_id, len(hashes), root)
        return batch_id

    def _finish(self, batch_id: int) -> BatchOutcome:
        with self.ctx.read_sessions() as s:
            batch = s.get(Batch, batch_id)
            assert batch is not None
            root = bytes.fromhex(batch.root[2:])
            leaf_count, status = batch.leaf_count, batch.status
        chain = self.ctx.chain
        info = chain.anchored_at(root)
        gas_used = None
        if info is None:
            failpoint(self.settings, "anchorer.before_send")
            try:
                result = chain.anchor_batch(root, leaf_count)
                failpoint(self.settings, "anchorer.after_send")
                gas_used = result.gas_used
                info = AnchorInfo(
                    batch_id=result.batch_id,
                    timestamp=result.timestamp,
                    block_number=result.block_number,
                    leaf_count=leaf_count,
                )
                tx_hash = result.tx_hash
            except TransactionReverted:
                info = chain.anchored_at(root)
                if info is None:
                    raise
                tx_hash = self._anchor_tx(root, info)
        else:
            tx_hash = self._anchor_tx(root, info)
            log.info("batch %s (%s) was already anchored; resuming", batch_id, status)
        anchored = {
            "status": "anchored",
            "chain_batch_id": info.batch_id,
            "tx_hash": tx_hash,
            "block_number": info.block_number,
            "block_timestamp": info.timestamp,
            **({"gas_used": gas_used} if gas_used is not None else {}),
        }
        if not self._mark_anchored(batch_id, anchored):
            # Another stored batch claims this on-chain id: the chain forgot that one and
            # handed its id out again. Withdraw it before this batch takes the id.
            self.reconcile()
            if not self._mark_anchored(batch_id, anchored) and not (
                self._free_stale_id(info.batch_id, batch_id)
                and self._mark_anchored(batch_id, anchored)
            ):
                raise ChainError(
                    f"on-chain batch {info.batch_id} is claimed by another stored batch that the "
                    "chain still backs",
                    got=batch_id,
                )
        failpoint(self.settings, "anchorer.after_anchored")
        block = chain.wait_for_confirmations(tx_hash, self.settings.confirmations)
        block_hash = chain.block_hash(block)
        if block != info.block_number or block_hash is None:
            raise ChainError(
                f"batch {batch_id}'s transaction moved to block {block} while confirming",
                expected=info.block_number,
                got=block,
            )
        failpoint(self.settings, "anchorer.before_confirm")
        self._confirm(batch_id, info.batch_id, block_hash)
        return BatchOutcome(
            batch_id,
            "0x" + root.hex(),
            leaf_count,
            info.batch_id,
            tx_hash,
            info.block_number,
            gas_used,
        )

    def _mark_anchored(self, batch_id: int, values: dict[str, Any]) -> bool:
        """Record the batch's anchor, in one transaction with the check that no other stored
        batch holds its on-chain id; False (nothing written) if one does."""
        with self.ctx.sessions() as s, s.begin():
            taken = s.scalar(
                select(Batch.id).where(
                    Batch.chain_batch_id == values["chain_batch_id"], Batch.id != batch_id
                )
            )
            if taken is not None:
                return False
            s.execute(update(Batch).where(Batch.id == batch_id).values(**values))
            return True

    def _free_stale_id(self, chain_batch_id: int, batch_id: int) -> bool:
        """The other stored batch holding ``chain_batch_id`` is still in flight (never
        confirmed, so no receipt was issued) and the chain does not hold its root under that
        id: its transaction was lost with the chain's history. It goes back to ``built`` and
        is sent again like any batch whose transaction is gone; returns whether it was."""
        with self.ctx.read_sessions() as s:
            other = s.execute(
                select(Batch.id, Batch.root, Batch.status).where(
                    Batch.chain_batch_id == chain_batch_id, Batch.id != batch_id
                )
            ).first()
        if other is None or other.status == "confirmed":
            return other is None
        held = self.ctx.chain.anchored_at(bytes.fromhex(other.root[2:]))
        if held is not None and held.batch_id == chain_batch_id:
            return False
        with self.ctx.sessions() as s, s.begin():
            cleared = s.execute(  # a Core UPDATE: its result has the row count
                update(Batch)
                .where(
                    Batch.id == other.id,
                    Batch.chain_batch_id == chain_batch_id,
                    Batch.status != "confirmed",
                )
                .values(**NOT_ANCHORED)
            )
        log.warning(
            "batch %s held on-chain id %s from a transaction the chain no longer has; "
            "it will be sent again",
            other.id,
            chain_batch_id,
        )
        return bool(cast("CursorResult[Any]", cleared).rowcount)

    def _anchor_tx(self, root: bytes, info: AnchorInfo) -> str:
        """The transaction that anchored ``root`` (after a crash we may not have its hash)."""
        for event in self.ctx.chain.anchored_batches(from_block=info.block_number):
            if event["root"] == root:
                return event["tx_hash"]
        raise ChainError(f"root 0x{root.hex()} is anchored but its BatchAnchored log is missing")

    def _confirm(self, batch_id: int, chain_batch_id: int, block_hash: str) -> None:
        """The batch's one confirming transaction: its records join it (which is what makes
        their proofs derivable, api.batch_trees), enter the transparency log (in intake
        order) under a new signed checkpoint, its outbox rows go, and it becomes confirmed.
        Nothing here is per-record Python beyond the log entries: the rest is set-based SQL."""
        # The log entries are made before the write transaction (on SQLite it holds the one
        # write lock): a claimed batch's outbox rows do not change while it is anchored, and
        # the transaction checks that the batch still is, with as many rows as it claimed.
        with self.ctx.read_sessions() as s:
            root = s.scalar(select(Batch.root).where(Batch.id == batch_id))
            logged = list(
                s.scalars(
                    select(Outbox.struct_hash)
                    .where(Outbox.batch_id == batch_id)
                    .order_by(Outbox.seq)
                )
            )
        entries = [NewEntry("record", h, record_entry(h, root or "")) for h in logged]
        with self._confirm_lock, self.ctx.sessions() as s, s.begin():
            batch = s.get(Batch, batch_id)
            assert batch is not None
            if (
                batch.status != "anchored"
                or batch.chain_batch_id != chain_batch_id
                or batch.root != root
                or batch.leaf_count != len(logged)
            ):
                # Withdrawn or reset under this worker (a reconciliation, a lost transaction):
                # whatever state it is in now is resumed from there.
                raise ChainError(
                    f"batch {batch_id} changed while confirming",
                    expected=f"anchored as on-chain batch {chain_batch_id}, {len(logged)} leaves",
                    got=f"{batch.status}, on-chain batch {batch.chain_batch_id}, "
                    f"{batch.leaf_count} leaves",
                )
            members = select(Outbox.struct_hash).where(Outbox.batch_id == batch_id)
            s.execute(
                update(Record).where(Record.struct_hash.in_(members)).values(batch_id=batch_id),
                execution_options={"synchronize_session": False},
            )
            append_and_sign(self.ctx, s, entries)
            failpoint(self.settings, "anchorer.during_confirm")
            s.execute(delete(Outbox).where(Outbox.batch_id == batch_id))
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(status="confirmed", confirmed_at=utcnow(), block_hash=block_hash)
            )
            s.execute(
                update(Reconciliation)
                .where(Reconciliation.batch_id == batch_id, Reconciliation.reanchored_at.is_(None))
                .values(
                    new_chain_batch_id=batch.chain_batch_id,
                    new_tx_hash=batch.tx_hash,
                    reanchored_at=utcnow(),
                )
            )
            repaired = sorted(
                set(
                    s.scalars(
                        select(Record.subject).where(
                            Record.batch_id == batch_id, Record.kind == "improvement"
                        )
                    )
                )
            )
        log.info("batch %s confirmed: %d receipts", batch_id, len(logged))
        if repaired:
            # Credit repair: an auditor's improvement counts from the moment it is anchored,
            # so the supplier's score is recomputed (and published) right away.
            _, failed = publish_scores_isolated(
                self.ctx, repaired, with_what_if=True, trigger="repair"
            )
            for u in failed:
                log.warning("credit of %s unavailable after repair: %s", u.supplier_id, u.code)
            log.info("recomputed credit after repair evidence: %s", ", ".join(repaired))


class Reconciler:
    """Checks confirmed batches against the chain and withdraws the ones it lost."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def check(self) -> list[LostBatch]:
        """Every confirmed batch the chain no longer backs (changes nothing).

        Raises LedgerContractMissing when the ledger has gone altogether: that is not a batch
        to re-anchor but a chain to restore.
        """
        chain = self.ctx.chain
        with self.ctx.read_sessions() as s:
            batches = list(
                s.execute(
                    select(
                        Batch.id,
                        Batch.root,
                        Batch.leaf_count,
                        Batch.chain_batch_id,
                        Batch.block_number,
                        Batch.block_hash,
                    )
                    .where(Batch.status == "confirmed")
                    .order_by(Batch.id)
                )
            )
        lost: list[LostBatch] = []
        hashes: dict[int, str | None] = {}  # one lookup per block, however many batches
        backfill: dict[int, str] = {}
        for b in batches:
            info = chain.anchored_at(bytes.fromhex(b.root[2:]))
            problem: tuple[str, str] | None = None
            if info is None:
                problem = (
                    "root_missing",
                    f"root {b.root} (on-chain batch {b.chain_batch_id}, block "
                    f"{b.block_number}) is not anchored in {chain.ledger_address}",
                )
            elif info.batch_id != b.chain_batch_id or info.block_number != b.block_number:
                problem = (
                    "batch_id_mismatch",
                    f"the chain holds root {b.root} as batch {info.batch_id} at block "
                    f"{info.block_number}; the store says batch {b.chain_batch_id} at block "
                    f"{b.block_number}",
                )
            else:
                if b.block_number not in hashes:
                    hashes[b.block_number] = chain.block_hash(b.block_number)
                canonical = hashes[b.block_number]
                if b.block_hash is None and canonical is not None:
                    backfill[b.id] = canonical  # confirmed before block hashes were kept
                elif canonical != b.block_hash:
                    problem = (
                        "block_not_canonical",
                        f"block {b.block_number} is now {canonical}, the batch was anchored "
                        f"in {b.block_hash}",
                    )
            if problem is not None:
                lost.append(LostBatch(b.id, b.root, b.leaf_count, *problem))
        if backfill:
            with self.ctx.sessions() as s, s.begin():
                s.execute(update(Batch), [{"id": k, "block_hash": v} for k, v in backfill.items()])
        return lost

    def withdraw(self, lost: LostBatch) -> LostBatch:
        """Supersede the batch's receipts and send its records back for re-anchoring, in one
        transaction. Returns ``lost`` with its reconciliation id."""
        # The receipts exactly as they were served (log proof included), read before the write
        # transaction: a second session inside it would wait on its own lock under SQLite.
        with self.ctx.read_sessions() as s:
            old_batch = s.get(Batch, lost.batch_id)
            assert old_batch is not None
            old_rows = list(s.scalars(select(Record).where(Record.batch_id == old_batch.id)))
        served = {row.struct_hash: served_receipt(self.ctx, row, old_batch) for row in old_rows}
        with self.ctx.sessions() as s, s.begin():
            batch = s.get(Batch, lost.batch_id)
            assert batch is not None
            if batch.status != "confirmed":  # another process withdrew it first
                return lost
            event = Reconciliation(
                batch_id=batch.id,
                root=batch.root,
                leaf_count=batch.leaf_count,
                reason=lost.reason,
                detail=lost.detail,
                lost_chain_batch_id=batch.chain_batch_id,
                lost_tx_hash=batch.tx_hash,
                lost_block_number=batch.block_number,
                lost_block_hash=batch.block_hash,
            )
            s.add(event)
            s.flush()
            rows = list(s.scalars(select(Record).where(Record.batch_id == batch.id)))
            now = utcnow()
            s.add_all(
                SupersededReceipt(
                    struct_hash=row.struct_hash,
                    reconciliation_id=event.id,
                    receipt=served[row.struct_hash],
                    superseded_at=now,
                )
                for row in rows
                if row.struct_hash in served
            )
            seq = time.time_ns()
            s.execute(
                insert(Outbox),
                [
                    {"struct_hash": row.struct_hash, "seq": seq + i, "batch_id": batch.id}
                    for i, row in enumerate(rows)
                ],
            )
            s.execute(update(Batch).where(Batch.id == batch.id).values(**NOT_ANCHORED))
        log.error(
            "reconciliation %s: batch %s (%d records) lost by the chain (%s: %s); re-anchoring",
            event.id,
            lost.batch_id,
            lost.leaf_count,
            lost.reason,
            lost.detail,
        )
        return LostBatch(
            lost.batch_id, lost.root, lost.leaf_count, lost.reason, lost.detail, event.id
        )


def anchor_when_leader(
    ctx: ServiceContext, stop: threading.Event, retry_seconds: float = 2.0, first_wait: float = 0.0
) -> None:
    """Anchor (and follow the chain's role events) while holding the data dir's anchorer lock;
    until then, keep asking for it.

    ``qledger serve`` starts the anchorer as its own process, which takes the lock first; the
    API workers wait here as stand-ins (``first_wait`` gives that process the head start),
    so anchoring goes on if it dies.
    """
    stop.wait(first_wait)
    while not stop.is_set():
        with anchorer_lock(ctx.settings.data_dir) as held:
            if held:
                log.info("anchorer lock taken by pid %s", os.getpid())
                # The role follower lives with the anchorer: one per data dir, owned by the
                # lock holder, in its own thread so a long anchoring step never delays it.
                halt = threading.Event()  # ends the follower with the anchorer, however
                follower = threading.Thread(
                    target=ctx.follower.run_forever, args=(halt,), name="role-follower", daemon=True
                )
                follower.start()
                try:
                    Anchorer(ctx).run_forever(stop)
                finally:
                    halt.set()
                    follower.join(30)
                return
        stop.wait(retry_seconds)


@contextlib.contextmanager
def anchorer_lock(data_dir: Path) -> Iterator[bool]:
    """Held by the one process that anchors for this data dir (others only serve requests).

    Correctness does not depend on it (claims are transactional and the contract refuses a
    root twice); it keeps two processes from racing for the same account nonce.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "anchorer.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
