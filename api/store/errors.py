"""The store's own failures, typed: a full disk or a database that does not answer is the
service's condition, not the client's mistake, and is answered 503 with ``Retry-After``.

``store_error(exc)`` maps a driver error (SQLite, psycopg) to :class:`StoreFull` or
:class:`StoreUnavailable`, or None when the error is not about availability (a constraint or a
bug, which must surface as it is). Nothing is acknowledged before its transaction commits, so a
503 never hides a lost record: the client sends it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# Retry-After hints (seconds). Space has to be freed by an operator: a minute. A restart,
# failover or lock contention usually clears within seconds.
FULL_RETRY_AFTER_SECONDS = 60
UNAVAILABLE_RETRY_AFTER_SECONDS = 5

# SQLite result texts (sqlite3 raises OperationalError with the result code's message):
# SQLITE_FULL, and the ones that mean the file cannot be read or written right now.
SQLITE_FULL_TEXT = "database or disk is full"
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


class StoreError(Exception):
    """A store failure a client can only wait out: 503 with a code and ``Retry-After``."""

    status = 503
    code = "store_unavailable"
    retry_after = UNAVAILABLE_RETRY_AFTER_SECONDS

    def __init__(self, message: str, *, expected: Any = None, got: Any = None) -> None:
        super().__init__(message)
        self.message, self.expected, self.got = message, expected, got

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.expected is not None:
            err["expected"] = self.expected
        if self.got is not None:
            err["got"] = self.got
        return {"error": err}


class StoreFull(StoreError):
    code = "store_full"
    retry_after = FULL_RETRY_AFTER_SECONDS


class StoreUnavailable(StoreError):
    code = "store_unavailable"


def store_error(exc: BaseException) -> StoreError | None:
    """The typed store error for a driver failure, or None if it is not about availability."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable("no database connection free in time; retry", got="pool timeout")
    if not isinstance(exc, DBAPIError):
        return None
    original = exc.orig
    text = str(original).lower()
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if SQLITE_FULL_TEXT in text or (state is not None and state in PG_FULL_STATES):
        return StoreFull(
            "the database is full; nothing was stored from this request, send it again later",
            got="disk full",
        )
    if any(t in text for t in SQLITE_UNAVAILABLE_TEXTS):
        return StoreUnavailable(
            "the database cannot be written right now; nothing was stored, retry",
            got=text.split("\n", 1)[0][:80],
        )
    if state is not None and str(state).startswith(PG_UNAVAILABLE_PREFIXES):
        return StoreUnavailable(
            "the database is unavailable; nothing was stored, retry", got=f"SQLSTATE {state}"
        )
    if exc.connection_invalidated or (
        isinstance(exc, OperationalError)
        and state is None
        and type(original).__module__.startswith("psycopg")
    ):
        # psycopg raises OperationalError without a SQLSTATE when it cannot connect at all.
        return StoreUnavailable("the database is unreachable; nothing was stored, retry")
    return None
