"""Where intake's per-record CPU goes, in-process (no HTTP, no profiler): microseconds per
record for each step of `api.intake`, best of 3 over 1,000 records, next to one raw
coincurve recovery measured in the same run.

    PYTHONPATH=. .venv/bin/python scripts/bench_intake_components.py
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import patch

from coincurve import PrivateKey, PublicKey
from sqlalchemy import Connection, Table, insert
from sqlalchemy.orm import Session

from api import intake
from api.intake import check_record, store
from api.store.models import Outbox, Record
from ledger.canonical import canonical_json
from ledger.records import load_signed_record
from ledger.signing import check_signature
from tests.api.conftest import make_service

N = 1000


def micros(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1e6


def main() -> None:
    svc = make_service(Path(tempfile.mkdtemp(prefix="qledger-components-")), "sqlite")
    supplier = svc.parties["supplier"]
    records = [svc.inspection(supplier).model_dump(mode="json") for _ in range(4 * N)]
    svc.ctx.roles.get(supplier.address)  # roles come from the in-memory mirror, as in service
    signed = [load_signed_record(r) for r in records[:N]]
    key = PrivateKey(os.urandom(32))
    digest = os.urandom(32)
    sig = key.sign_recoverable(digest, hasher=None)
    rows = [
        (
            "raw coincurve recover",
            micros(
                lambda _: PublicKey.from_signature_and_message(sig, digest, hasher=None), range(N)
            ),
        ),
        (
            "JCS canonical JSON of the payload",
            micros(lambda r: canonical_json(r["payload"]), records[:N]),
        ),
        ("parse + validate envelope (incl. JCS)", micros(load_signed_record, records[:N])),
        ("signature check", micros(check_signature, signed)),
        (
            "check_record (all checks above + role, domain, subject, freshness)",
            micros(lambda r: check_record(svc.ctx, r), records[:N]),
        ),
    ]
    extra = [svc.inspection(supplier).model_dump(mode="json") for _ in range(4 * N)]
    checked = [(i, check_record(svc.ctx, r)) for i, r in enumerate(records[N:] + extra)]
    store(svc.ctx, checked[:N])  # warm: connection, statement caches

    orm_class = {Record.__table__: Record, Outbox.__table__: Outbox}

    def sqlalchemy_executemany(conn: Connection, table: Table, rows: list[dict]) -> None:
        # What store() did before: insert(Record) executed through a session (the ORM's bulk
        # insert path, then SQLAlchemy's executemany).
        with Session(bind=conn) as session:
            session.execute(insert(orm_class[table]), rows)

    # Interleaved, best of 3 each: driver executemany (store() now) and SQLAlchemy's.
    driver, before = float("inf"), float("inf")
    for k in range(3):
        start = time.perf_counter()
        store(svc.ctx, checked[(2 * k + 1) * N : (2 * k + 2) * N])
        driver = min(driver, (time.perf_counter() - start) / N * 1e6)
        start = time.perf_counter()
        with patch.object(intake, "_insert_many", sqlalchemy_executemany):
            store(svc.ctx, checked[(2 * k + 2) * N : (2 * k + 3) * N])
        before = min(before, (time.perf_counter() - start) / N * 1e6)
    rows.append(("store (bulk insert, per record, 1,000 a transaction)", driver))
    rows.append(("  the same through the ORM's bulk insert (before)", before))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:7.1f} us/record")
    total = rows[4][1] + rows[5][1]  # check_record + store
    print(
        f"{'intake total (check_record + store)':<{width}}  {total:7.1f} us/record "
        f"= {rows[0][1] / total:.0%} of the raw recover rate on one core"
    )


if __name__ == "__main__":
    main()
