"""Typed errors of the store: the database cannot take or give data right now.

A full disk or a database that does not answer is the service's condition, not the client's
mistake: answered 503 with ``Retry-After``. Like ``ledger.errors``, each class carries its
machine ``code`` and ``http_status`` so the HTTP edge maps it without a table.

``store_error(exc)`` maps a driver error (SQLite, psycopg) to :class:`StoreFull` or
:class:`StoreUnavailable`, or None when the error is not about availability (a constraint or a
bug, which must surface as it is: IntegrityError, ProgrammingError, DataError). It keeps the
driver's text (SQL, parameters, file paths) out of what a client sees. Nothing is acknowledged
before its transaction commits, so a 503 never hides a lost record: the client sends it again.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLite result texts (sqlite3 raises OperationalError with the result code's message):
# SQLITE_FULL (and the OS's ENOSPC text), and the ones that mean the file cannot be read or
# written right now.
FULL_TEXTS = ("database or disk is full", "no space left on device")
SQLITE_UNAVAILABLE_TEXTS = (
    "disk i/o error",
    "unable to open database file",
    "database is locked",
    "attempt to write a readonly database",
)
# PostgreSQL SQLSTATEs: 53100 disk_full; class 53 insufficient resources; class 08 connection
# exceptions; 57P01-57P03 admin shutdown, crash shutdown, cannot connect now (a restart).
PG_FULL_STATES = ("53100",)
PG_UNAVAILABLE_PREFIXES = ("08", "53", "57P0")


class StoreUnavailable(Exception):
    """The database did not answer or refused the transaction (connection, lock, I/O)."""

    code = "database_unavailable"
    http_status = 503
    # SQLite waits out a held write lock for 30 s (busy_timeout); a PostgreSQL failover takes
    # seconds. A client retrying after 5 s does not pile onto a database that is recovering.
    retry_after_seconds: int | None = 5
    message_is_public = True
    expected: object = None
    got: object = None

    def __init__(
        self, message: str = "the database is unavailable; nothing was stored, retry later"
    ) -> None:
        super().__init__(message)
        self.message = message


class StoreFull(StoreUnavailable):
    """The database's disk is full: nothing new can be stored until space is freed."""

    code = "database_full"
    retry_after_seconds = 60  # freeing disk space takes an operator; retrying soon cannot help

    def __init__(
        self, message: str = "the database is full; nothing was stored, send it again later"
    ) -> None:
        super().__init__(message)


def store_error(exc: BaseException) -> StoreUnavailable | None:
    """The typed store error for a driver failure, or None if it is not about availability."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable("no database connection free in time; nothing was stored, retry")
    if not isinstance(exc, DBAPIError):
        return None
    original = exc.orig
    text = str(original).lower()
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if any(t in text for t in FULL_TEXTS) or (state is not None and state in PG_FULL_STATES):
        return StoreFull()
    if any(t in text for t in SQLITE_UNAVAILABLE_TEXTS):
        return StoreUnavailable()
    if state is not None and str(state).startswith(PG_UNAVAILABLE_PREFIXES):
        return StoreUnavailable()
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        # OperationalError is the driver's "the database could not do it" (a lost or refused
        # connection: psycopg gives no SQLSTATE when it cannot connect at all). Constraint,
        # programming and data errors are other classes: bugs, which surface as they are.
        return StoreUnavailable()
    return None
