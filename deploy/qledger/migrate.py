#!/usr/bin/env python3
"""Bring qledger's database schema to the newest migration, once, before the service starts.

Every qledger process migrates at start (api.store.db.migrate). On a fresh PostgreSQL database
several processes starting together (the anchorer and QLEDGER_WORKERS uvicorn workers) run the
same CREATE TABLEs concurrently; all but one fail ("duplicate key ... alembic_version") and
uvicorn restarts them. Nothing is lost (PostgreSQL DDL is transactional), but the first start
is noisy and a worker may give up. The units run this first (ExecStartPre): it holds a
PostgreSQL advisory lock while migrating, so concurrent callers wait for each other and the
processes that start afterwards find the schema current and do nothing.

Settings come from the environment like the service's own (QLEDGER_DATABASE_URL, PGPASSFILE,
...). With SQLite it just migrates (SQLite serialises writers itself).
"""

from __future__ import annotations

import sys

# Any constant works; it only has to be the same for every caller. ("qledger" in ASCII.)
LOCK_ID = 0x716C6564676572


def main() -> int:
    from sqlalchemy import text

    from api.settings import Settings
    from api.store.db import make_engine, migrate

    settings = Settings()
    settings.prepare_data_dir()  # a SQLite database lives in the data dir
    engine = make_engine(settings.db_url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": LOCK_ID})
                try:
                    migrate(engine)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_ID})
                    conn.commit()
        else:
            migrate(engine)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
