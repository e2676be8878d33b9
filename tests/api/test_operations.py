"""Operations (issue #20, item 4): /readyz names the check that fails, /metrics counts what
intake and anchoring did, JSON logs carry no key material.

Adversaries: the chain node goes away, the database goes away, the anchorer stops (records
pile up), hostile clients send forged and malformed records (they must show as refusals, and
their text must never become a metric label).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from api.anchorer import Anchorer
from api.logs import configure_logging
from api.settings import Settings
from api.store.db import session_factory
from ledger.chain import ChainClient
from ledger.chain.local import dev_private_keys, start_anvil
from tests.api.conftest import Service
from tests.conftest import _anvil_missing_reason


def _samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_readyz_is_ready_when_database_chain_and_anchorer_are(service: Service) -> None:
    ready = service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["failed"] == []
    assert {c["check"] for c in body["checks"]} == {"database", "chain", "anchoring_lag"}


@pytest.mark.anvil
@pytest.mark.slow
def test_readyz_names_an_unreachable_chain(service: Service, tmp_path: Path) -> None:
    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    before = _value(_samples(service), "qledger_chain_errors_total", component="readiness")
    # The service's node goes away: a real anvil, stopped.
    local = start_anvil(tmp_path / "chain")
    try:
        # (its own chain: readiness asks the node for its tip, nothing of the deployment)
        service.ctx.chain = ChainClient.connect(local.rpc_url, timeout=2)
        assert service.client.get("/readyz").status_code == 200
    finally:
        local.stop()
    answer = service.client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failed"] == ["chain"]
    chain_check = next(c for c in answer.json()["checks"] if c["check"] == "chain")
    assert chain_check["detail"] == "chain_unavailable"
    assert local.rpc_url not in answer.text  # the node's address is not for the public
    after = _value(_samples(service), "qledger_chain_errors_total", component="readiness")
    assert after == before + 1


def test_readyz_names_an_unreachable_database(service: Service, tmp_path: Path) -> None:
    # The database goes away: a file in a directory that does not exist cannot be opened.
    gone = create_engine(f"sqlite:///{tmp_path}/missing/dir/qledger.db")
    service.ctx.sessions = session_factory(gone)
    answer = service.client.get("/readyz")
    assert answer.status_code == 503
    assert set(answer.json()["failed"]) == {"database", "anchoring_lag"}
    # /metrics still answers, and says the store did not.
    assert _value(_samples(service), "qledger_store_up") == 0


def test_readyz_fails_while_records_wait_too_long_for_anchoring(service: Service) -> None:
    """No anchorer runs in this app: an accepted record waits. Past the bound, not ready;
    once anchored and confirmed, ready again."""
    service.ctx.settings = service.ctx.settings.model_copy(
        update={"ready_max_anchoring_lag_seconds": 0.2}
    )
    record = service.inspection(service.parties["supplier"])
    assert (
        service.client.post("/v1/records", json=record.model_dump(mode="json")).status_code == 202
    )
    time.sleep(0.4)
    answer = service.client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["failed"] == ["anchoring_lag"]
    samples = _samples(service)
    assert _value(samples, "qledger_anchoring_waiting_records") == 1
    assert _value(samples, "qledger_anchoring_lag_seconds") >= 0.4
    Anchorer(service.ctx).run_once(force=True)
    assert service.client.get("/readyz").status_code == 200
    samples = _samples(service)
    assert _value(samples, "qledger_anchoring_waiting_records") == 0
    assert _value(samples, "qledger_anchoring_lag_seconds") == 0
    assert _value(samples, "qledger_batches", status="confirmed") >= 1


def test_metrics_count_accepted_duplicate_and_refused_records(service: Service) -> None:
    before = _samples(service)
    supplier = service.parties["supplier"]
    good = service.inspection(supplier).model_dump(mode="json")
    assert service.client.post("/v1/records", json=good).status_code == 202
    assert service.client.post("/v1/records", json=good).status_code == 202  # replay
    # A forged record: the supplier's signature over different numbers.
    forged = dict(good, record=dict(good["record"], defects=0))
    assert service.client.post("/v1/records", json=forged).status_code in (401, 422)
    # A hostile kind: its text must not become a label.
    hostile = dict(good, record=dict(good["record"], kind='inspection"} 1\nqledger_fake{a="b'))
    assert service.client.post("/v1/records", json=hostile).status_code == 422
    batch = {"records": [service.inspection(supplier).model_dump(mode="json"), {"x": 1}]}
    assert service.client.post("/v1/records:batch", json=batch).status_code == 207
    after = _samples(service)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("qledger_intake_records_total", kind="inspection", outcome="accepted") == 2
    assert delta("qledger_intake_records_total", kind="inspection", outcome="duplicate") == 1
    assert delta("qledger_intake_records_total", kind="inspection", outcome="rejected") == 1
    assert delta("qledger_intake_records_total", kind="unknown", outcome="rejected") == 2
    assert (
        sum(v for (n, _), v in after.items() if n == "qledger_intake_refusals_total")
        - sum(v for (n, _), v in before.items() if n == "qledger_intake_refusals_total")
        == 3
    )
    assert delta("qledger_intake_request_seconds_count", endpoint="record") == 4
    assert delta("qledger_intake_request_seconds_count", endpoint="batch") == 1
    assert not any(n.startswith("qledger_fake") for n, _ in after)
    assert all("qledger_fake" not in v for _, labels in after for _, v in labels)


@pytest.mark.anvil
@pytest.mark.slow
def test_json_logs_are_json_and_never_show_the_anchorer_key(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QLEDGER_LOG_FORMAT=json: the anchorer's real outage warnings are one JSON object a line,
    and a key formatted into a message or an exception (a bug) comes out masked."""
    reason = _anvil_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    key = dev_private_keys()[1]
    cfg = Settings(log_format="json", anchorer_key=key, token_secret="s" * 40)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    local = start_anvil(tmp_path / "chain")
    try:
        # The anchorer's node (its own ledger deployed there) is about to go away.
        chain = ChainClient.connect(local.rpc_url, private_key=key, timeout=2)
        chain.deploy()
        service.ctx.chain = chain
        local.stop()  # the node goes away under the anchorer
        configure_logging(cfg)
        record = service.inspection(service.parties["supplier"])
        assert (
            service.client.post("/v1/records", json=record.model_dump(mode="json")).status_code
            == 202
        )
        stop = threading.Event()
        worker = threading.Thread(target=Anchorer(service.ctx).run_forever, args=(stop,))
        worker.start()
        time.sleep(1.5)
        stop.set()
        worker.join(10)
        leak = logging.getLogger("qledger.test")
        leak.error("a careless line with the key %s and its bare hex %s", key, key[2:])
        try:
            raise ValueError(f"cannot use key {key}")
        except ValueError:
            leak.exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        local.stop()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(p["logger"] == "qledger.anchorer" and p["level"] == "warning" for p in parsed)
    assert all({"time", "level", "logger", "message"} <= p.keys() for p in parsed)
    failed = next(p for p in parsed if p["message"] == "failed")
    assert failed["exc_type"] == "ValueError" and "**********" in failed["exc"]
    text = "\n".join(lines)
    assert key not in text and key[2:] not in text
    assert "Traceback" not in text


def test_a_record_dated_before_the_scoring_window_is_accepted_with_a_warning(
    tmp_path: Path,
) -> None:
    """Where the eventTime bound is longer than the published window (a backfill set-up), a
    record dated before the window is stored and anchored but no score counts it: the answer
    says so, for a single record and inside a batch; a record in the window gets no warning."""
    from ledger.signing import sign_record
    from tests.api.conftest import make_service
    from tests.helpers import inspection_payload

    year = 365 * 86_400
    service = make_service(tmp_path, "sqlite", max_event_age_seconds=year)
    supplier = service.parties["supplier"]
    old = int(time.time()) - 200 * 86_400  # the window is 180 days (policies/trial_gate.toml)

    def dated(event_time: int) -> dict[str, Any]:
        return sign_record(
            supplier.signer,
            service.ctx.domain,
            subject=supplier.org,
            kind="inspection",
            part_number="P-100",
            lot_id=f"LOT-{supplier.next_nonce()}",
            event_time=event_time,
            quantity=50,
            defects=1,
            nonce=supplier.next_nonce(),
            payload=inspection_payload(1),
        ).model_dump(mode="json")

    with service.client:
        stale = dated(old)
        answer = service.client.post("/v1/records", json=stale)
        assert answer.status_code == 202, answer.text
        [warning] = answer.json()["warnings"]
        assert warning["code"] == "outside_scoring_window" and warning["got"] == old
        fresh = service.inspection(supplier).model_dump(mode="json")
        assert service.client.post("/v1/records", json=fresh).json()["warnings"] == []
        batch = service.client.post(
            "/v1/records:batch",
            json={
                "records": [
                    dated(old),
                    fresh,
                ]
            },
        ).json()["results"]
        assert batch[0]["warnings"][0]["code"] == "outside_scoring_window"
        assert "warnings" not in batch[1]
    service.ctx.engine.dispose()
