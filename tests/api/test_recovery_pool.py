"""Signature recovery in helper processes (Settings.intake_recovery_processes): the answers are
the in-process answers, forged signatures included; a helper killed between batches, or a pool
that is gone, costs the batch nothing (it is recovered in the API process) and a new pool takes
the next batches."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.errors import ApiError
from api.intake import GroupCommitter, RecoveryPool, check_record
from tests.api.conftest import Service, make_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = make_service(
        tmp_path, "sqlite", intake_recovery_processes=1, intake_records_per_second_per_key=0
    )
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


def _pool(service: Service) -> RecoveryPool:
    committer: GroupCommitter = service.client.app.state.committer  # type: ignore[attr-defined]
    return committer.recovery


def _batch(service: Service, count: int) -> list[Any]:
    supplier = service.parties["supplier"]
    records = [service.inspection(supplier).model_dump(mode="json") for _ in range(count)]
    for data in records[::10]:  # every tenth forged: a field changed after signing
        data["record"]["lotId"] = "LOT-FORGED"
    return records


def _expected(service: Service, records: list[Any]) -> list[tuple[str, str | None]]:
    now = int(time.time())
    out: list[tuple[str, str | None]] = []
    for data in records:
        try:
            check_record(service.ctx, data, now)
            out.append(("accepted", None))
        except ApiError as exc:
            out.append(("rejected", exc.code))
    return out


def _post(service: Service, records: list[Any]) -> list[tuple[str, str | None]]:
    response = service.client.post("/v1/records:batch", json={"records": records})
    assert response.status_code == 207, response.text
    return [(r["status"], r.get("error", {}).get("code")) for r in response.json()["results"]]


def _helper_pids(pool: RecoveryPool) -> list[int]:
    executor = pool._pool
    assert executor is not None
    return list(executor._processes)  # type: ignore[attr-defined]


def test_helpers_answer_as_the_api_process(service: Service) -> None:
    records = _batch(service, 200)
    expected = _expected(service, records)
    assert ("rejected", "invalid_signature") in expected
    assert _post(service, records) == expected
    pool = _pool(service)
    assert _helper_pids(pool) and pool.failures == 0  # a helper took the batch


def test_a_killed_helper_costs_the_batch_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(service)
    _post(service, _batch(service, 100))
    for pid in _helper_pids(pool):
        os.kill(pid, signal.SIGKILL)
    monkeypatch.setattr(RecoveryPool, "RESTART_INTERVAL_SECONDS", 0.0)
    records = _batch(service, 150)
    assert _post(service, records) == _expected(service, records)
    assert pool.failures == 1
    # A new pool (new helpers) takes the next batch.
    records = _batch(service, 150)
    assert _post(service, records) == _expected(service, records)
    assert _helper_pids(pool) and pool.failures == 1


def test_small_batches_stay_in_the_api_process(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = _pool(service)._pool
    assert executor is not None
    asked: list[int] = []
    submit = executor.submit

    def counting(fn: Any, items: list[Any]) -> Any:
        asked.append(len(items))
        return submit(fn, items)

    monkeypatch.setattr(executor, "submit", counting)
    records = _batch(service, RecoveryPool.MIN_BATCH - 1)
    assert _post(service, records) == _expected(service, records)
    assert asked == []
    records = _batch(service, RecoveryPool.MIN_BATCH)
    assert _post(service, records) == _expected(service, records)
    assert sum(asked) == RecoveryPool.MIN_BATCH  # the forged ones too: recovery refuses them
