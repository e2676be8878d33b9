"""A database that fills up: intake answers 503 problem JSON with a code and Retry-After, and
every record acknowledged before (and after) is stored and anchored once space returns."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError

from api.anchorer import Anchorer
from api.store.models import Record
from ledger.verify import verify_receipt
from tests.api.conftest import Service, make_service
from tests.helpers import error_code

# Pages the database may grow by once "full" is switched on: a few records' worth (a record row
# with its payload, outbox row and index entries takes about a page), so the fill comes quickly.
HEADROOM_PAGES = 4


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = make_service(tmp_path, "sqlite")
    with service.client:
        yield service
    service.ctx.engine.dispose()


class DiskLimit:
    """SQLite's own size limit (``PRAGMA max_page_count``) on every connection of the service's
    engine: writes beyond it fail with SQLITE_FULL, exactly as on a full disk."""

    def __init__(self, svc: Service) -> None:
        self.engine = svc.ctx.engine
        with self.engine.connect() as conn:
            self.pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        self.limit = self.pages + HEADROOM_PAGES

    def _apply(self, dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA max_page_count={self.limit}")
        cursor.close()

    def __enter__(self) -> DiskLimit:
        event.listen(self.engine, "connect", self._apply)
        self.engine.dispose()  # pooled connections reconnect with the limit
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "connect", self._apply)
        self.engine.dispose()  # space returns: fresh connections have no limit


def test_a_full_database_answers_503_json_and_loses_nothing_acknowledged(svc: Service) -> None:
    supplier = svc.parties["supplier"]
    acknowledged: list[tuple[str, Any]] = []
    refused: list[str] = []

    def submit() -> Any:
        signed = svc.inspection(supplier)
        answer = svc.client.post("/v1/records", json=signed.model_dump(mode="json"))
        if answer.status_code == 202:
            acknowledged.append((answer.json()["structHash"], signed))
        return answer

    for _ in range(3):
        assert submit().status_code == 202
    with DiskLimit(svc):
        full = None
        for _ in range(400):
            answer = submit()
            if answer.status_code != 202:
                full = answer
                break
        assert full is not None, "the database never filled up"
        assert full.status_code == 503, full.text
        assert full.headers["content-type"].startswith("application/")
        assert "json" in full.headers["content-type"]
        assert error_code(full) == "database_full"
        assert int(full.headers["Retry-After"]) > 0
        # Still full: every further write is refused the same way, never a 500; a batch too.
        for _ in range(3):
            again = submit()
            if again.status_code == 503:
                assert error_code(again) == "database_full"
                refused.append("x")
        batch = svc.client.post(
            "/v1/records:batch",
            json={"records": [svc.inspection(supplier).model_dump(mode="json") for _ in range(50)]},
        )
        assert batch.status_code == 503 and error_code(batch) == "database_full"
        # The anchorer cannot write either; it fails (and its loop backs off), storing nothing.
        with pytest.raises(DBAPIError) as failed:
            Anchorer(svc.ctx).run_once(force=True)
        assert "full" in str(failed.value)
    assert len(acknowledged) >= 3 + 1

    # Space is back: intake goes on, and everything acknowledged is anchored with a receipt.
    assert submit().status_code == 202
    anchorer = Anchorer(svc.ctx)
    while anchorer.pending_count():
        anchorer.run_once(force=True)
    with svc.ctx.sessions() as s:
        stored = s.scalar(select(func.count()).select_from(Record))
    assert stored == len(acknowledged)  # nothing refused was half-stored
    auth = svc.login(supplier)
    receipts = {}
    for struct_hash, _signed in acknowledged:
        receipt = svc.client.get(f"/v1/records/{struct_hash}/receipt", headers=auth)
        assert receipt.status_code == 200, receipt.text
        receipts[struct_hash] = receipt.json()
    # The full check (signature, role, proof, root on chain) for the first and the last one
    # acknowledged before the disk filled, and the first after.
    for struct_hash, signed in (acknowledged[0], acknowledged[-2], acknowledged[-1]):
        assert verify_receipt(signed, receipts[struct_hash], svc.chain).ok


def test_a_database_that_cannot_be_opened_answers_503(svc: Service, tmp_path: Path) -> None:
    """The file gone read-only under the service (a failing disk remounted ro): 503 JSON."""
    supplier = svc.parties["supplier"]

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA query_only=ON")  # writes fail like on a read-only file
        cursor.close()

    engine = svc.ctx.engine
    event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        answer = svc.client.post(
            "/v1/records", json=svc.inspection(supplier).model_dump(mode="json")
        )
    finally:
        event.remove(engine, "connect", read_only)
        engine.dispose()
    assert answer.status_code == 503, answer.text
    assert error_code(answer) == "database_unavailable" and "Retry-After" in answer.headers
    later = svc.client.post("/v1/records", json=svc.inspection(supplier).model_dump(mode="json"))
    assert later.status_code == 202


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) for the service's data dir; needs root and mount."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)


def test_a_real_full_disk_answers_503_and_recovers(tiny_disk: Path) -> None:
    svc = make_service(tiny_disk, "sqlite")
    try:
        with svc.client:
            supplier = svc.parties["supplier"]
            acknowledged: list[str] = []

            def submit() -> Any:
                signed = svc.inspection(supplier)
                answer = svc.client.post("/v1/records", json=signed.model_dump(mode="json"))
                if answer.status_code == 202:
                    acknowledged.append(answer.json()["structHash"])
                return answer

            assert submit().status_code == 202
            # Fill the disk with ballast, leaving a little room for the database to grow.
            ballast = tiny_disk / "ballast"
            free = shutil.disk_usage(tiny_disk).free
            ballast.write_bytes(b"\0" * max(0, free - 96 * 1024))
            answer = None
            for _ in range(400):
                answer = submit()
                if answer.status_code != 202:
                    break
            assert answer is not None
            assert answer.status_code == 503, answer.text
            assert error_code(answer) == "database_full" and int(answer.headers["Retry-After"]) > 0
            ballast.unlink()  # an operator frees space
            assert submit().status_code == 202
            anchorer = Anchorer(svc.ctx)
            while anchorer.pending_count():
                anchorer.run_once(force=True)
            auth = svc.login(supplier)
            for struct_hash in acknowledged:
                receipt = svc.client.get(f"/v1/records/{struct_hash}/receipt", headers=auth)
                assert receipt.status_code == 200, receipt.text
    finally:
        svc.ctx.engine.dispose()
