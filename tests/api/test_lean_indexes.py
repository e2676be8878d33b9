"""Migration 0018 (issue #21): the records and outbox indexes are the ones the queries need,
partial where intake's rows need no entry, and every query on those columns still finds its
index (SQLite's plan); the migration goes down and up again on a store that holds rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, and_, delete, func, inspect, or_, select, text
from sqlalchemy.sql import Executable

from api.store.db import MIGRATIONS_DIR, make_engine, migrate
from api.store.models import Batch, Outbox, Record
from tests.api.conftest import _fresh_postgres

EXPECTED = {
    "records": {
        "ix_records_subject_kind": (["subject", "kind"], None),
        "ix_records_batch_id": (["batch_id"], "batch_id IS NOT NULL"),
    },
    "outbox": {
        "ix_outbox_seq": (["seq"], "batch_id IS NULL"),
        "ix_outbox_batch_id": (["batch_id"], "batch_id IS NOT NULL"),
    },
}


def _urls() -> list[Any]:
    pg = os.environ.get("QLEDGER_TEST_POSTGRES_URL")
    return [
        "sqlite",
        pytest.param(
            pg,
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not pg, reason="QLEDGER_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]


@pytest.fixture(params=_urls())
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = request.param
    url = f"sqlite:///{tmp_path / 'q.db'}" if url == "sqlite" else _fresh_postgres(url)
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def _indexes(engine: Engine, table: str) -> dict[str, tuple[list[str], str | None]]:
    out = {}
    for index in inspect(engine).get_indexes(table):
        if index.get("duplicates_constraint"):  # PostgreSQL: a unique key's own index
            continue
        options = index.get("dialect_options", {})
        where = options.get("sqlite_where", options.get("postgresql_where"))
        text_where = None if where is None else str(where).strip("()").replace('"', "")
        out[index["name"]] = (index["column_names"], text_where)
    return out


def _alembic(engine: Engine, verb: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def test_the_indexes_are_the_ones_the_queries_need(engine: Engine) -> None:
    for table, expected in EXPECTED.items():
        assert _indexes(engine, table) == expected
    # The signer's queries are answered by the unique (signer, nonce) key.
    unique = inspect(engine).get_unique_constraints("records")
    assert [u["column_names"] for u in unique] == [["signer", "nonce"]]


def _row(n: int, batch_id: int | None) -> dict[str, Any]:
    return {
        "struct_hash": f"0x{n:064x}",
        "signer": "0x" + "ab" * 20,
        "signer_role": "SUPPLIER",
        "subject": "SUP-01",
        "kind": "inspection",
        "part_number": "P",
        "lot_id": f"L-{n}",
        "event_time": 1,
        "signed_at": 1,
        "quantity": 1,
        "defects": 0,
        "nonce": n,
        "salt": "0x" + "00" * 32,
        "payload_hash": "0x" + "00" * 32,
        "payload": {},
        "signature": "0x" + "00" * 65,
        "chain_id": 1,
        "contract": "0x" + "cd" * 20,
        "batch_id": batch_id,
    }


def test_down_and_up_again_with_rows_and_the_queries_answer_alike(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            Batch.__table__.insert(), [{"id": 1, "root": "0x" + "11" * 32, "leaf_count": 2}]
        )
        conn.execute(Record.__table__.insert(), [_row(n, 1 if n < 2 else None) for n in range(5)])
        conn.execute(
            Outbox.__table__.insert(),
            [
                {"struct_hash": f"0x{n:064x}", "seq": 10 - n, "batch_id": 1 if n < 2 else None}
                for n in range(5)
            ],
        )
    queries: list[Executable] = [
        select(Outbox.struct_hash).where(Outbox.batch_id.is_(None)).order_by(Outbox.seq),
        select(func.count()).select_from(Outbox).where(Outbox.batch_id.is_(None)),
        select(Outbox.struct_hash).where(Outbox.batch_id == 1).order_by(Outbox.seq),
        select(Record.struct_hash).where(Record.batch_id == 1).order_by(Record.struct_hash),
        select(Record.struct_hash)
        .join(Batch, Record.batch_id == Batch.id)
        .order_by(Record.struct_hash),
        select(Record.nonce).where(
            or_(and_(Record.signer == "0x" + "ab" * 20, Record.nonce.in_([1, 3, 9])))
        ),
    ]

    def answers() -> list[list[Any]]:
        with engine.connect() as conn:
            return [list(conn.execute(q)) for q in queries]

    lean = answers()
    _alembic(engine, "downgrade", "0016")
    assert "ix_records_signer" in _indexes(engine, "records")
    assert answers() == lean
    _alembic(engine, "upgrade", "head")
    for table, expected in EXPECTED.items():
        assert _indexes(engine, table) == expected
    assert answers() == lean
    with engine.begin() as conn:
        conn.execute(delete(Outbox).where(Outbox.batch_id == 1))
        assert conn.scalar(select(func.count()).select_from(Outbox)) == 3


SQLITE_PLANS = {
    "SELECT struct_hash FROM outbox WHERE batch_id IS NULL ORDER BY seq LIMIT 1024": (
        "ix_outbox_seq"
    ),
    "SELECT count(*) FROM outbox WHERE batch_id IS NULL": "ix_outbox_seq",
    "SELECT struct_hash FROM outbox WHERE batch_id = 5": "ix_outbox_batch_id",
    "DELETE FROM outbox WHERE batch_id = 5": "ix_outbox_batch_id",
    "SELECT * FROM records WHERE batch_id = 5": "ix_records_batch_id",
    "SELECT r.struct_hash FROM batches b JOIN records r ON r.batch_id = b.id WHERE b.id = 5": (
        "ix_records_batch_id"
    ),
    "SELECT * FROM records WHERE signer = 'x' ORDER BY event_time DESC": "sqlite_autoindex",
    "SELECT * FROM records WHERE subject = 'S' AND kind = 'inspection'": (
        "ix_records_subject_kind"
    ),
}


def test_every_query_finds_its_index_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    migrate(engine)
    with engine.connect() as conn:
        for sql, index in SQLITE_PLANS.items():
            plan = " ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert index in plan and "SCAN records" not in plan, (sql, plan)
    engine.dispose()
