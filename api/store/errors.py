"""Typed errors of the store: the database cannot take or give data right now.

Like ``ledger.errors``, each class carries its machine ``code`` and ``http_status`` so the HTTP
edge maps it without a table. Built from a DBAPI error by :func:`store_error`, which keeps the
driver's text (SQL, parameters, file paths) out of what a client sees.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


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

    def __init__(self, message: str = "the database is unavailable; retry later") -> None:
        super().__init__(message)
        self.message = message


class StoreFull(StoreUnavailable):
    """The database's disk is full: nothing new can be stored until space is freed."""

    code = "database_full"
    retry_after_seconds = 60  # freeing disk space takes an operator; retrying soon cannot help

    def __init__(self, message: str = "the database's storage is full; retry later") -> None:
        super().__init__(message)


# SQLite: SQLITE_FULL's message; PostgreSQL: SQLSTATE 53100 disk_full (class 53, insufficient
# resources), whose text names the failing write ("could not extend file ... No space left").
_FULL_MARKERS = ("database or disk is full", "no space left on device")
_PG_DISK_FULL = "53100"


def store_error(exc: DBAPIError) -> StoreUnavailable:
    """The typed store error for an operational database failure."""
    orig = exc.orig
    text = str(orig).lower()
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate == _PG_DISK_FULL or any(marker in text for marker in _FULL_MARKERS):
        return StoreFull()
    return StoreUnavailable()
