"""Intake of signed evidence: every check that needs no database first, then one transaction
that stores the records and their outbox rows (idempotent by struct hash, replay-safe by
(signer, nonce))."""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, and_, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.errors import ApiError, from_typed
from api.genealogy_service import genealogy_links
from api.notification_intake import NotificationIntake
from api.store.errors import store_error
from api.store.genealogy import insert_links
from api.store.models import Outbox, Record, utcnow
from ledger._hash import keccak
from ledger.eip712 import domain_separator, record_struct_hash_of
from ledger.errors import LedgerError
from ledger.records import (
    GENEALOGY_KINDS,
    KIND_SIGNER_ROLES,
    SELF_SUBJECT_KINDS,
    Domain,
    EventTimeOutOfBounds,
    RecordKind,
    Role,
    SignedFields,
    SignedRecord,
    allowed_roles_text,
    check_event_time,
    load_signed_record,
    screen_signed_record,
)
from ledger.signing import (
    check_domain,
    check_kind_allowed,
    check_signature,
    signatures_recover_to,
)

log = logging.getLogger("qledger.intake")


# The records columns intake writes, in the order of ``Checked.values``; ``received_at`` is
# appended per transaction. (``batch_id`` and ``proof`` are left to their NULL default: the
# anchorer sets them.)
RECORD_COLUMNS = (
    "struct_hash",
    "signer",
    "signer_role",
    "subject",
    "kind",
    "part_number",
    "lot_id",
    "event_time",
    "signed_at",
    "quantity",
    "defects",
    "nonce",
    "salt",
    "payload_hash",
    "payload",
    "signature",
    "chain_id",
    "contract",
)
OUTBOX_COLUMNS = ("struct_hash", "seq")  # created_at: per transaction


@dataclass(slots=True)
class Checked:
    """A record that passed every check that needs no database: what ``store`` writes.

    ``values`` are its ``records`` row (RECORD_COLUMNS). ``signed`` is the validated envelope
    where the record took the model path (:func:`check_record`); storage reads it for the
    kinds whose rules look into the store (genealogy links, notification threads), which
    always take that path. The fast path (:func:`check_records`) builds no envelope."""

    struct_hash: str
    role: Role
    kind: RecordKind
    signer: str
    nonce: int
    values: tuple[Any, ...]
    signed: SignedRecord | None = None


@dataclass(frozen=True)
class Outcome:
    """One record's answer: accepted (new or the same record again) or rejected with a reason."""

    index: int
    struct_hash: str | None
    status: str  # "accepted" | "duplicate" | "rejected"
    error: ApiError | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.struct_hash:
            out["structHash"] = self.struct_hash
        if self.error:
            out["error"] = self.error.problem()
        return out


# The store keeps integers as signed 64-bit (SQLite INTEGER, PostgreSQL BIGINT). A nonce is a
# uint64 in the signed struct: one above this could be signed but not stored (it was a 500).
# The other uint64 fields are times, refused long before by the freshness rules.
MAX_STORED_INT = 2**63 - 1


def check_record(ctx: ServiceContext, data: Any, now: int | None = None) -> Checked:
    """Schema, size, domain, signature, current role, kind rule, own subject, freshness."""
    if not isinstance(data, dict):
        raise ApiError(
            422, "invalid_record", "a signed record must be a JSON object", got=type(data).__name__
        )
    try:
        signed = load_signed_record(data)
    except LedgerError as exc:
        raise from_typed(exc) from exc
    if signed.payload_size > ctx.settings.max_record_bytes:
        raise ApiError(
            413,
            "record_too_large",
            "detail payload is too large",
            expected=f"<= {ctx.settings.max_record_bytes} bytes",
            got=signed.payload_size,
        )
    if signed.record.nonce > MAX_STORED_INT:
        raise ApiError(
            422,
            "invalid_record",
            "nonce is larger than the store keeps (a signed 64-bit integer)",
            expected=f"<= {MAX_STORED_INT}",
            got=signed.record.nonce,
        )
    try:
        check_domain(signed, ctx.domain)
        struct_hash = "0x" + check_signature(signed).hex()
    except LedgerError as exc:
        raise from_typed(exc) from exc
    record = signed.record
    role, org = ctx.roles.get(record.signer)
    if role is None:
        raise ApiError(
            403,
            "signer_not_registered",
            "signer holds no participant role on chain (unknown or revoked key)",
            got=record.signer,
        )
    if role not in (Role.SUPPLIER, Role.OEM, Role.AUDITOR):
        raise ApiError(
            403,
            "kind_not_allowed",
            f"a {role.value} key does not sign evidence",
            expected=allowed_roles_text(record.kind),
            got=role.value,
        )
    try:
        check_kind_allowed(record.kind, role)
    except LedgerError as exc:
        raise from_typed(exc) from exc
    if (role is Role.SUPPLIER or record.kind in SELF_SUBJECT_KINDS) and record.subject != org:
        raise ApiError(
            403,
            "subject_mismatch",
            "a supplier may only file evidence about itself"
            if role is Role.SUPPLIER
            else f"{record.kind.value} records are about the signer's own organisation",
            expected=org,
            got=record.subject,
        )
    now = int(time.time()) if now is None else now
    skew = ctx.settings.clock_skew_seconds
    if abs(record.signedAt - now) > skew:
        raise ApiError(
            422,
            "stale_signature",
            "signedAt is too far from the service's clock",
            expected=f"{now} +/- {skew}",
            got=record.signedAt,
        )
    if record.eventTime > now + skew:
        raise ApiError(
            422,
            "event_in_future",
            "eventTime is in the future",
            expected=f"<= {now + skew}",
            got=record.eventTime,
        )
    try:
        check_event_time(
            record, max_age_seconds=ctx.settings.max_event_age_seconds, skew_seconds=skew
        )
    except EventTimeOutOfBounds as exc:
        raise ApiError(422, exc.code, str(exc), expected=exc.expected, got=exc.got) from exc
    return checked_row(
        struct_hash, role, record, signed.payload, signed.signature, signed.domain, signed
    )


def checked_row(
    struct_hash: str,
    role: Role,
    record: SignedFields,
    payload: Any,
    signature: str,
    domain: Domain,
    signed: SignedRecord | None = None,
) -> Checked:
    """The one builder of a checked record and its ``records`` row (RECORD_COLUMNS), for the
    model path and the fast path alike, so the two cannot store different rows."""
    return Checked(
        struct_hash,
        role,
        record.kind,
        record.signer,
        record.nonce,
        (
            struct_hash,
            record.signer,
            role.value,
            record.subject,
            record.kind.value,
            record.partNumber,
            record.lotId,
            record.eventTime,
            record.signedAt,
            record.quantity,
            record.defects,
            record.nonce,
            record.salt,
            record.payloadHash,
            payload,
            signature,
            domain.chainId,
            domain.verifyingContract,
        ),
        signed,
    )


# -- the fast path (issue #21) -----------------------------------------------------------------
#
# check_record builds four pydantic models per record and looks up the signer's role per
# record. check_records takes each record through ledger.records.screen_signed_record (plain
# checks, no envelope), the struct hash from the screened values, one recovery through
# libsecp256k1 directly, and every rule of check_record on plain values. Any record it does not
# accept in full (a schema problem, a bad signature, a role or time rule, a kind whose storage
# reads the envelope) goes through check_record instead, which accepts it or refuses it exactly
# as before, with the same error: the fast path decides nothing but "accepted", and only where
# check_record would say the same with the same struct hash and row (tests/api/test_intake_fast.py
# compares the two on a hostile corpus).


class _Pending(NamedTuple):
    """A record the fast path accepts once its signature recovers to its signer."""

    checked: Checked
    digest: bytes
    signature: str
    signer: bytes


def _fast_check(
    ctx: ServiceContext,
    data: Any,
    now: int,
    roles: dict[str, tuple[Role | None, str | None]],
    domain_separator_: bytes,
) -> _Pending | None:
    """Every check of check_record but the recovery, on plain values; None where any fails
    or is not the fast path's to decide."""
    screened = screen_signed_record(data, ctx.domain)
    if (
        screened is None
        or screened.kind in SELF_SUBJECT_KINDS  # storage reads the envelope: model path
        or len(screened.canonical_payload) > ctx.settings.max_record_bytes
        or screened.nonce > MAX_STORED_INT
    ):
        return None
    signer = screened.signer
    known = roles.get(signer)
    if known is None:
        try:
            known = roles[signer] = ctx.roles.get(signer)
        except LedgerError:  # e.g. the ledger contract is gone: check_record answers it
            return None
    role, org = known
    if role is None or role not in KIND_SIGNER_ROLES[screened.kind]:
        return None
    if role is Role.SUPPLIER and screened.subject != org:
        return None
    settings = ctx.settings
    skew, event_time, signed_at = settings.clock_skew_seconds, screened.eventTime, screened.signedAt
    if (
        abs(signed_at - now) > skew
        or event_time > now + skew
        or not signed_at - settings.max_event_age_seconds <= event_time <= signed_at + skew
    ):
        return None
    signer_bytes = bytes.fromhex(signer[2:])
    struct_hash = record_struct_hash_of(
        signer_bytes,
        screened.subject,
        screened.kind.value,
        screened.partNumber,
        screened.lotId,
        event_time,
        signed_at,
        screened.quantity,
        screened.defects,
        screened.nonce,
        bytes.fromhex(screened.salt[2:]),
        bytes.fromhex(screened.payloadHash[2:]),
    )
    digest = keccak(b"\x19\x01" + domain_separator_ + struct_hash)
    hash_hex = "0x" + struct_hash.hex()
    checked = checked_row(
        hash_hex, role, screened, screened.payload, screened.signature, ctx.domain
    )
    return _Pending(checked, digest, screened.signature, signer_bytes)


Recovery = tuple[bytes, str, bytes]  # (digest, signature, the claimed signer's 20 bytes)


class RecoveryPool:
    """Helper processes for the signature recoveries of large batches
    (``Settings.intake_recovery_processes``; none: the calling thread does them).

    Owned by the GroupCommitter (started and stopped with it). A recovery is ~48 us of C per
    record, most of a record's CPU; an API process that holds the store's single writer
    (SQLite) can hand them to another core. A batch is split among the processes; a helper
    that dies, or a pool that cannot start, only means the caller recovers the batch itself
    (and the pool is started again, at most once per RESTART_INTERVAL_SECONDS)."""

    MIN_BATCH = 64  # below this the round trip costs more than it saves
    RESTART_INTERVAL_SECONDS = 10.0
    # A 1,000-record batch takes ~50 ms; a helper that has not answered in this long is lost.
    RESULT_TIMEOUT_SECONDS = 30.0

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._last_start = -float("inf")
        self._stopped = False
        self.failures = 0  # helpers lost (or pools that would not start)

    def start(self) -> None:
        with self._lock:
            self._stopped = False
            self._start_locked()

    def _start_locked(self) -> None:
        if self.processes == 0 or self._pool is not None or self._stopped:
            return
        self._last_start = time.monotonic()
        try:
            # spawn: forking a process that runs threads (the API) is unsafe.
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn")
            )
            # Start the helpers now (each one imports the ledger: ~1 s of CPU), not on the
            # first large batch.
            for _ in range(self.processes):
                self._pool.submit(signatures_recover_to, [])
        except OSError as exc:
            self.failures += 1
            log.error("intake recovery processes not started: %s", exc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _current(self) -> ProcessPoolExecutor | None:
        pool = self._pool
        if (
            pool is None
            and self.processes
            and time.monotonic() - self._last_start >= self.RESTART_INTERVAL_SECONDS
        ):
            with self._lock:
                self._start_locked()
                pool = self._pool
        return pool

    def recover(self, items: list[Recovery]) -> list[bool]:
        pool = self._current() if len(items) >= self.MIN_BATCH else None
        if pool is None:
            return signatures_recover_to(items)
        size = -(-len(items) // self.processes)
        try:
            futures = [
                pool.submit(signatures_recover_to, items[i : i + size])
                for i in range(0, len(items), size)
            ]
            return [ok for future in futures for ok in future.result(self.RESULT_TIMEOUT_SECONDS)]
        except (BrokenProcessPool, OSError, RuntimeError, TimeoutError) as exc:
            # A helper died or hangs (or the pool was shut down meanwhile): recover here; a new
            # pool is started for a later batch.
            self.failures += 1
            log.error("intake recovery process failed (%s); recovering in-process", exc)
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return signatures_recover_to(items)


def check_records(
    ctx: ServiceContext,
    records: list[Any],
    now: int | None = None,
    recovery: RecoveryPool | None = None,
) -> list[Checked | ApiError]:
    """Each record checked as :func:`check_record` checks it: its ``Checked``, or the
    ``ApiError`` check_record raises (other errors propagate, as from check_record). The
    signatures are recovered by ``recovery``'s processes where one is given."""
    now = int(time.time()) if now is None else now
    roles: dict[str, tuple[Role | None, str | None]] = {}  # one mirror lookup per signer
    separator = domain_separator(ctx.domain)
    pending = [_fast_check(ctx, data, now, roles, separator) for data in records]
    # The recoveries apart from the checks: in one loop here, or in helper processes.
    items = [(p.digest, p.signature, p.signer) for p in pending if p is not None]
    verdicts = iter(
        recovery.recover(items) if recovery is not None else signatures_recover_to(items)
    )
    recovered = [p is not None and next(verdicts) for p in pending]
    out: list[Checked | ApiError] = []
    for data, p, ok in zip(records, pending, recovered, strict=True):
        if p is not None and ok:
            out.append(p.checked)
            continue
        try:
            out.append(check_record(ctx, data, now))
        except ApiError as exc:
            out.append(exc)
    return out


def store(ctx: ServiceContext, items: list[tuple[int, Checked]]) -> list[Outcome]:
    """Store checked records in one transaction; duplicates are answered, replays rejected.

    Concurrent writers can still collide on the unique keys between our read and our insert;
    then the transaction is rolled back and the lot reclassified against what is now stored.
    """
    for _ in range(5):
        try:
            with ctx.sessions() as session, session.begin():
                return _store_once(session, items)
        except IntegrityError:
            continue
        except (DBAPIError, PoolTimeout) as exc:
            # A full disk or a database that does not answer: typed, answered 503 (nothing of
            # this transaction was committed, so nothing was acknowledged).
            typed = store_error(exc)
            if typed is None:
                raise
            raise typed from exc
    raise ApiError(409, "conflict", "concurrent submissions of the same records; retry")


@dataclass
class _Job:
    items: list[tuple[int, Checked]]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Outcome] | None = None
    error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


StoreFn = Callable[[ServiceContext, list[tuple[int, Checked]]], list[Outcome]]


def intake_unavailable(why: str) -> ApiError:
    # Retry after 1 s: a dead writer is restarted by the next submit, a stopping service is
    # replaced by its successor within seconds.
    return ApiError(503, "intake_unavailable", why, retry_after=1)


class GroupCommitter:
    """Group commit: concurrent requests of one process share a durable transaction.

    With ``synchronous=FULL`` (SQLite) or ``synchronous_commit=on`` (PostgreSQL) every commit
    waits for the disk; committing each single-record request alone caps intake at the disk's
    flush rate (~100/s here). One writer thread takes whatever jobs are queued, stores them in
    one transaction and wakes every caller only after the commit, so nothing is acknowledged
    before it is durable.

    Lifecycle: the service owns one (``api.main``'s lifespan) and calls :meth:`start` at
    start-up and :meth:`stop` at shutdown, which drains what is queued. Failure: an error of the
    store goes to the callers of that commit (the edge maps it, e.g. 503 ``database_full``). If
    the writer thread itself dies, the jobs it held and every submit while it is down fail at
    once with 503 ``intake_unavailable`` (a caller never waits on a dead thread); the next
    submit restarts it, at most once per ``RESTART_INTERVAL_SECONDS``.
    """

    MAX_GROUP_RECORDS = 2000  # keeps one transaction's lock time bounded
    # How often a waiting caller checks that the writer is still alive: the bound on how long a
    # submit can wait on a thread that has died.
    LIVENESS_POLL_SECONDS = 0.25
    # A commit that takes longer than this is given up by its callers (503; a resubmission is
    # idempotent). SQLite's busy timeout is 30 s: a commit can legitimately wait that long.
    MAX_WAIT_SECONDS = 60.0
    RESTART_INTERVAL_SECONDS = 1.0  # a writer that dies at once is not restarted in a hot loop

    def __init__(self, ctx: ServiceContext, store_fn: StoreFn = store) -> None:
        self.ctx = ctx
        self.store_fn = store_fn
        # The intake's signature-recovery helpers share this lifecycle (none by default).
        self.recovery = RecoveryPool(ctx.settings.intake_recovery_processes)
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_start = -float("inf")
        self.deaths = 0  # writer threads that died (exposed by /healthz)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._stopping = False
            self._start_locked()
        self.recovery.start()

    def _start_locked(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._last_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, commit what is queued, and end the writer thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self.queue.put(None)  # the writer drains the jobs queued before it, then exits
        if thread is not None:
            thread.join(timeout)
        self._fail_queued(intake_unavailable("the service is shutting down"))
        self.recovery.stop()

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _ensure_running(self) -> None:
        if self.alive:
            return
        with self._lock:
            if self._stopping:
                raise intake_unavailable("the service is shutting down")
            if self.alive:
                return
            if time.monotonic() - self._last_start < self.RESTART_INTERVAL_SECONDS:
                raise intake_unavailable("the intake writer failed; retry shortly")
            if self._thread is not None:
                log.error("group-commit writer is down; restarting it")
            self._start_locked()

    # -- callers -----------------------------------------------------------------------------

    def submit(self, items: list[tuple[int, Checked]]) -> list[Outcome]:
        self._ensure_running()
        job = _Job(items)
        self.queue.put(job)
        deadline = time.monotonic() + self.MAX_WAIT_SECONDS
        while not job.done.wait(self.LIVENESS_POLL_SECONDS):
            if not self.alive and not job.done.is_set():
                # The writer died after we queued (its own clean-up fails what it held; this
                # covers a job queued after that clean-up ran).
                raise intake_unavailable("the intake writer failed; retry shortly")
            if time.monotonic() > deadline:
                raise intake_unavailable("the commit did not finish in time; resubmit")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        held: list[_Job] = []
        try:
            while True:
                first = self.queue.get()
                if first is None:
                    return
                held = [first]
                size = len(first.items)
                stop_after = False
                while size < self.MAX_GROUP_RECORDS:
                    try:
                        job = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop_after = True
                        break
                    held.append(job)
                    size += len(job.items)
                self._commit(held)
                held = []
                if stop_after:
                    return
        except BaseException as exc:
            self.deaths += 1
            log.error("group-commit writer died: %s", type(exc).__name__, exc_info=exc)
            failure = intake_unavailable("the intake writer failed; retry shortly")
            for job in held:
                if not job.done.is_set():
                    job.fail(failure)
            self._fail_queued(failure)

    def _fail_queued(self, failure: ApiError) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.fail(failure)

    def _commit(self, jobs: list[_Job]) -> None:
        # One transaction for all jobs; indexes are made global, then split back per job.
        merged: list[tuple[int, Checked]] = []
        owners: list[tuple[int, int]] = []
        for j, job in enumerate(jobs):
            for index, checked in job.items:
                merged.append((len(merged), checked))
                owners.append((j, index))
        try:
            outcomes = self.store_fn(self.ctx, merged)
        except Exception:
            # One bad job must not fail the others: each alone, each with its own answer.
            for job in jobs:
                try:
                    job.result = self.store_fn(self.ctx, job.items)
                except Exception as exc:
                    job.error = exc
                job.done.set()
            return
        per_job: list[list[Outcome]] = [[] for _ in jobs]
        for outcome in outcomes:
            j, index = owners[outcome.index]
            per_job[j].append(Outcome(index, outcome.struct_hash, outcome.status, outcome.error))
        for job, result in zip(jobs, per_job, strict=True):
            job.result = result
            job.done.set()


# Values per lookup statement: far below SQLite's 32,766 bound parameters (a piece of one
# signer's nonces is at most this, and a statement holds whole pieces up to it).
LOOKUP_CHUNK = 5000


def _already_stored(
    session: Session, items: list[tuple[int, Checked]]
) -> tuple[set[str], dict[tuple[str, int], str]]:
    """The struct hashes of ``items`` already stored, and which of their (signer, nonce)
    pairs are used (by which struct hash). Written as driver SQL with one placeholder per
    value: SQLAlchemy's expanding IN compiled ~15 us per record for 1,000 values. The pairs are
    read one index range per signer: a row-value "(signer, nonce) IN (...)" is planned as a
    scan of the whole table by SQLite (3.40)."""
    conn = session.connection()
    placeholder = _PLACEHOLDER.get(conn.dialect.paramstyle)
    hashes = [c.struct_hash for _, c in items]
    nonces: dict[str, list[int]] = {}
    for _, c in items:
        nonces.setdefault(c.signer, []).append(c.nonce)
    if placeholder is None:  # a driver we have not measured: SQLAlchemy's statements
        query = select(Record.struct_hash).where(Record.struct_hash.in_(hashes))
        rows = session.execute(
            select(Record.signer, Record.nonce, Record.struct_hash).where(
                or_(*(and_(Record.signer == s, Record.nonce.in_(n)) for s, n in nonces.items()))
            )
        )
        return set(session.scalars(query)), {(signer, nonce): h for signer, nonce, h in rows}
    known: set[str] = set()
    for start in range(0, len(hashes), LOOKUP_CHUNK):
        chunk = hashes[start : start + LOOKUP_CHUNK]
        sql = (
            "SELECT struct_hash FROM records WHERE struct_hash IN "
            f"({', '.join([placeholder] * len(chunk))})"
        )
        known.update(h for (h,) in conn.exec_driver_sql(sql, tuple(chunk)))
    # (signer, some of its nonces) pieces, grouped into statements of at most ~LOOKUP_CHUNK.
    pieces = [
        (signer, values[i : i + LOOKUP_CHUNK])
        for signer, values in nonces.items()
        for i in range(0, len(values), LOOKUP_CHUNK)
    ]
    used: dict[tuple[str, int], str] = {}
    while pieces:
        group = [pieces.pop()]
        size = 1 + len(group[0][1])
        while pieces and size + 1 + len(pieces[-1][1]) <= LOOKUP_CHUNK:
            size += 1 + len(pieces[-1][1])
            group.append(pieces.pop())
        terms = " OR ".join(
            f"(signer = {placeholder} AND nonce IN ({', '.join([placeholder] * len(n))}))"
            for _, n in group
        )
        params = tuple(v for signer, n in group for v in (signer, *n))
        sql = f"SELECT signer, nonce, struct_hash FROM records WHERE {terms}"
        used.update(((s, n), h) for s, n, h in conn.exec_driver_sql(sql, params))
    return known, used


def _store_once(session: Session, items: list[tuple[int, Checked]]) -> list[Outcome]:
    known, used = _already_stored(session, items)
    outcomes: list[Outcome] = []
    fresh: list[tuple[int, Checked]] = []
    new_rows: list[tuple[Any, ...]] = []
    seq, now = time.time_ns(), utcnow()
    notes = NotificationIntake(session)  # reads nothing until a notification record comes
    for index, checked in items:
        key = (checked.signer, checked.nonce)
        if checked.struct_hash in known:
            outcomes.append(Outcome(index, checked.struct_hash, "duplicate"))
            continue
        if key in used:
            outcomes.append(
                Outcome(
                    index,
                    checked.struct_hash,
                    "rejected",
                    ApiError(
                        409,
                        "nonce_replayed",
                        "this signer already used this nonce for another record",
                        expected="an unused nonce",
                        got=key[1],
                    ),
                )
            )
            continue
        if checked.kind is RecordKind.NOTIFICATION:
            # Its state machine, against the state this transaction commits on.
            out_of_turn = notes.admit(_envelope(checked), checked.struct_hash, checked.role)
            if out_of_turn is not None:
                outcomes.append(Outcome(index, checked.struct_hash, "rejected", out_of_turn))
                continue
        known.add(checked.struct_hash)
        used[key] = checked.struct_hash
        fresh.append((index, checked))
    # Genealogy records (issue 19) state links: refused here if one would close a loop or is
    # already recorded; the links of the others are stored with them.
    genealogy = [
        (i, c.struct_hash, envelope.record, envelope.payload)
        for i, c in fresh
        if c.kind in GENEALOGY_KINDS
        for envelope in (_envelope(c),)
    ]
    refused, links = genealogy_links(session, genealogy)
    for index, checked in fresh:
        if index in refused:
            outcomes.append(Outcome(index, checked.struct_hash, "rejected", refused[index]))
            continue
        new_rows.append(checked.values)
        outcomes.append(Outcome(index, checked.struct_hash, "accepted"))
    if new_rows:
        conn = session.connection()
        _insert_many(conn, cast(Table, Record.__table__), RECORD_COLUMNS, new_rows, (now,))
        _insert_many(
            conn,
            cast(Table, Outbox.__table__),
            OUTBOX_COLUMNS,
            [(row[0], seq + i) for i, row in enumerate(new_rows)],
            (now,),
        )
        insert_links(session, links)
        notes.write()
    return outcomes


def _envelope(checked: Checked) -> SignedRecord:
    """The validated envelope of a record whose storage reads it (those kinds always take the
    model path, which keeps it)."""
    if checked.signed is None:
        raise AssertionError(f"{checked.kind.value} records are checked by check_record")
    return checked.signed


_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _insert_many(
    conn: Connection,
    table: Table,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    common: tuple[Any, ...] = (),
) -> None:
    """One driver-level ``executemany`` of ``rows`` (values of ``columns`` in that order), each
    row followed by the ``common`` values (the transaction's timestamp), every value passed
    through its column type's own SQLAlchemy bind processor, so the stored values are exactly
    what ``conn.execute(insert(table), rows)`` stores. Measured on SQLite: 24 + 14 us per
    record and outbox row against 64 + 39 us through SQLAlchemy's executemany, whose per-row
    parameter handling costs more than the insert itself. Only the columns that have a
    processor (JSON, and dates on SQLite) are touched per row; ``common`` is processed once.
    Driver errors still arrive as SQLAlchemy's (IntegrityError for a unique key), so ``store``
    retries as before."""
    dialect = conn.dialect
    names = columns + _COMMON_COLUMNS[table.name][: len(common)]
    processors = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
    placeholder = _PLACEHOLDER.get(dialect.paramstyle)
    if placeholder is None:  # a driver we have not measured: SQLAlchemy's own path
        conn.execute(insert(table), [dict(zip(names, row + common, strict=True)) for row in rows])
        return
    tail = tuple(
        value if process is None else process(value)
        for value, process in zip(common, processors[len(columns) :], strict=True)
    )
    per_row = [(i, process) for i, process in enumerate(processors[: len(columns)]) if process]
    if per_row:
        params = []
        for row in rows:
            values = list(row)
            for i, process in per_row:
                values[i] = process(values[i])
            params.append((*values, *tail))
    else:
        params = [row + tail for row in rows]
    quote = dialect.identifier_preparer.quote
    column_list = ", ".join(quote(n) for n in names)
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        _copy(conn, f"COPY {quote(table.name)} ({column_list}) FROM STDIN", params)
        return
    sql = (
        f"INSERT INTO {quote(table.name)} ({column_list}) "
        f"VALUES ({', '.join([placeholder] * len(names))})"
    )
    conn.exec_driver_sql(sql, params)


def _copy(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: the rows through COPY on the transaction's own connection (one statement,
    no per-row INSERT for the server to parse and plan). psycopg's errors are raised as
    SQLAlchemy's, as conn.exec_driver_sql raises them (IntegrityError for a unique key)."""
    import psycopg  # the driver of this dialect: present whenever this runs

    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    try:
        with dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            for row in params:
                copy.write_row(row)
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


# The per-transaction columns that follow a table's own values in ``_insert_many``.
_COMMON_COLUMNS: dict[str, tuple[str, ...]] = {
    "records": ("received_at",),
    "outbox": ("created_at",),
}


def submit_many(
    ctx: ServiceContext, records: list[Any], committer: GroupCommitter | None = None
) -> list[Outcome]:
    """Check each record, then store the good ones: through the service's group committer
    when it runs one, else in a transaction of their own (scripts, tests without a server)."""
    outcomes: dict[int, Outcome] = {}
    good: list[tuple[int, Checked]] = []
    recovery = committer.recovery if committer is not None else None
    for index, checked in enumerate(check_records(ctx, records, recovery=recovery)):
        if isinstance(checked, ApiError):
            outcomes[index] = Outcome(index, None, "rejected", checked)
        else:
            good.append((index, checked))
    if good:
        stored = committer.submit(good) if committer is not None else store(ctx, good)
        for outcome in stored:
            outcomes[outcome.index] = outcome
    return [outcomes[i] for i in range(len(records))]
