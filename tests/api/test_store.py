from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from api.settings import Settings
from api.store.db import make_engine, migrate
from cli.service import prepare_chain
from tests.api.conftest import _fresh_postgres


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("QLEDGER_TEST_POSTGRES_URL"),
    reason="QLEDGER_TEST_POSTGRES_URL not set: runs in CI (.ci/run sets it)",
)
def test_concurrent_migrations_on_postgres_do_not_collide() -> None:
    """Several workers start at once on an empty database: one migrates, the rest wait."""
    url = _fresh_postgres(os.environ["QLEDGER_TEST_POSTGRES_URL"])
    errors: list[BaseException] = []

    def start() -> None:
        engine = make_engine(url)
        try:
            migrate(engine)
        except Exception as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    engine = make_engine(url)
    assert {"records", "outbox", "batches", "scores"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_migration_is_idempotent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    migrate(engine)
    migrate(engine)
    assert "records" in inspect(engine).get_table_names()
    engine.dispose()


def test_serve_never_deploys_onto_a_configured_network(tmp_path: Path) -> None:
    cfg = Settings(data_dir=tmp_path, rpc_url="http://127.0.0.1:9", anchorer_key="0x" + "1" * 64)
    with pytest.raises(RuntimeError, match="no deployment"):
        prepare_chain(cfg)
