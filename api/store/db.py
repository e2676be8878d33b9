"""Engine and sessions. SQLite by default (WAL, synchronous=FULL: an acknowledged record survives
power loss), PostgreSQL by URL. The schema is owned by Alembic migrations in api/migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Execution option (and pooled-connection info key) of read-only sessions.
READ_ONLY = "qledger_read_only"
_OPENED_QUERY_ONLY = "qledger_opened_query_only"  # pooled-connection info key


def _json(value: object) -> str:
    # orjson: payload columns are serialised on every insert; ~5x faster than json.dumps.
    return orjson.dumps(value).decode()


# A driver's positional placeholder, for statements written as driver SQL where SQLAlchemy's
# expanding IN compiles ~15 us per value (api.intake, api.anchorer): sqlite3 and psycopg.
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def placeholder(dialect: Dialect) -> str:
    try:
        return PLACEHOLDERS[dialect.paramstyle]
    except KeyError:
        raise RuntimeError(
            f"driver {dialect.driver} (paramstyle {dialect.paramstyle}) is not one qledger runs on"
        ) from None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json,
            json_deserializer=orjson.loads,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; issue BEGIN IMMEDIATE ourselves so a
        # writer takes the lock up front instead of failing on upgrade (SQLAlchemy's documented
        # recipe for SQLite serialisable transactions).
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A read-only session (``read_session_factory``) begins a deferred transaction: in
            # WAL mode it reads a snapshot and never waits for the writer, where BEGIN
            # IMMEDIATE queued every read (role lookups, revoked tokens, the anchorer's polls)
            # behind intake's and the anchorer's write transactions. ``query_only`` makes a
            # write attempted in one fail at once instead of upgrading a deferred transaction
            # (which can fail with SQLITE_BUSY under contention); it is switched only when a
            # pooled connection changes hands between the two kinds, and a write session gets
            # back the state the connection was opened in (one opened query-only stays so).
            info = conn.connection.info
            if _OPENED_QUERY_ONLY not in info:
                opened = bool(conn.exec_driver_sql("PRAGMA query_only").scalar())
                info[_OPENED_QUERY_ONLY] = info[READ_ONLY] = opened
            read_only = bool(conn.get_execution_options().get(READ_ONLY, False))
            query_only = read_only or info[_OPENED_QUERY_ONLY]
            if info[READ_ONLY] is not query_only:
                conn.exec_driver_sql(f"PRAGMA query_only={int(query_only)}")
                info[READ_ONLY] = query_only
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        json_serializer=_json,
        json_deserializer=orjson.loads,
    )


# Key of the PostgreSQL advisory lock that serialises migrations (an arbitrary constant,
# ASCII "qledgerm"): several workers starting at once must not all create the schema.
MIGRATION_LOCK_KEY = 0x716C656467657260


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent, safe with concurrent starters)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Released with the transaction; SQLite's BEGIN IMMEDIATE already serialises.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads only. On SQLite they neither take nor wait for the write lock (and
    refuse to write: ``PRAGMA query_only``); on PostgreSQL they are ordinary sessions."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session
