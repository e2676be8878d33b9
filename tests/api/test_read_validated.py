"""Stored as signed, read as validated; one supplier's unusable evidence never takes the ranking
down; no score dated in the future (issue 18 item 1)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from api.anchorer import Anchorer
from api.store.models import Record, Score
from ledger.signing import sign_record
from tests.api.conftest import Service, make_service
from tests.helpers import error_code

# The reproduction: an OEM complaint that leaves out the optional `status`.
COMPLAINT_WITHOUT_STATUS = {"complaintId": "C-0001", "severity": "major", "defectCode": "FLASH"}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = make_service(tmp_path, "sqlite")
    with service.client:
        yield service
    service.ctx.engine.dispose()


def _complaint(svc: Service, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    oem = svc.parties["oem"]
    return sign_record(
        oem.signer,
        svc.ctx.domain,
        subject=subject,
        kind="complaint",
        part_number="P-100",
        lot_id="LOT-C1",
        event_time=int(time.time()) - 3600,
        quantity=10,
        defects=2,
        nonce=oem.next_nonce(),
        payload=payload,
    ).model_dump(mode="json")


def _submit(svc: Service, body: dict[str, Any]) -> str:
    answer = svc.client.post("/v1/records", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["structHash"])


def test_optional_field_left_out_is_read_with_its_default(svc: Service) -> None:
    """The complaint is stored exactly as signed (no `status`), and once anchored the ranking,
    the dashboard and the supplier's credit all answer (they read the validated payload)."""
    sent = _complaint(svc, "SUP-01", COMPLAINT_WITHOUT_STATUS)
    digest = _submit(svc, sent)
    _submit(svc, svc.inspection(svc.parties["supplier"]).model_dump(mode="json"))
    Anchorer(svc.ctx).run_once(force=True)

    with svc.ctx.sessions() as s:
        stored = s.get(Record, digest)
        assert stored is not None and stored.payload == COMPLAINT_WITHOUT_STATUS  # as signed
    auditor = svc.login(svc.parties["auditor"])
    ranking = svc.client.get("/v1/suppliers", headers=auditor)
    assert ranking.status_code == 200, ranking.text
    assert "SUP-01" in [r["supplierId"] for r in ranking.json()["suppliers"]]
    assert ranking.json()["unavailable"] == []
    credit = svc.client.get("/v1/suppliers/SUP-01/credit", headers=auditor)
    assert credit.status_code == 200, credit.text
    page = svc.client.get(
        "/ui/suppliers", cookies={"qledger_ui": auditor["Authorization"].split()[1]}
    )
    assert page.status_code == 200 and "SUP-01" in page.text
    # The receipt's envelope is still the signed bytes: it re-verifies.
    receipt = svc.client.get(f"/v1/records/{digest}", headers=svc.login(svc.parties["oem"])).json()
    assert receipt["signed"]["payload"] == COMPLAINT_WITHOUT_STATUS


def test_one_unreadable_supplier_is_reported_not_fatal(svc: Service) -> None:
    """A stored row that no longer validates (written before a schema change, or by hand):
    that supplier is listed as unavailable with a reason, everyone else is still ranked, its
    own credit read is a clear 409 problem, and the dashboard still answers."""
    _submit(svc, svc.inspection(svc.parties["supplier"]).model_dump(mode="json"))
    broken = _submit(svc, _complaint(svc, "SUP-02", COMPLAINT_WITHOUT_STATUS))
    Anchorer(svc.ctx).run_once(force=True)
    with svc.ctx.sessions() as s, s.begin():
        s.execute(
            update(Record)
            .where(Record.struct_hash == broken)
            .values(payload={"complaintId": "C-0001", "severity": "catastrophic"})
        )

    oem = svc.login(svc.parties["oem"])
    ranking = svc.client.get("/v1/suppliers", headers=oem)
    assert ranking.status_code == 200, ranking.text
    body = ranking.json()
    assert [r["supplierId"] for r in body["suppliers"]] == ["SUP-01"]
    [unavailable] = body["unavailable"]
    assert unavailable["supplierId"] == "SUP-02"
    assert unavailable["code"] == "evidence_unreadable" and broken in unavailable["reason"]

    credit = svc.client.get("/v1/suppliers/SUP-02/credit", headers=oem)
    assert credit.status_code == 409 and error_code(credit) == "score_unavailable"
    assert svc.client.get("/v1/suppliers/SUP-01/credit", headers=oem).status_code == 200

    cookie = {"qledger_ui": oem["Authorization"].split()[1]}
    page = svc.client.get("/ui/suppliers", cookies=cookie)
    assert page.status_code == 200
    assert 'data-test="unavailable"' in page.text and "SUP-02" in page.text
    assert svc.client.get("/ui/suppliers/SUP-02", cookies=cookie).status_code < 500


def test_no_score_is_dated_in_the_future(svc: Service) -> None:
    _submit(svc, svc.inspection(svc.parties["supplier"]).model_dump(mode="json"))
    Anchorer(svc.ctx).run_once(force=True)
    oem = svc.login(svc.parties["oem"])
    for as_of in (253402300800, 2**63, 10**30, int(time.time()) + 86_400, 0, -1):
        answer = svc.client.get(f"/v1/suppliers/SUP-01/credit?as_of={as_of}", headers=oem)
        assert answer.status_code == 422, answer.text
        assert error_code(answer) in ("as_of_in_future", "invalid_request")
    with svc.ctx.sessions() as s:
        assert list(s.scalars(select(Score).where(Score.as_of > time.time() + 3600))) == []
    # The supplier's pages still answer afterwards.
    assert svc.client.get("/v1/suppliers/SUP-01/credit", headers=oem).status_code == 200
    cookie = {"qledger_ui": oem["Authorization"].split()[1]}
    assert svc.client.get("/ui/suppliers/SUP-01", cookies=cookie).status_code == 200
