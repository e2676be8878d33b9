"""Roles without the chain on the request path: a mirror of the ledger's role events.

Intake, sign-in and every authenticated request ask "which role and organisation does this key
hold now". The answer comes from :class:`RoleMirror`, an in-memory fold of the ledger's
``RoleGranted`` / ``RoleRevoked`` / ``ParticipantRegistered`` events kept in the store
(``role_events``), so a slow, paused or dead node never slows a request.

Who writes the mirror:

* :class:`RoleFollower` reads the ledger's logs in bounded block ranges from the block after
  its persisted cursor up to ``tip - (roles_confirmations - 1)``, and stores the events and the
  new cursor in one transaction. It runs as a thread beside the anchorer, in whichever process
  holds the data dir's anchorer lock (:func:`api.anchorer.anchor_when_leader`), and once when a
  process starts (:meth:`ServiceContext.create`). It reads logs and block headers only, never
  historical state, so it works on nodes that prune state history (anvil ``--prune-history``).
* The service's own register/revoke calls store their transaction's events at once.

Every API process folds new rows into its memory at most ``roles_refresh_seconds`` after they
are stored. So a role change made on chain without the service reaches intake within
``roles_poll_seconds + (roles_confirmations - 1) x block time + roles_refresh_seconds`` (plus one
poll's RPC time) while the node answers; while it does not, the mirror keeps the last state it
saw (a revocation sent during an outage takes effect once the node is back).

Events are folded in chain order (block, log index), not in the order they were stored: the
service may store a later event before the follower reaches an earlier one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.counters import CHAIN_ERRORS
from api.settings import Settings
from api.store.models import ChainCursor, Participant, RoleEventRow, utcnow
from ledger.chain import PARTICIPANT_ROLES, ChainClient, Deployment, RoleEvent
from ledger.errors import ChainError, ChainUnavailable, LedgerContractMissing
from ledger.records import Role


class FollowerContext(Protocol):
    """What the follower needs of the service's context (``api.context.ServiceContext``)."""

    settings: Settings
    deployment: Deployment
    sessions: sessionmaker[Session]
    chain: ChainClient
    roles: RoleMirror

    @property
    def read_sessions(self) -> sessionmaker[Session]: ...


log = logging.getLogger("qledger.roles")

CURSOR_NAME = "roles"
LEDGER_MISSING_MESSAGE = (
    "the chain answers but the ledger contract is gone (a reset chain, or another chain behind "
    "the RPC URL): no record can be anchored. Restore the chain (its state file or a node that "
    "kept it) and restart; retry later, nothing was refused"
)
# Rows per INSERT statement: 9 columns x 500 stays far below SQLite's 32,766 bound variables.
INSERT_CHUNK = 500


def _key(address: str) -> str:
    # Lower-case keys: callers hand in checksummed or plain hex; checksumming costs a keccak.
    return address.lower()


def _event_of(row: RoleEventRow) -> RoleEvent:
    return RoleEvent(
        block_number=row.block_number,
        log_index=row.log_index,
        tx_hash=row.tx_hash,
        block_timestamp=row.block_timestamp,
        event=row.event,
        account=row.account,
        role=Role(row.role),
        org_id=row.org_id,
    )


def held_roles(events: Iterable[RoleEvent]) -> set[Role]:
    held: set[Role] = set()
    for event in events:
        if event.event == "granted":
            held.add(event.role)
        elif event.event == "revoked":
            held.discard(event.role)
    return held


def fold(events: Iterable[RoleEvent]) -> tuple[Role | None, str | None]:
    """Current (role, organisation) after ``events`` (in chain order).

    The role is the participant role held (SUPPLIER, OEM or AUDITOR: the contract allows one),
    else ADMIN if held, else None; the organisation is the one the account was first
    registered to (the contract keeps it for life), given only while a role is held.
    """
    events = list(events)
    held = held_roles(events)
    org = next((e.org_id for e in events if e.event == "registered"), None)
    role = next((r for r in PARTICIPANT_ROLES if r in held), None)
    if role is None and Role.ADMIN in held:
        role = Role.ADMIN
    return role, (org if role is not None else None)


class RoleMirror:
    """The mirror as one API process sees it: the store's ``role_events`` folded in memory."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        refresh_seconds: float,
        read_sessions: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        # The refresh runs on whichever request thread finds it due: with read-only sessions
        # it reads a snapshot on SQLite instead of waiting for the write lock.
        self.read_sessions = read_sessions or sessions
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()  # guards the three fields below
        self._events: dict[str, list[RoleEvent]] = {}
        self._state: dict[str, tuple[Role | None, str | None]] = {}
        self._seen_id = 0
        self._generation = 0
        self._ledger_missing: str | None = None
        self._refreshing = threading.Lock()
        self._refreshed_at = float("-inf")
        self.refresh()

    # -- reading (the request path) ---------------------------------------------------------

    def get(self, address: str) -> tuple[Role | None, str | None]:
        """(role, organisation) of ``address`` now; (None, None) for an unknown key.

        Raises LedgerContractMissing while the follower finds the ledger contract gone (a reset
        chain): no answer about roles would be true then, and a 403 would read as final.
        """
        if time.monotonic() - self._refreshed_at >= self.refresh_seconds:
            self.refresh(wait=False)
        if self._ledger_missing is not None:
            raise LedgerContractMissing(self._ledger_missing)
        return self._state.get(_key(address), (None, None))

    def role_history(self, address: str, role: Role) -> list[tuple[int, int]]:
        """Intervals ``(grantedAt, revokedAt)`` (block timestamps, 0 = still held), oldest
        first: the contract's ``roleHistory`` as far as the mirror has read."""
        with self._lock:
            events = list(self._events.get(_key(address), ()))
        intervals: list[tuple[int, int]] = []
        for event in events:
            if event.role is not role:
                continue
            if event.event == "granted":
                intervals.append((event.block_timestamp, 0))
            elif event.event == "revoked" and intervals and intervals[-1][1] == 0:
                intervals[-1] = (intervals[-1][0], event.block_timestamp)
        return intervals

    def had_role_at(self, role: Role, address: str, timestamp: int) -> bool:
        """The contract's ``hadRoleAt`` from the mirror: ``grantedAt <= t < revokedAt``."""
        return any(
            granted <= timestamp and (revoked == 0 or timestamp < revoked)
            for granted, revoked in self.role_history(address, role)
        )

    # -- loading ----------------------------------------------------------------------------

    def refresh(self, *, wait: bool = True) -> None:
        """Fold rows stored since the last refresh (by any process) into memory.

        With ``wait=False`` a request never queues behind another thread's refresh: it reads
        the state as it is. A database error keeps the last state (and is logged): a store
        that is down fails the request's own write anyway, with its own answer.
        """
        if not self._refreshing.acquire(blocking=wait):
            return
        try:
            with self.read_sessions() as s:
                cursor = s.get(ChainCursor, CURSOR_NAME)
                generation = cursor.generation if cursor is not None else 0
                self._ledger_missing = (
                    LEDGER_MISSING_MESSAGE if cursor is not None and cursor.ledger_missing else None
                )
                since = 0 if generation != self._generation else self._seen_id
                rows = list(
                    s.scalars(
                        select(RoleEventRow)
                        .where(RoleEventRow.id > since)
                        .order_by(RoleEventRow.id)
                    )
                )
            if generation != self._generation:
                # The follower rebuilt the mirror (a reorganisation deeper than its
                # confirmations): start over from what is stored now.
                with self._lock:
                    self._events, self._state, self._seen_id = {}, {}, 0
                    self._generation = generation
            if rows:
                self._merge([_event_of(r) for r in rows], max(r.id for r in rows))
        except DBAPIError as exc:
            log.error("role mirror not refreshed: database unavailable (%s)", exc.orig)
        finally:
            self._refreshed_at = time.monotonic()
            self._refreshing.release()

    def _merge(self, events: list[RoleEvent], seen_id: int | None = None) -> None:
        with self._lock:
            touched: set[str] = set()
            for event in events:
                key = _key(event.account)
                known = self._events.setdefault(key, [])
                position = (event.block_number, event.log_index)
                if any((e.block_number, e.log_index) == position for e in known):
                    continue
                known.append(event)
                touched.add(key)
            for key in touched:
                self._events[key].sort(key=lambda e: (e.block_number, e.log_index))
                self._state[key] = fold(self._events[key])
            if seen_id is not None:
                self._seen_id = max(self._seen_id, seen_id)

    # -- writing ----------------------------------------------------------------------------

    def record(self, events: list[RoleEvent]) -> None:
        """Store events the service saw first (its own transactions) and apply them now
        (the ``participants`` registry too)."""
        with self.sessions() as s, s.begin():
            _insert_events(s, events)
        self._merge(events)

    def reset(self) -> None:
        with self._lock:
            self._events, self._state, self._seen_id = {}, {}, 0


def _insert_events(session: Session, events: list[RoleEvent]) -> None:
    """Insert events, skipping any (block, log index) already stored."""
    rows = [
        {
            "block_number": e.block_number,
            "log_index": e.log_index,
            "tx_hash": e.tx_hash,
            "block_timestamp": e.block_timestamp,
            "event": e.event,
            "account": e.account,
            "role": e.role.value,
            "org_id": e.org_id,
        }
        for e in events
    ]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), INSERT_CHUNK):
        statement = (
            dialect.insert(RoleEventRow)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["block_number", "log_index"])
        )
        session.execute(statement)
    _update_participants(session, {e.account for e in events})


def _update_participants(session: Session, accounts: set[str]) -> None:
    """Bring the service's ``participants`` rows of ``accounts`` in line with their stored
    events (a key the service registered, revoked or re-registered on chain directly).

    Keys registered only on chain get no row: the registry lists (and the ranking counts as
    registered suppliers) the keys this service registered, as before; intake knows every
    key's role from ``role_events`` whoever registered it."""
    for account in sorted(accounts):
        events = [
            _event_of(r)
            for r in session.scalars(
                select(RoleEventRow)
                .where(RoleEventRow.account == account)
                .order_by(RoleEventRow.block_number, RoleEventRow.log_index)
            )
        ]
        registrations = [e for e in events if e.event == "registered"]
        if not registrations:
            continue  # roles granted without registration (ADMIN, ANCHORER): not participants
        last = registrations[-1]
        active = last.role in held_roles(events)
        row = session.get(Participant, account)
        if row is None:
            continue
        row.org_id = registrations[0].org_id or ""
        row.role = last.role.value
        row.active = active
        row.registered_at = datetime.fromtimestamp(last.block_timestamp, UTC)
        revoked = [e for e in events if e.event == "revoked" and e.role is last.role]
        row.revoked_at = (
            None
            if active or not revoked
            else datetime.fromtimestamp(revoked[-1].block_timestamp, UTC)
        )
        row.tx_hash = (revoked[-1] if not active and revoked else last).tx_hash


@dataclass(frozen=True)
class SyncReport:
    """What one catch-up read: blocks ``[from_block, to_block]`` (empty if from > to)."""

    from_block: int
    to_block: int
    events: int
    tip: int
    rebuilt: bool = False


class RoleFollower:
    """Keeps ``role_events`` up with the chain; one per process that holds the anchorer lock."""

    def __init__(self, ctx: FollowerContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._sync_lock = threading.Lock()

    @cached_property
    def start_block(self) -> int:
        """Where a follower with no cursor starts: the ledger's deployment block."""
        return self.ctx.deployment.deployed_block

    def cursor(self) -> ChainCursor | None:
        with self.ctx.read_sessions() as s:
            return s.get(ChainCursor, CURSOR_NAME)

    def sync(self) -> SyncReport:
        """Catch up to the confirmed tip; resumable after any failure (the cursor moves only
        with the events it covers)."""
        with self._sync_lock:
            return self._sync()

    def _sync(self) -> SyncReport:
        chain = self.ctx.chain
        tip, _, _ = chain.block_header("latest")
        safe = tip - (self.settings.roles_confirmations - 1)
        cursor = self.cursor()
        rebuilt = False
        if cursor is not None and not cursor.block_hash:
            pass  # just rebuilt: nothing read yet, nothing to compare
        elif cursor is not None and cursor.block_number <= tip:
            _, block_hash, _ = chain.block_header(cursor.block_number)
            if block_hash != cursor.block_hash:
                self._unless_ledger_missing()
                self._rebuild(cursor, block_hash)
                cursor, rebuilt = None, True
        elif cursor is not None:
            # The chain is shorter than what we read: it was reset or reorganised under us.
            self._unless_ledger_missing()
            self._rebuild(cursor, None)
            cursor, rebuilt = None, True
        first = cursor.block_number + 1 if cursor is not None else self.start_block
        start, found = first, 0
        while start <= safe:
            end = min(start + self.settings.roles_max_block_range - 1, safe)
            events, end = self._read(start, end)
            _, end_hash, _ = chain.block_header(end)
            with self.ctx.sessions() as s, s.begin():
                _insert_events(s, events)
                self._advance(s, end, end_hash, tip)
            found += len(events)
            start = end + 1
        if first > safe:
            with self.ctx.sessions() as s, s.begin():
                if cursor is not None:
                    self._advance(s, cursor.block_number, cursor.block_hash, tip)
        self.ctx.roles.refresh()
        return SyncReport(first, safe, found, tip, rebuilt)

    def _read(self, start: int, end: int) -> tuple[list[RoleEvent], int]:
        """Events in ``[start, end]``; halves the range while the node refuses it as too big
        (providers cap the blocks or results of one ``eth_getLogs``). Returns the end read."""
        while True:
            try:
                return self.ctx.chain.role_events(start, end), end
            except ChainUnavailable:
                raise
            except ChainError:
                if end == start:
                    raise
                end = start + (end - start) // 2

    def _advance(self, s: Session, block: int, block_hash: str, tip: int) -> None:
        """Move the cursor to ``block`` (an upsert: processes starting at once all catch up;
        the cursor never goes back)."""
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(ChainCursor).values(
            name=CURSOR_NAME,
            block_number=block,
            block_hash=block_hash,
            tip=tip,
            synced_at=utcnow(),
            generation=0,
            ledger_missing=False,
        )
        s.execute(
            statement.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "ledger_missing": False,
                    "block_number": statement.excluded.block_number,
                    "block_hash": statement.excluded.block_hash,
                    "tip": statement.excluded.tip,
                    "synced_at": statement.excluded.synced_at,
                },
                where=ChainCursor.block_number <= statement.excluded.block_number,
            )
        )

    def _unless_ledger_missing(self) -> None:
        """Before a rebuild: a chain without the ledger contract (reset, or another chain behind
        the URL) must not empty the mirror, which would refuse every key as unregistered (a
        403 reads as final). Flag it instead (intake answers 503) and raise."""
        missing = self.ctx.chain.ledger_missing()
        if missing is None:
            return
        with self.ctx.sessions() as s, s.begin():
            row = s.get(ChainCursor, CURSOR_NAME)
            if row is not None:
                row.ledger_missing = True
        self.ctx.roles.refresh()
        raise missing

    def _rebuild(self, cursor: ChainCursor, now_hash: str | None) -> None:
        log.error(
            "block %s is no longer %s (now %s): the chain reorganised deeper than %d "
            "confirmation(s) or was reset; rebuilding the role mirror from block %s",
            cursor.block_number,
            cursor.block_hash,
            now_hash,
            self.settings.roles_confirmations,
            self.start_block,
        )
        with self.ctx.sessions() as s, s.begin():
            s.execute(delete(RoleEventRow))
            row = s.get(ChainCursor, CURSOR_NAME)
            assert row is not None
            generation = row.generation + 1
            s.delete(row)
            s.flush()
            # A row with nothing read yet carries the new generation, so every process
            # drops what it folded before (RoleMirror.refresh).
            s.add(
                ChainCursor(
                    name=CURSOR_NAME,
                    block_number=self.start_block - 1,
                    block_hash="",
                    tip=cursor.tip,
                    synced_at=utcnow(),
                    generation=generation,
                )
            )
        self.ctx.roles.refresh()

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until ``stop``; a node or database outage backs off up to the anchorer's cap."""
        poll = self.settings.roles_poll_seconds
        delay = poll
        while not stop.is_set():
            try:
                self.sync()
                delay = poll
            except (ChainError, DBAPIError) as exc:
                delay = min(max(delay * 2, poll), self.settings.retry_max_seconds)
                if isinstance(exc, ChainError):
                    CHAIN_ERRORS.labels("role_follower").inc()
                log.warning("role follower: %s; retrying in %.1f s", exc, delay)
            stop.wait(delay)

    def status(self) -> dict[str, Any]:
        """The follower's lag as stored (any process can answer, the chain need not)."""
        cursor = self.cursor()
        if cursor is None:
            return {"cursorBlock": None, "chainTip": None, "lagBlocks": None, "syncedAt": None}
        synced: datetime = cursor.synced_at
        if synced.tzinfo is None:
            synced = synced.replace(tzinfo=utcnow().tzinfo)
        age = max(0.0, (utcnow() - synced).total_seconds())
        bound = (
            self.settings.roles_poll_seconds
            + self.settings.roles_refresh_seconds
            + self.settings.retry_max_seconds
        )
        return {
            "cursorBlock": cursor.block_number,
            "chainTip": cursor.tip,
            "lagBlocks": max(0, cursor.tip - cursor.block_number),
            "syncedAt": synced.isoformat(),
            "secondsSinceSync": round(age, 3),
            # Behind by more than a poll (and one backoff): the node is not answering or the
            # follower is not running; intake goes on with the last state it saw.
            "stale": age > bound,
        }
