"""The dashboard's notification inbox and thread pages: each party sees its own inbox with
state, overdue flag and history, the OEM sees its tier-1's forward and the tier-2's answer,
and a party outside a thread gets the same 404 as for an absent one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.anchorer import Anchorer
from tests.api.conftest import Party, Service, make_service
from tests.api.test_notifications import _ok, _open, _sign

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = make_service(tmp_path, "sqlite")
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


def _page_client(svc: Service, party: Party) -> TestClient:
    token = svc.login(party)["Authorization"].removeprefix("Bearer ")
    client = TestClient(svc.client.app, follow_redirects=False, headers=ORIGIN)
    answer = client.post("/ui/session", json={"accessToken": token})
    assert answer.status_code == 200, answer.text
    return client


@pytest.mark.slow
def test_inbox_and_thread_pages_per_party(service: Service) -> None:
    oem, sup, sub = (service.parties[k] for k in ("oem", "supplier", "supplier2"))
    _open(service, "QN-UI", deadline=int(time.time()) - 60, links={"incidentId": "INC-1"})
    fwd = {"sender": sup.org, "recipient": sub.org}
    _ok(service, _sign(service, sup, "created", "QN-UI-F", originId="QN-UI", **fwd))
    _ok(service, _sign(service, sup, "sent", "QN-UI-F", **fwd))
    _ok(service, _sign(service, sub, "received", "QN-UI-F", **fwd))
    Anchorer(service.ctx).run_once(force=True)

    as_oem = _page_client(service, oem)
    inbox = as_oem.get("/ui/notifications")
    assert inbox.status_code == 200, inbox.text
    assert 'data-notification="QN-UI"' in inbox.text and 'data-overdue="true"' in inbox.text
    assert 'data-nav="notifications"' in inbox.text
    page = as_oem.get("/ui/notifications/QN-UI")
    assert page.status_code == 200, page.text
    # The OEM's page shows its own thread and, below it, the forward with the tier-2's step.
    assert 'data-thread="QN-UI"' in page.text and 'data-thread="QN-UI-F"' in page.text
    assert page.text.count('data-transition="received"') == 2
    assert "/ui/incidents/INC-1" in page.text
    assert "pending anchoring" not in page.text

    as_sub = _page_client(service, sub)
    own = as_sub.get("/ui/notifications", params={"box": "received"})
    assert 'data-notification="QN-UI-F"' in own.text and 'data-notification="QN-UI"' not in own.text
    assert as_sub.get("/ui/notifications/QN-UI").status_code == 404
    assert as_sub.get("/ui/notifications/QN-NONE").status_code == 404
    assert as_sub.get("/ui/notifications/..%2F..%2Fetc").status_code == 404
    # A transition record of the thread opens for its parties, through the records page.
    struct_hash = as_oem.get("/v1/notifications/QN-UI-F", headers=service.login(oem)).json()[
        "history"
    ][2]["structHash"]
    assert as_oem.get(f"/ui/records/{struct_hash}").status_code == 200
