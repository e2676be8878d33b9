"""The anchorer: pending leaves -> Merkle batch -> one ``anchorBatch`` -> receipts.

Exactly-once, whatever dies when:
- A batch is *claimed* in one transaction: its root is stored and each outbox row gets the
  batch id. A row is claimed at most once, so no record can end up in two batches.
- Before sending, the chain is asked whether the root is already anchored (a crash after
  sending): then nothing is sent again. A send that reverts because the root is already there
  (a second anchorer, or a transaction from before the crash mined late) is treated the same.
- Only after the anchoring block has the configured confirmations are proofs written, the
  batch marked confirmed and its outbox rows deleted, in one transaction.
On restart every unconfirmed batch is resumed before new ones are built.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from api.context import ServiceContext
from api.credit_service import RESPONSIBILITY_TOPIC, publish_scores_isolated
from api.store.models import (
    Batch,
    Commitment,
    Outbox,
    Record,
    Responsibility,
    Score,
    utcnow,
)
from credit.score import CREDIT_TOPIC
from ledger.chain import AnchorInfo
from ledger.errors import ChainError, ChainUnavailable, TransactionReverted
from ledger.merkle import StandardMerkleTree

log = logging.getLogger("qledger.anchorer")

OPEN_STATUSES = ("built", "sent", "anchored")
RECEIPT_CHUNK = 128  # proofs written per transaction (keeps the writer lock short for intake)

# What each CommitmentLog topic commits: the table of published artefacts and its hash column.
COMMITTED = {
    CREDIT_TOPIC: (Score, Score.response_hash),
    RESPONSIBILITY_TOPIC: (Responsibility, Responsibility.matrix_hash),
}


def tree_of(hex_hashes: list[str]) -> StandardMerkleTree:
    return StandardMerkleTree.of([bytes.fromhex(h[2:]) for h in hex_hashes])


def hex_proof(tree: StandardMerkleTree, hex_hash: str) -> list[str]:
    return ["0x" + p.hex() for p in tree.proof(bytes.fromhex(hex_hash[2:]))]


# Crash-test failpoints (the fail-rs / FreeBSD fail(9) idea): QLEDGER_FAILPOINTS names the
# steps at which this process SIGKILLs itself, so tests can die at exactly the dangerous
# moments. Unset in production, where each check is one dict lookup.
FAILPOINTS = frozenset(filter(None, os.environ.get("QLEDGER_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in FAILPOINTS:
        log.warning("failpoint %s: killing this process", name)
        marker = os.environ.get("QLEDGER_FAILPOINT_LOG")
        if marker:  # tests learn which process died where
            with open(marker, "a") as handle:
                handle.write(f"{name} {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: int
    root: str
    leaf_count: int
    chain_batch_id: int
    tx_hash: str
    block_number: int
    gas_used: int | None


class Anchorer:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings

    # -- public ---------------------------------------------------------------------------

    def pending_count(self) -> int:
        with self.ctx.sessions() as s:
            return (
                s.scalar(select(func.count()).select_from(Outbox).where(Outbox.batch_id.is_(None)))
                or 0
            )

    def run_once(self, *, force: bool = False) -> list[BatchOutcome]:
        """Resume unfinished batches, then anchor as many full (or due) batches as there are;
        then commit published scores and matrices."""
        done = [self._finish(batch_id) for batch_id in self._open_batches()]
        while True:
            batch_id = self._claim(force=force)
            if batch_id is None:
                break
            done.append(self._finish(batch_id))
        self.commit_published()
        return [d for d in done if d is not None]

    # -- commitments of published artefacts -------------------------------------------------

    def commit_published(self) -> int:
        """Commit every published-but-uncommitted score response and responsibility matrix:
        one CommitmentLog entry (a Merkle root) per topic per round, with the same
        claim-first, check-before-send discipline as record batches. Returns entries made."""
        made = 0
        for commitment_id in self._open_commitments():
            self._finish_commitment(commitment_id)
        for topic, (table, column) in COMMITTED.items():
            commitment_id = self._claim_commitment(topic, table, column)
            if commitment_id is not None:
                self._finish_commitment(commitment_id)
                made += 1
        return made

    def _open_commitments(self) -> list[int]:
        with self.ctx.sessions() as s:
            return list(
                s.scalars(
                    select(Commitment.id)
                    .where(Commitment.status == "built")
                    .order_by(Commitment.id)
                )
            )

    def _claim_commitment(self, topic: str, table: type, column) -> int | None:  # type: ignore[no-untyped-def]
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
        with self.ctx.sessions() as s:
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

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.2) -> None:
        """Loop until ``stop`` is set; chain outages back off exponentially up to the cap."""
        delay = poll_seconds
        while not stop.is_set():
            try:
                self.run_once()
                delay = poll_seconds
            except (ChainError, DBAPIError) as exc:
                # A chain outage, a reverted send, or a database restart/failover: every step
                # is transactional and resumable, so waiting and starting over is safe.
                delay = min(max(delay * 2, 0.5), self.settings.retry_max_seconds)
                if isinstance(exc, ChainUnavailable):
                    log.warning("chain unreachable (%s); retrying in %.1f s", exc, delay)
                elif isinstance(exc, DBAPIError):
                    log.error("database unavailable (%s); retrying in %.1f s", exc.orig, delay)
                else:
                    log.error("anchoring failed (%s); retrying in %.1f s", exc, delay)
            stop.wait(delay)

    # -- steps ----------------------------------------------------------------------------

    def _open_batches(self) -> list[int]:
        with self.ctx.sessions() as s:
            return list(
                s.scalars(
                    select(Batch.id).where(Batch.status.in_(OPEN_STATUSES)).order_by(Batch.id)
                )
            )

    def _claim(self, *, force: bool) -> int | None:
        limit = self.settings.batch_max_leaves
        with self.ctx.sessions() as s, s.begin():
            query = (
                select(Outbox.struct_hash, Outbox.created_at)
                .where(Outbox.batch_id.is_(None))
                .order_by(Outbox.seq)
                .limit(limit)
            )
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = s.execute(query).all()
            if not rows:
                return None
            oldest = rows[0].created_at
            age = time.time() - (
                oldest.timestamp()
                if oldest.tzinfo
                else oldest.replace(tzinfo=utcnow().tzinfo).timestamp()
            )
            if len(rows) < limit and age < self.settings.batch_max_seconds and not force:
                return None
            hashes = [r.struct_hash for r in rows]
            tree = tree_of(hashes)
            batch = Batch(root="0x" + tree.root.hex(), leaf_count=len(hashes), status="built")
            s.add(batch)
            s.flush()
            s.execute(
                update(Outbox).where(Outbox.struct_hash.in_(hashes)).values(batch_id=batch.id)
            )
            failpoint("anchorer.during_claim")
            log.info("claimed batch %s: %d leaves, root %s", batch.id, len(hashes), batch.root)
            return batch.id

    def _leaves(self, batch_id: int) -> list[str]:
        with self.ctx.sessions() as s:
            return list(s.scalars(select(Outbox.struct_hash).where(Outbox.batch_id == batch_id)))

    def _finish(self, batch_id: int) -> BatchOutcome | None:
        with self.ctx.sessions() as s:
            batch = s.get(Batch, batch_id)
            assert batch is not None
            root = bytes.fromhex(batch.root[2:])
            leaf_count, status = batch.leaf_count, batch.status
        chain = self.ctx.chain
        info = chain.anchored_at(root)
        gas_used = None
        if info is None:
            failpoint("anchorer.before_send")
            try:
                result = chain.anchor_batch(root, leaf_count)
                failpoint("anchorer.after_send")
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
        with self.ctx.sessions() as s, s.begin():
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(
                    status="anchored",
                    chain_batch_id=info.batch_id,
                    tx_hash=tx_hash,
                    block_number=info.block_number,
                    block_timestamp=info.timestamp,
                    **({"gas_used": gas_used} if gas_used is not None else {}),
                )
            )
        failpoint("anchorer.after_anchored")
        chain.wait_for_confirmations(tx_hash, self.settings.confirmations)
        self._write_receipts(batch_id)
        return BatchOutcome(
            batch_id,
            "0x" + root.hex(),
            leaf_count,
            info.batch_id,
            tx_hash,
            info.block_number,
            gas_used,
        )

    def _anchor_tx(self, root: bytes, info: AnchorInfo) -> str:
        """The transaction that anchored ``root`` (after a crash we may not have its hash)."""
        for event in self.ctx.chain.anchored_batches(from_block=info.block_number):
            if event["root"] == root:
                return event["tx_hash"]
        raise ChainError(f"root 0x{root.hex()} is anchored but its BatchAnchored log is missing")

    def _write_receipts(self, batch_id: int) -> None:
        hashes = self._leaves(batch_id)
        tree = tree_of(hashes)
        rows = [
            {"struct_hash": h, "batch_id": batch_id, "proof": hex_proof(tree, h)} for h in hashes
        ]
        # Proofs go in short transactions (ORM bulk UPDATE by primary key, one executemany
        # each): the database has one writer, and intake's commits should not queue behind a
        # thousand-row update. Writing a proof twice after a crash is harmless; only the last
        # transaction, which deletes the outbox rows and confirms the batch, makes it final.
        for start in range(0, len(rows), RECEIPT_CHUNK):
            with self.ctx.sessions() as s, s.begin():
                s.execute(update(Record), rows[start : start + RECEIPT_CHUNK])
        with self.ctx.sessions() as s, s.begin():
            s.execute(delete(Outbox).where(Outbox.batch_id == batch_id))
            s.execute(
                update(Batch)
                .where(Batch.id == batch_id)
                .values(status="confirmed", confirmed_at=utcnow())
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
        log.info("batch %s confirmed: %d receipts", batch_id, len(hashes))
        if repaired:
            # Credit repair: an auditor's improvement counts from the moment it is anchored,
            # so the supplier's score is recomputed (and published) right away.
            _, failed = publish_scores_isolated(
                self.ctx, repaired, with_what_if=True, trigger="repair"
            )
            for u in failed:
                log.warning("credit of %s unavailable after repair: %s", u.supplier_id, u.code)
            log.info("recomputed credit after repair evidence: %s", ", ".join(repaired))


def anchor_when_leader(
    ctx: ServiceContext, stop: threading.Event, retry_seconds: float = 2.0, first_wait: float = 0.0
) -> None:
    """Anchor while holding the data dir's anchorer lock; until then, keep asking for it.

    ``qledger serve`` starts the anchorer as its own process, which takes the lock first; the
    API workers wait here as stand-ins (``first_wait`` gives that process the head start),
    so anchoring goes on if it dies.
    """
    stop.wait(first_wait)
    while not stop.is_set():
        with anchorer_lock(ctx.settings.data_dir) as held:
            if held:
                log.info("anchorer lock taken by pid %s", os.getpid())
                Anchorer(ctx).run_forever(stop)
                return
        stop.wait(retry_seconds)


@contextlib.contextmanager
def anchorer_lock(data_dir: Path):  # type: ignore[no-untyped-def]
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
