"""The service's transparency log (ledger.tlog) on top of the store.

The anchorer appends entries in the same database transaction that makes a batch confirmed or
a commitment committed, and signs a checkpoint over the new tree in that transaction too: an
entry, its checkpoint and the state change are all there or none is. Only the anchorer (one
process, under the data dir's lock) appends; API processes read.

Each process keeps the tree's leaf hashes in memory (loaded once, then only new rows), so a
proof costs O(log n) hashing after the first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from api.batch_trees import record_proof
from api.context import ServiceContext
from api.errors import ApiError
from api.store.db import placeholder
from api.store.models import Batch, LogCheckpoint, LogCosignature, LogEntry, Record, utcnow
from api.views import receipt
from ledger.tlog import (
    COSIGNATURE_V1,
    EMPTY_ROOT,
    Checkpoint,
    LogError,
    LogProof,
    LogTree,
    Note,
    Signer,
    Verifier,
    cosignature_time,
    leaf_hash,
    ledger_origin,
    node_hash,
    note_signature_valid,
    parse_note,
    record_entry,
    sign_checkpoint,
)

LOG_KEY_FILE = "log-signing-key"  # in the data dir, 0600, C2SP/x-mod-note PRIVATE+KEY form
# Cosignatures kept per checkpoint: signed-note verifiers must accept 16 signatures, ours 64
# (ledger.tlog.note.MAX_SIGNATURES); one slot stays for the log's own signature.
MAX_COSIGNATURES = 48
# Entry data looked up per query when skipping what is already logged: under SQLite's default
# limit of 32,766 bound parameters (and PostgreSQL's 65,535), whatever a backfill hands in.
LOOKUP_CHUNK = 1000

_lock = threading.Lock()
_trees: dict[str, LogTree] = {}


class Frontier:
    """The log's compact range: the hashes of the largest full subtrees that cover leaves
    [0, size), largest (leftmost) first, one per set bit of ``size``. RFC 6962's root of the
    first ``size`` leaves is their fold from the right, so the root after appending m leaves
    costs about m hashes, with the tree itself left as it is (LogTree only grows by rows
    already committed; copying it, or cutting it back, costs time in its whole size)."""

    def __init__(self) -> None:
        self.size = 0
        self._nodes: list[tuple[int, bytes]] = []  # (height, subtree hash)

    def push(self, leaf: bytes) -> None:
        height, digest = 0, leaf
        while self._nodes and self._nodes[-1][0] == height:
            digest = node_hash(self._nodes.pop()[1], digest)
            height += 1
        self._nodes.append((height, digest))
        self.size += 1

    def copy(self) -> Frontier:
        twin = Frontier()
        twin.size, twin._nodes = self.size, list(self._nodes)
        return twin

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        digest = self._nodes[-1][1]
        for _, left in reversed(self._nodes[:-1]):
            digest = node_hash(left, digest)
        return digest


_frontiers: dict[str, Frontier] = {}  # per database, always the size of _trees[url]
_signers: dict[Path, Signer] = {}


def origin_of(ctx: ServiceContext) -> str:
    return ledger_origin(ctx.deployment.chain_id, ctx.deployment.ledger)


def log_signer(ctx: ServiceContext) -> Signer:
    """The log's Ed25519 key, made once into the data dir (its vkey is public: /v1/log/key)."""
    path = ctx.settings.data_dir / LOG_KEY_FILE
    with _lock:
        signer = _signers.get(path.resolve()) if path.exists() else None
        if signer is None:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(Signer.generate(origin_of(ctx)).encode() + "\n")
                tmp.chmod(0o600)
                try:
                    os.link(tmp, path)  # never replaces a key another process made first
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            signer = Signer.decode(path.read_text())
            _signers[path.resolve()] = signer
    if signer.name != origin_of(ctx):
        raise RuntimeError(
            f"{path} signs for {signer.name}, but this service is {origin_of(ctx)}: "
            "a data dir serves one ledger deployment"
        )
    return signer


def _synced(session: Session, url: str) -> LogTree:
    """This process's tree, brought up to the rows ``session`` sees. Caller holds _lock."""
    tree = _trees.setdefault(url, LogTree())
    frontier = _frontiers.setdefault(url, Frontier())
    # Indexes run 0..n-1 with no gap (append-only, one appender), so the size is the largest
    # index + 1: one step down the primary key, where count(*) reads every row each time.
    top = session.scalar(select(func.max(LogEntry.idx)))
    count = 0 if top is None else int(top) + 1
    if count < len(tree):  # a database restored from backup: start over
        tree.truncate(0)
    if frontier.size != len(tree):  # a tree started over (or dropped, by a test): follow it
        frontier = _frontiers[url] = Frontier()
        for index in range(len(tree)):
            frontier.push(tree.leaf(index))
    if count > len(tree):
        new = [
            bytes.fromhex(h[2:])
            for h in session.scalars(
                select(LogEntry.leaf_hash).where(LogEntry.idx >= len(tree)).order_by(LogEntry.idx)
            )
        ]
        tree.extend(new)
        for leaf in new:
            frontier.push(leaf)
    return tree


@dataclass(frozen=True)
class NewEntry:
    kind: str  # "record" | "commitment"
    ref: str  # 0x struct hash or commitment root
    data: bytes


def append_and_sign(ctx: ServiceContext, session: Session, entries: Sequence[NewEntry]) -> int:
    """Append ``entries`` (inside the caller's transaction) and sign the new checkpoint.

    Entries already in the log (the same data) are skipped, so a step redone after a crash
    appends nothing twice. Returns the new tree size.
    """
    signer = log_signer(ctx)
    url = ctx.settings.db_url
    with _lock:
        tree = _synced(session, url)
        size = len(tree)
        known: set[str] = set()
        datas = [e.data.hex() for e in entries]
        conn = session.connection()
        mark = placeholder(conn.dialect)
        for start in range(0, len(datas), LOOKUP_CHUNK):
            chunk = datas[start : start + LOOKUP_CHUNK]
            # Driver SQL: SQLAlchemy's expanding IN compiles ~15 us per value, and this runs
            # for every entry of a batch inside the transaction that confirms it.
            known.update(
                d
                for (d,) in conn.exec_driver_sql(
                    "SELECT data FROM log_entries WHERE data IN "
                    f"({', '.join([mark] * len(chunk))})",
                    tuple(chunk),
                )
            )
        fresh = [(e, d) for e, d in zip(entries, datas, strict=True) if d not in known]
        if not fresh:
            return size
        hashes = [leaf_hash(e.data) for e, _ in fresh]
        now = utcnow()
        # One driver-level executemany of plain tuples, not an ORM object (32 us) nor Core's
        # executemany (6.8 us, its per-row parameter handling) per entry: this runs inside the
        # transaction that confirms a batch, which holds SQLite's one write lock. Only the
        # timestamp needs its column type's bind processing, once.
        dialect = conn.dialect
        table = cast(Table, LogEntry.__table__)
        process = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        stamp = now if process is None else process(now)
        conn.exec_driver_sql(
            "INSERT INTO log_entries (idx, kind, ref, data, leaf_hash, created_at) "
            f"VALUES ({', '.join([mark] * 6)})",
            [
                (size + offset, entry.kind, entry.ref.lower(), data, "0x" + digest.hex(), stamp)
                for offset, ((entry, data), digest) in enumerate(zip(fresh, hashes, strict=True))
            ],
        )
        # The root over the new entries, from a copy of the frontier: the in-memory tree only
        # ever holds committed rows (read back on the next sync), so a rolled-back
        # transaction leaves no trace there.
        grown = _frontiers[url].copy()
        assert grown.size == size, (grown.size, size)
        for digest in hashes:
            grown.push(digest)
        root = grown.root()
        new_size = size + len(fresh)
        note = sign_checkpoint(Checkpoint(origin_of(ctx), new_size, root), signer)
        session.execute(
            insert(LogCheckpoint).values(
                size=new_size, root="0x" + root.hex(), note=note.encode(), created_at=now
            )
        )
        return new_size


# -- reads -----------------------------------------------------------------------------------


def _cosigned_note(session: Session, row: LogCheckpoint) -> str:
    note = parse_note(row.note)
    lines = list(
        session.scalars(
            select(LogCosignature.line)
            .where(LogCosignature.size == row.size)
            .order_by(LogCosignature.id)
        )
    )
    extra = [parse_note(note.text + "\n" + line).signatures[0] for line in lines]
    return note.with_signatures(extra).encode()


def _checkpoint_row(session: Session, size: int | None) -> LogCheckpoint:
    if size is None:
        row = session.scalar(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1))
        if row is None:
            raise ApiError(404, "no_checkpoint", "nothing has been logged yet")
        return row
    row = session.get(LogCheckpoint, size)
    if row is None:
        raise ApiError(404, "checkpoint_not_found", "no checkpoint at this tree size", got=size)
    return row


def checkpoint_note(ctx: ServiceContext, size: int | None = None) -> str:
    """The signed checkpoint (latest, or at ``size``) with every cosignature collected."""
    with ctx.sessions() as s:
        return _cosigned_note(s, _checkpoint_row(s, size))


def consistency_proof(ctx: ServiceContext, old: int, new: int) -> list[bytes]:
    with ctx.sessions() as s, _lock:
        latest = _checkpoint_row(s, None).size
        if not 0 <= old <= new <= latest:
            raise ApiError(
                400,
                "bad_tree_sizes",
                "need 0 <= from <= to <= the latest checkpoint's size",
                expected=f"0 <= from <= to <= {latest}",
                got={"from": old, "to": new},
            )
        return _synced(s, ctx.settings.db_url).consistency_proof(old, new)


def log_proof(
    ctx: ServiceContext,
    kind: str,
    ref: str,
    size: int | None = None,
    data: bytes | None = None,
    session: Session | None = None,
) -> LogProof | None:
    """The inclusion proof of the (newest) entry for ``ref`` in a checkpoint, or None while
    it is not logged. Without ``size``: the newest checkpoint that carries cosignatures, else
    the newest (a witness cosigns the latest it sees, not every one). Reads in ``session``
    when given (the caller's), else in a session of its own."""
    with contextlib.ExitStack() as stack:
        s = session if session is not None else stack.enter_context(ctx.sessions())
        with _lock:
            return _log_proof(s, ctx, kind, ref, size, data)


def _log_proof(
    s: Session, ctx: ServiceContext, kind: str, ref: str, size: int | None, data: bytes | None
) -> LogProof | None:
    query = select(LogEntry).where(LogEntry.kind == kind, LogEntry.ref == ref.lower())
    if data is not None:
        query = query.where(LogEntry.data == data.hex())
    entry = s.scalar(query.order_by(LogEntry.idx.desc()).limit(1))
    if entry is None:
        return None
    if size is None:
        row = s.scalar(
            select(LogCheckpoint)
            .where(
                LogCheckpoint.size > entry.idx,
                LogCheckpoint.size.in_(select(LogCosignature.size)),
            )
            .order_by(LogCheckpoint.size.desc())
            .limit(1)
        ) or _checkpoint_row(s, None)
    else:
        row = _checkpoint_row(s, size)
    if row.size <= entry.idx:
        raise ApiError(
            409,
            "checkpoint_too_old",
            "that checkpoint does not cover the entry",
            expected=f"size > {entry.idx}",
            got=row.size,
        )
    tree = _synced(s, ctx.settings.db_url)
    proof = tree.inclusion_proof(entry.idx, row.size)
    return LogProof(
        index=entry.idx,
        treeSize=row.size,
        inclusion=["0x" + h.hex() for h in proof],
        checkpoint=_cosigned_note(s, row),
    )


def add_cosignature(ctx: ServiceContext, size: int, vkey: str, line: str) -> dict[str, object]:
    """Keep a witness's cosignature on the checkpoint at ``size`` if it verifies."""
    single = line.removesuffix("\n")
    if "\n" in single:
        raise ApiError(422, "cosignature", "send exactly one signature line", got=line[:200])
    line = single + "\n"
    try:
        witness = Verifier.parse(vkey, expect_type=COSIGNATURE_V1)
        with ctx.sessions() as s:
            row = _checkpoint_row(s, size)
            note = parse_note(row.note)
            sig = parse_note(note.text + "\n" + line).signatures
    except LogError as exc:
        raise ApiError(422, exc.code, str(exc)) from exc
    if len(sig) != 1 or not witness.matches(sig[0]):
        raise ApiError(
            422,
            "cosignature",
            "send exactly one signature line, by the key the vkey names",
            expected=f"{witness.name}+{witness.key_id.hex()}",
            got=[f"{x.name}+{x.key_id.hex()}" for x in sig],
        )
    if not note_signature_valid(witness, Note(note.text, ()), sig[0]):
        raise ApiError(422, "cosignature", "the cosignature does not verify for this checkpoint")
    with ctx.sessions() as s, s.begin():
        if s.scalar(
            select(LogCosignature.id).where(
                LogCosignature.size == size, LogCosignature.vkey == witness.vkey
            )
        ):
            return {"size": size, "witness": witness.vkey, "stored": False, "duplicate": True}
        held = (
            s.scalar(
                select(func.count()).select_from(LogCosignature).where(LogCosignature.size == size)
            )
            or 0
        )
        if held >= MAX_COSIGNATURES:
            raise ApiError(
                409,
                "cosignatures_full",
                "this checkpoint holds the most cosignatures it keeps",
                expected=MAX_COSIGNATURES,
                got=held,
            )
        s.add(
            LogCosignature(
                size=size,
                vkey=witness.vkey,
                line=sig[0].line(),
                timestamp=cosignature_time(sig[0]),
            )
        )
    return {"size": size, "witness": witness.vkey, "stored": True, "duplicate": False}


def served_receipt(
    ctx: ServiceContext,
    row: Record,
    batch: Batch,
    log_size: int | None = None,
    session: Session | None = None,
) -> dict[str, Any]:
    """A confirmed record's receipt as the service serves it: with its transparency-log proof
    once the record is logged (what ``GET /v1/records/{hash}/receipt`` answers, and what a
    reconciliation keeps of a receipt it supersedes). Reads in ``session`` when given."""
    body = receipt(row, batch, record_proof(ctx, batch, row.struct_hash, session))
    logged = log_proof(
        ctx,
        "record",
        row.struct_hash,
        log_size,
        data=record_entry(row.struct_hash, batch.root),
        session=session,
    )
    if logged is not None:
        body["log"] = logged.model_dump()
    return body
