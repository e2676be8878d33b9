"""The group committer has an owner and a failure path: the app starts it and drains it at
shutdown; if its writer thread dies, submits answer 503 ``intake_unavailable`` at once instead
of waiting forever, /healthz says so, and the next submit after a pause restarts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from api.context import ServiceContext
from api.errors import ApiError
from api.intake import Checked, GroupCommitter, Outcome, check_record, store
from api.store.models import Record
from tests.api.conftest import Service, make_service
from tests.helpers import error_code


class WriterKilled(BaseException):
    """A fault no error handler of the writer catches (as a bug or an interpreter-level
    failure would be): it ends the writer thread."""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = make_service(tmp_path, "sqlite")
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


def _submit(svc: Service) -> object:
    signed = svc.inspection(svc.parties["supplier"])
    return svc.client.post("/v1/records", json=signed.model_dump(mode="json"))


def test_the_app_owns_a_running_committer(service: Service) -> None:
    committer = service.client.app.state.committer
    assert isinstance(committer, GroupCommitter) and committer.alive
    assert _submit(service).status_code == 202
    assert service.client.get("/healthz").json() == {"status": "ok"}


def test_a_dead_writer_fails_submits_fast_and_is_restarted(service: Service) -> None:
    app = service.client.app
    app.state.committer.stop()
    kill_next = threading.Event()
    kill_next.set()

    def store_that_dies_once(
        ctx: ServiceContext, items: list[tuple[int, Checked]]
    ) -> list[Outcome]:
        if kill_next.is_set():
            kill_next.clear()
            raise WriterKilled("the writer thread dies mid-commit")
        return store(ctx, items)

    committer = GroupCommitter(service.ctx, store_fn=store_that_dies_once)
    committer.start()
    app.state.committer = committer

    started = time.monotonic()
    first = _submit(service)
    assert time.monotonic() - started < 2, "a submit waited on a dead writer"
    assert first.status_code == 503 and error_code(first) == "intake_unavailable"
    assert first.headers["retry-after"] == "1"
    assert first.headers["content-type"].startswith("application/problem+json")
    assert not committer.alive and committer.deaths == 1

    health = service.client.get("/healthz")
    assert health.status_code == 503 and error_code(health) == "intake_unavailable"

    # Right after the death: still refused at once (no restart in a hot loop)...
    started = time.monotonic()
    again = _submit(service)
    assert again.status_code == 503 and time.monotonic() - started < 1
    # ...and after the restart interval the next submit restarts the writer and is stored.
    time.sleep(GroupCommitter.RESTART_INTERVAL_SECONDS)
    later = _submit(service)
    assert later.status_code == 202, later.text
    assert committer.alive and service.client.get("/healthz").status_code == 200


def test_store_errors_reach_the_caller_and_the_writer_survives(service: Service) -> None:
    app = service.client.app
    app.state.committer.stop()

    failing = threading.Event()
    failing.set()

    def unavailable_store(ctx: ServiceContext, items: list[tuple[int, Checked]]) -> list[Outcome]:
        if failing.is_set():
            # What the driver raises when the database cannot be reached.
            raise OperationalError("INSERT INTO records ...", {}, Exception("connection refused"))
        return store(ctx, items)

    committer = GroupCommitter(service.ctx, store_fn=unavailable_store)
    committer.start()
    app.state.committer = committer
    refused = _submit(service)
    assert refused.status_code == 503 and error_code(refused) == "database_unavailable"
    assert "INSERT" not in refused.text and refused.headers["retry-after"]
    assert committer.alive and committer.deaths == 0
    failing.clear()
    assert _submit(service).status_code == 202


def test_stop_drains_queued_work_and_no_caller_hangs(service: Service) -> None:
    ctx = service.ctx
    committer = GroupCommitter(ctx)
    committer.start()
    supplier = service.parties["supplier"]
    checked = [
        (0, check_record(ctx, service.inspection(supplier).model_dump(mode="json")))
        for _ in range(8)
    ]
    answers: dict[str, str] = {}

    def submit(item: tuple[int, Checked]) -> None:
        try:
            answers[item[1].struct_hash] = committer.submit([item])[0].status
        except ApiError as exc:
            answers[item[1].struct_hash] = exc.code

    threads = [threading.Thread(target=submit, args=(item,)) for item in checked]
    for thread in threads:
        thread.start()
    committer.stop()  # while submits are in flight: queued ones are committed, later refused
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads), "a caller hung on a stopped committer"
    assert not committer.alive
    assert set(answers.values()) <= {"accepted", "intake_unavailable"}
    with ctx.sessions() as s:
        stored = set(s.scalars(select(Record.struct_hash)))
    assert {h for h, status in answers.items() if status == "accepted"} <= stored
    with pytest.raises(ApiError) as refused:
        committer.submit(checked[:1])
    assert refused.value.code == "intake_unavailable"
