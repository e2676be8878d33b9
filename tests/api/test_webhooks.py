"""Webhooks for purchasing (issue 20, item 5): signed per Standard Webhooks, verified here with
the reference library ``standardwebhooks`` by a real HTTP receiver on 127.0.0.1; retries,
a delivery log that survives a restart, and the parties who may not subscribe or look."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.anchorer import Anchorer
from api.context import ServiceContext
from api.main import create_app
from api.schemas import DeliveryList, WebhookCreated, WebhookDeleted, WebhookList
from ledger.signing import resign, sign_record
from simulator.population import MONTH, simulate_population
from tests.api.conftest import Party, Service, _database_urls, make_service
from tests.helpers import assert_documented, error_code

MAX_EVENT_AGE = 200 * 86_400
FAST = {
    "max_event_age_seconds": MAX_EVENT_AGE,
    "webhook_poll_seconds": 0.05,
    "webhook_backoff_seconds": 0.1,
    "webhook_max_attempts": 4,
    "webhook_timeout_seconds": 5.0,
}


class Receiver:
    """A real HTTP endpoint: records every request and answers the next scripted status."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((body, dict(self.headers.items())))
                status = receiver.script.pop(0) if receiver.script else 204
                self.send_response(status)
                if status in (301, 302, 307, 308):  # a receiver bouncing the signed body
                    self.send_header("location", "http://127.0.0.1:9/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/qledger?tenant=t1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _unsubscribe_all(world: dict[str, Any]) -> Iterator[None]:
    """Each test's subscriptions end with it (later events go to later tests' receivers)."""
    yield
    from api.store.models import WebhookSubscription

    svc: Service = world["svc"]
    with svc.ctx.sessions() as s, s.begin():
        s.execute(update(WebhookSubscription).values(active=False))


@pytest.fixture(scope="module", params=_database_urls())
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Six months of three simulated suppliers, anchored; every supplier scored once (a first
    score changes nothing). The app's lifespan (and so its dispatcher) runs per test."""
    svc = make_service(tmp_path_factory.mktemp("hooks"), request.param, **FAST)
    now = int(time.time())
    pop = simulate_population(3, months=6, seed=3, start=now - 6 * MONTH, domain=svc.ctx.domain)
    parties = {}
    for org, signer in pop.signers.items():
        svc.chain.register_participant(signer.address, pop.roles[org], org)
        parties[org] = Party(signer, org, pop.roles[org])
    svc.ctx.follower.sync()
    by_address = {s.address: s for s in pop.signers.values()}
    records = [
        resign(r, by_address[r.record.signer], signed_at=now).model_dump(mode="json")
        for r in pop.records
        if r.record.kind.value != "improvement" and r.record.eventTime <= now
    ]
    for i in range(0, len(records), 500):
        answer = svc.client.post("/v1/records:batch", json={"records": records[i : i + 500]})
        assert answer.status_code == 202, answer.text[:500]
    Anchorer(svc.ctx).run_once(force=True)
    world = {"svc": svc, "parties": parties, "pop": pop}
    oem = _auth(world, "OEM-0001")
    ranked = svc.client.get("/v1/suppliers", headers=oem)
    assert ranked.status_code == 200, ranked.text
    world["first"] = {r["supplierId"]: r for r in ranked.json()["suppliers"]}
    yield world
    svc.ctx.engine.dispose()


def _auth(world: dict[str, Any], org: str) -> dict[str, str]:
    """One sign-in per organisation for the module (sign-in is rate limited)."""
    tokens = world.setdefault("tokens", {})
    if org not in tokens:
        svc: Service = world["svc"]
        tokens[org] = svc.login(world["parties"][org])
    return tokens[org]


@contextmanager
def running(ctx: ServiceContext) -> Iterator[TestClient]:
    """One service process: its lifespan starts (and at exit stops) the dispatcher."""
    with TestClient(create_app(ctx=ctx)) as client:
        yield client


def _subscribe(
    client: TestClient, headers: dict[str, str], url: str, **body: Any
) -> dict[str, Any]:
    answer = client.post("/v1/webhooks", json={"url": url, **body}, headers=headers)
    assert answer.status_code == 201, answer.text
    assert_documented(WebhookCreated, answer.json())
    return answer.json()


def _audit(world: dict[str, Any], supplier: str, majors: int, nonce: int) -> dict[str, Any]:
    """The auditor files an audit of ``supplier`` with ``majors`` open major findings."""
    auditor = world["parties"]["AUD-0001"]
    svc: Service = world["svc"]
    when = int(time.time()) - 3600
    return sign_record(
        auditor.signer,
        svc.ctx.domain,
        subject=supplier,
        kind="audit",
        part_number="P-AUDIT",
        lot_id=f"{supplier}-AUDIT-HOOK-{nonce}",
        event_time=when,
        quantity=majors,
        defects=majors,
        nonce=800_000 + nonce,
        payload={
            "standard": "IATF16949",
            "auditType": "unannounced",
            "majorNonconformities": majors,
            "minorNonconformities": 0,
            "findings": [{"id": f"H{k}", "severity": "major"} for k in range(majors)],
        },
    ).model_dump(mode="json")


def _file_and_publish(world: dict[str, Any], record: dict[str, Any], supplier: str) -> Any:
    svc: Service = world["svc"]
    answer = svc.client.post("/v1/records", json=record)
    assert answer.status_code == 202, answer.text
    Anchorer(svc.ctx).run_once(force=True)
    body = svc.client.get(f"/v1/suppliers/{supplier}/credit", headers=_auth(world, "OEM-0001"))
    assert body.status_code == 200, body.text
    return body.json()


def _wait(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the dispatcher"
        time.sleep(0.05)


def _log(
    client: TestClient, headers: dict[str, str], sub_id: str, **params: Any
) -> list[dict[str, Any]]:
    answer = client.get(f"/v1/webhooks/{sub_id}/deliveries", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    assert_documented(DeliveryList, answer.json())
    return answer.json()["deliveries"]


def _passing(world: dict[str, Any]) -> str:
    passing = [s for s, r in world["first"].items() if r["gate"]["outcome"] == "pass"]
    assert passing, "seed 3 has a supplier that passes the gate"
    return passing[0]


def test_gate_change_is_delivered_and_verifies_with_the_reference_library(
    world: dict[str, Any], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    svc: Service = world["svc"]
    caplog.set_level(logging.DEBUG)
    supplier = _passing(world)
    with running(svc.ctx) as client:
        oem = _auth(world, "OEM-0001")
        sub = _subscribe(
            client, oem, receiver.url, eventTypes=["supplier.gate.changed"], scoreThreshold=50
        )
        secret = sub["secret"]
        assert secret.startswith("whsec_")
        # An open major nonconformity: the gate fails for the gate's own reason.
        after = _file_and_publish(world, _audit(world, supplier, 1, 1), supplier)
        assert after["gate"]["outcome"] == "fail"
        _wait(lambda: len(receiver.requests) >= 1)
        body, headers = receiver.requests[0]
        payload = standardwebhooks.Webhook(secret).verify(body, headers)
        assert payload["type"] == "supplier.gate.changed"
        data = payload["data"]
        assert data["supplierId"] == supplier
        assert (data["previous"]["gate"], data["current"]["gate"]) == ("pass", "fail")
        assert data["current"]["gateReasons"][0] == "an open major audit nonconformity"
        assert data["current"]["responseHash"] == after["responseHash"]
        # The adversary on the wire: a changed body, a replayed signature on another message,
        # or another subscription's secret never verify.
        forged = body.replace(b'"fail"', b'"pass"')
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(forged, headers)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(body, {**headers, "webhook-id": "msg_other"})
        other = _subscribe(client, oem, receiver.url)["secret"]
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(other).verify(body, headers)
        _wait(lambda: _log(client, oem, sub["id"])[0]["status"] == "delivered")
        (entry,) = _log(client, oem, sub["id"])
        assert entry["attempts"] == 1 and entry["lastStatus"] == 204
        assert entry["msgId"] == headers["webhook-id"]
        # The secret is shown once: never listed, never in the log, never logged.
        listed = client.get("/v1/webhooks", headers=oem)
        assert secret not in listed.text and other not in listed.text
        assert secret not in json.dumps(_log(client, oem, sub["id"]))
    assert all(secret not in r.getMessage() and other not in r.getMessage() for r in caplog.records)
    # Log lines name the receiver by scheme and host only (a query may carry the receiver's
    # own token): ours, and no library's either.
    lines = [r.getMessage() for r in caplog.records]
    assert any("delivered to http://127.0.0.1:" in m for m in lines)
    assert all("tenant=t1" not in m for m in lines)


def test_retries_after_a_500_and_a_redirect_and_logs_every_attempt(
    world: dict[str, Any], receiver: Receiver
) -> None:
    svc: Service = world["svc"]
    supplier = sorted(world["first"])[-1]
    receiver.script = [500, 307]  # then 204; the redirect is a failure, never followed
    with running(svc.ctx) as client:
        oem = _auth(world, "OEM-0001")
        sub = _subscribe(client, oem, receiver.url, scoreThreshold=0.0001)
        # Any new anchored evidence moves a score by more than a ten-thousandth of a point.
        _file_and_publish(world, _audit(world, supplier, 0, 2), supplier)
        _wait(lambda: any(d["status"] == "delivered" for d in _log(client, oem, sub["id"])))
        moved = [
            d for d in _log(client, oem, sub["id"]) if d["eventType"] == "supplier.score.moved"
        ]
        assert moved and moved[0]["status"] == "delivered"
        assert moved[0]["attempts"] == 3 and moved[0]["lastStatus"] == 204
    statuses = [json.loads(b)["type"] for b, _ in receiver.requests]
    assert statuses.count("supplier.score.moved") == 3
    ids = {h["webhook-id"] for b, h in receiver.requests if b"score.moved" in b}
    assert len(ids) == 1  # a retry is the same message: receivers drop duplicates by id
    for body, headers in receiver.requests:
        standardwebhooks.Webhook(_secret_of(svc, sub["id"])).verify(body, headers)


def _secret_of(svc: Service, sub_id: str) -> str:
    from api.store.models import WebhookSubscription

    with svc.ctx.sessions() as s:
        row = s.get(WebhookSubscription, sub_id)
        assert row is not None
        return row.secret


def _dead_url() -> str:
    """A 127.0.0.1 port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_a_restart_resumes_pending_deliveries(world: dict[str, Any], tmp_path: Path) -> None:
    """Receiver down: the delivery stays pending in the store. The process stops; a new
    process (a new context on the same store) delivers it once the receiver is up."""
    svc: Service = world["svc"]
    supplier = sorted(world["first"])[0]
    dead = _dead_url()
    with running(svc.ctx) as client:
        oem = _auth(world, "OEM-0001")
        sub = _subscribe(client, oem, dead, scoreThreshold=0.0001)
        _file_and_publish(world, _audit(world, supplier, 0, 3), supplier)
        _wait(lambda: any(d["attempts"] >= 1 for d in _log(client, oem, sub["id"])))
    pending = _log(svc.client, oem, sub["id"], status="pending")
    assert pending and all(p["attempts"] >= 1 for p in _log(svc.client, oem, sub["id"]))
    assert all(p["lastError"] in (None, "ConnectError: no answer") for p in pending)
    assert all(p["lastStatus"] is None for p in pending)
    # The receiver comes up at the subscribed address; the service restarts.
    up = Receiver(port=int(dead.rsplit(":", 1)[1].split("/")[0]))
    try:
        restarted = ServiceContext.create(svc.ctx.settings, chain=svc.chain)
        with running(restarted) as client:
            _wait(lambda: all(d["status"] == "delivered" for d in _log(client, oem, sub["id"])))
            done = _log(client, oem, sub["id"])
        assert {d["msgId"] for d in done} == {p["msgId"] for p in pending}
        assert len(up.requests) == len(pending)
        for request in up.requests:
            standardwebhooks.Webhook(_secret_of(svc, sub["id"])).verify(*request)
        restarted.engine.dispose()
    finally:
        up.close()


def test_only_purchasing_or_admin_manage_their_own_subscriptions(
    world: dict[str, Any], receiver: Receiver
) -> None:
    svc: Service = world["svc"]
    client = svc.client
    oem = _auth(world, "OEM-0001")
    mine = _subscribe(client, oem, receiver.url)
    # A supplier (the party the events are about) and an auditor may not subscribe or look.
    for org in (sorted(world["first"])[0], "AUD-0001"):
        other = _auth(world, org)
        answer = client.post("/v1/webhooks", json={"url": receiver.url}, headers=other)
        assert answer.status_code == 403 and error_code(answer) == "forbidden_role"
        assert client.get("/v1/webhooks", headers=other).status_code == 403
        answer = client.get(f"/v1/webhooks/{mine['id']}/deliveries", headers=other)
        assert answer.status_code == 403
        assert client.delete(f"/v1/webhooks/{mine['id']}", headers=other).status_code == 403
    # Another OEM sees neither the subscription nor its log, and cannot delete it.
    rival_auth = svc.login(svc.parties["oem"])  # OEM-01, another purchasing organisation
    listed = client.get("/v1/webhooks", headers=rival_auth).json()["webhooks"]
    assert mine["id"] not in {w["id"] for w in listed}
    answer = client.get(f"/v1/webhooks/{mine['id']}/deliveries", headers=rival_auth)
    assert answer.status_code == 404 and error_code(answer) == "webhook_not_found"
    answer = client.delete(f"/v1/webhooks/{mine['id']}", headers=rival_auth)
    assert answer.status_code == 404 and error_code(answer) == "webhook_not_found"
    # The admin sees all; the owner deletes, after which it is gone.
    admin = svc.login(svc.admin)
    everyone = client.get("/v1/webhooks", headers=admin).json()
    # The published list schema has no secret: a listing that leaked one would fail it.
    assert_documented(WebhookList, everyone)
    assert mine["id"] in {w["id"] for w in everyone["webhooks"]}
    assert all("secret" not in w for w in everyone["webhooks"])
    deleted = client.delete(f"/v1/webhooks/{mine['id']}", headers=oem)
    assert deleted.status_code == 200
    assert_documented(WebhookDeleted, deleted.json())
    assert deleted.json()["id"] == mine["id"] and deleted.json()["deleted"] is True
    assert client.get(f"/v1/webhooks/{mine['id']}/deliveries", headers=oem).status_code == 404
    listed = client.get("/v1/webhooks", headers=oem).json()["webhooks"]
    assert mine["id"] not in {w["id"] for w in listed}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "file:///etc/passwd"}, "webhook_url_refused"),
        ({"url": "gopher://127.0.0.1:70/x"}, "webhook_url_refused"),
        ({"url": "http://user:pw@127.0.0.1/hook"}, "webhook_url_refused"),
        ({"url": "http:///no-host"}, "webhook_url_refused"),
        ({"url": "http://127.0.0.1/a b"}, "webhook_url_refused"),
        ({"url": "http://127.0.0.1:99999/hook"}, "webhook_url_refused"),
        ({"url": "http://127.0.0.1/hook#frag"}, "webhook_url_refused"),
        ({"url": "http://[::1/hook"}, "webhook_url_refused"),
        ({"url": "http://\u2603.example/hook"}, "webhook_url_refused"),  # not IDNA-encodable
        ({"url": "http://127.0.0.1/\u0000hook"}, "invalid_text"),  # strict JSON edge
        ({"url": "http://127.0.0.1/" + "a" * 2100}, "invalid_request"),
        ({"url": "http://127.0.0.1/h", "eventTypes": ["supplier.deleted"]}, "invalid_request"),
        ({"url": "http://127.0.0.1/h", "eventTypes": []}, "invalid_request"),
        ({"url": "http://127.0.0.1/h", "scoreThreshold": 0}, "invalid_request"),
        ({"url": "http://127.0.0.1/h", "scoreThreshold": 101}, "invalid_request"),
        ({"url": "http://127.0.0.1/h", "secret": "whsec_mine"}, "invalid_request"),
    ],
)
def test_hostile_subscriptions_are_refused(
    world: dict[str, Any], body: dict[str, Any], code: str
) -> None:
    svc: Service = world["svc"]
    answer = svc.client.post("/v1/webhooks", json=body, headers=_auth(world, "OEM-0001"))
    assert answer.status_code == 422, answer.text
    assert error_code(answer) == code


def test_subscriptions_per_organisation_are_bounded(tmp_path: Path) -> None:
    svc = make_service(tmp_path, "sqlite", webhook_max_subscriptions_per_org=2)
    oem = svc.login(svc.parties["oem"])
    for _ in range(2):
        _subscribe(svc.client, oem, "https://purchasing.example/hook")
    answer = svc.client.post(
        "/v1/webhooks", json={"url": "https://purchasing.example/hook"}, headers=oem
    )
    assert answer.status_code == 409 and error_code(answer) == "too_many_webhooks"
    svc.ctx.engine.dispose()


def test_a_receiver_that_never_answers_ends_failed_after_bounded_attempts(
    world: dict[str, Any],
) -> None:
    svc: Service = world["svc"]
    supplier = sorted(world["first"])[1]
    with running(svc.ctx) as client:
        oem = _auth(world, "OEM-0001")
        sub = _subscribe(client, oem, _dead_url(), scoreThreshold=0.0001)
        _file_and_publish(world, _audit(world, supplier, 0, 4), supplier)
        _wait(
            lambda: (
                (log := _log(client, oem, sub["id"])) and all(d["status"] == "failed" for d in log)
            )
        )
        for entry in _log(client, oem, sub["id"]):
            assert entry["attempts"] == FAST["webhook_max_attempts"]
            assert (
                entry["lastError"] == "ConnectError: no answer" and entry["nextAttemptAt"] is None
            )
