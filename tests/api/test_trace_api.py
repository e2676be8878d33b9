"""Genealogy through the live service (issue 19): four tiers (raw material -> moulded housing ->
ECU module -> vehicle) signed by the parties that made them, anchored, queried, and every
record a recall-scope answer names verified from its receipt with no service trusted; and the
adversaries: a party signing another's assembly, a link that closes a loop, a link restated,
a supplier tracing a competitor's lot."""

from __future__ import annotations

import time
from typing import Any

from api.anchorer import Anchorer
from ledger.records import SignedRecord
from ledger.tlog.note import Verifier
from ledger.tlog.verify import verify_receipt_offline
from ledger.verify import verify_receipt
from tests.api.conftest import Party, Service
from tests.helpers import error_code
from traceability.evidence import sign_aggregation, sign_transformation
from traceability.genealogy import (
    Filters,
    MemoryLinks,
    links_of_record,
    node_key,
    walk,
)

RESIN = ("RAW-01", "PA66-RESIN", "R-42")
H1, H2 = ("SUP-02", "HOUSING", "H-1"), ("SUP-02", "HOUSING", "H-2")
PCB = ("SUP-01", "PCB", "P-7")
ECU1, ECU2 = ("SUP-01", "ECU", "SN-1"), ("SUP-01", "ECU", "SN-2")
VIN1, VIN2 = ("OEM-01", "VEHICLE", "VIN-1"), ("OEM-01", "VEHICLE", "VIN-2")


def _post(svc: Service, signed: SignedRecord) -> Any:
    return svc.client.post("/v1/records", json=signed.model_dump(mode="json"))


def _agg(svc: Service, who: Party, parent: Any, children: Any, t: int, site: str) -> Any:
    return sign_aggregation(
        who.signer,
        svc.ctx.domain,
        parent=parent,
        children=children,
        event_time=t,
        nonce=who.next_nonce(),
        site=site,
    )


def _lot(node: Any) -> dict[str, str]:
    return {"maker": node[0], "partNumber": node[1], "lotId": node[2]}


def _build(svc: Service) -> tuple[list[SignedRecord], int]:
    sup1, sup2, oem = (svc.parties[n] for n in ("supplier", "supplier2", "oem"))
    t = int(time.time()) - 7200
    records = [
        sign_transformation(
            sup2.signer,
            svc.ctx.domain,
            inputs=[RESIN],
            outputs=[H1, H2],
            event_time=t,
            nonce=sup2.next_nonce(),
            site="sup02-moulding",
        ),
        _agg(svc, sup1, ECU1, [H1, PCB], t + 100, "sup01-line"),
        _agg(svc, sup1, ECU2, [H2], t + 200, "sup01-line"),
        _agg(svc, oem, VIN1, [ECU1], t + 300, "oem-plant-1"),
        _agg(svc, oem, VIN2, [ECU2], t + 400, "oem-plant-2"),
    ]
    for signed in records:
        answer = _post(svc, signed)
        assert answer.status_code == 202, answer.text
    return records, t


def test_four_tiers_anchored_scoped_and_verified_offline(service: Service) -> None:
    _, t = _build(service)
    auditor, oem = service.login(service.parties["auditor"]), service.login(service.parties["oem"])

    scope = service.client.post("/v1/trace/scope", json={"lots": [_lot(RESIN)]}, headers=oem)
    # A genealogy record is about its signer: the OEM assembling vehicles is not a supplier to
    # rank (its records are not quality evidence about anyone).
    inspection = service.inspection(service.parties["supplier"]).model_dump(mode="json")
    assert service.client.post("/v1/records", json=inspection).status_code == 202
    ranked = service.client.get("/v1/suppliers", headers=oem).json()
    listed = {r["supplierId"] for r in ranked["suppliers"]} | {
        u["supplierId"] for u in ranked["unavailable"]
    }
    assert listed == {"SUP-01"}
    assert scope.status_code == 200, scope.text
    body = scope.json()
    assert body["total"] == 6
    assert [(lv["depth"], lv["count"]) for lv in body["levels"]] == [(1, 2), (2, 2), (3, 2)]
    assert body["levels"][2]["parts"] == {"VEHICLE": 2}
    assert {(n["lotId"], n["depth"]) for n in body["nodes"]} == {
        ("H-1", 1),
        ("H-2", 1),
        ("SN-1", 2),
        ("SN-2", 2),
        ("VIN-1", 3),
        ("VIN-2", 3),
    }
    assert body["recordCount"] == 5 and {r["anchoring"] for r in body["records"]} == {"pending"}

    # Narrowed: vehicles built at plant 1, and products made in the last hour of the build.
    plant1 = service.client.post(
        "/v1/trace/scope", json={"lots": [_lot(RESIN)], "site": "oem-plant-1"}, headers=oem
    ).json()
    assert [(n["lotId"], n["depth"]) for n in plant1["nodes"]] == [("VIN-1", 3)]
    late = service.client.post(
        "/v1/trace/scope", json={"lots": [_lot(RESIN)], "since": t + 250}, headers=oem
    ).json()
    assert {n["lotId"] for n in late["nodes"]} == {"VIN-1", "VIN-2"}

    tree = service.client.get("/v1/trace/where-from", params=_lot(VIN1), headers=auditor)
    assert tree.status_code == 200, tree.text
    assert {(n["lotId"], n["depth"]) for n in tree.json()["nodes"]} == {
        ("SN-1", 1),
        ("H-1", 2),
        ("P-7", 2),
        ("R-42", 3),
    }

    # Anchored: every record the scope rests on is confirmed, and an auditor holding only the
    # receipts (log key pinned, no service trusted) verifies each and rebuilds the same answer.
    Anchorer(service.ctx).run_once(force=True)
    body = service.client.post("/v1/trace/scope", json={"lots": [_lot(RESIN)]}, headers=oem).json()
    assert {r["anchoring"] for r in body["records"]} == {"confirmed"}
    log_key = Verifier.parse(service.client.get("/v1/log/key").json()["vkey"])
    rebuilt = MemoryLinks()
    for rec in body["records"]:
        receipt = service.client.get(f"/v1/records/{rec['structHash']}/receipt", headers=auditor)
        assert receipt.status_code == 200, receipt.text
        offline = verify_receipt_offline(None, receipt.json(), log_key=log_key)
        assert offline.ok, offline.to_json()
        assert verify_receipt(None, receipt.json(), service.chain).ok
        signed = SignedRecord.model_validate(receipt.json()["record"])
        for row in links_of_record(signed, rec["structHash"]):
            rebuilt.add(row)
    again = walk(rebuilt, [node_key(RESIN)], "where-used", Filters())
    assert {n["lotId"] for n in body["nodes"]} == {k.split("|")[2] for k in again.matched}
    assert [(lv["depth"], lv["count"]) for lv in body["levels"]] == again.levels()


def test_genealogy_adversaries_are_refused(service: Service) -> None:
    records, t = _build(service)
    sup1, sup2, oem = (service.parties[n] for n in ("supplier", "supplier2", "oem"))

    # The OEM cannot say what went into a supplier's module, nor a supplier into another's.
    forged = _agg(service, oem, ("SUP-01", "ECU", "SN-9"), [H1], t, "x")
    assert error_code(_post(service, forged)) == "subject_mismatch"
    foreign = _agg(service, sup1, ("SUP-02", "HOUSING", "H-9"), [RESIN], t, "x")
    assert error_code(_post(service, foreign)) == "subject_mismatch"

    # A loop through any depth: the housing maker claims a vehicle went into its housing.
    loop = _agg(service, sup2, H1, [VIN1], t + 500, "sup02-moulding")
    response = _post(service, loop)
    assert response.status_code == 409 and error_code(response) == "genealogy_cycle"
    # The same link restated by a new record (new nonce) is refused; the same record again is
    # the same answer (idempotent).
    restated = _agg(service, sup1, ECU1, [H1], t + 600, "sup01-line")
    assert error_code(_post(service, restated)) == "duplicate_link"
    assert _post(service, records[1]).json()["duplicate"] is True
    # A later record adding a new child to the same module is accepted (rework, EPCIS ADD).
    rework = _agg(service, sup1, ECU1, [("SUP-03", "CAP", "C-1")], t + 700, "sup01-line")
    assert _post(service, rework).status_code == 202

    # Twice in one batch: the first is accepted, the second refused; a loop closed only by
    # links of the same batch is refused too.
    a = _agg(service, sup1, ("SUP-01", "ECU", "SN-3"), [("SUP-03", "CAP", "C-2")], t, "l")
    b = _agg(service, sup1, ("SUP-01", "ECU", "SN-4"), [("SUP-03", "CAP", "C-2")], t, "l")
    b_again = _agg(service, sup1, ("SUP-01", "ECU", "SN-4"), [("SUP-03", "CAP", "C-2")], t, "l")
    c = _agg(service, sup1, ("SUP-01", "ECU", "SN-3"), [("SUP-01", "ECU", "SN-5")], t, "l")
    d = _agg(service, sup1, ("SUP-01", "ECU", "SN-5"), [("SUP-01", "ECU", "SN-3")], t, "l")
    batch = service.client.post(
        "/v1/records:batch",
        json={"records": [s.model_dump(mode="json") for s in (a, b, b_again, c, d)]},
    )
    assert batch.status_code == 207, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "accepted",
        "rejected",
        "accepted",
        "rejected",
    ]
    assert results[2]["error"]["code"] == "duplicate_link"
    assert results[4]["error"]["code"] == "genealogy_cycle"
    # Nothing of a refused record was stored: the loop's link is not in the genealogy.
    oem_auth = service.login(oem)
    used = service.client.get(
        "/v1/trace/where-used", params=_lot(("SUP-01", "ECU", "SN-3")), headers=oem_auth
    ).json()
    assert used["total"] == 0


def test_trace_reads_are_authorised_and_bounded(service: Service) -> None:
    _build(service)
    sup1 = service.login(service.parties["supplier"])
    sup2 = service.login(service.parties["supplier2"])
    oem = service.login(service.parties["oem"])

    assert error_code(service.client.post("/v1/trace/scope", json={"lots": []})) in {
        "not_authenticated",
        "invalid_request",
    }
    assert service.client.get("/v1/trace/where-used", params=_lot(RESIN)).status_code == 401
    # A supplier traces only lots it made: where its housings went, not the resin maker's lot.
    denied = service.client.post("/v1/trace/scope", json={"lots": [_lot(RESIN)]}, headers=sup1)
    assert denied.status_code == 403 and error_code(denied) == "forbidden_trace"
    mine = service.client.get("/v1/trace/where-used", params=_lot(H1), headers=sup2)
    assert mine.status_code == 200 and mine.json()["total"] == 2

    too_many = {"lots": [_lot(("M", "P", f"L{i}")) for i in range(101)]}
    assert service.client.post("/v1/trace/scope", json=too_many, headers=oem).status_code == 422
    window = {"lots": [_lot(RESIN)], "since": 10, "until": 5}
    assert service.client.post("/v1/trace/scope", json=window, headers=oem).status_code == 422
    hostile = {"lots": [{"maker": "A|B", "partNumber": "P", "lotId": "L"}]}
    assert service.client.post("/v1/trace/scope", json=hostile, headers=oem).status_code == 422
    bad = service.client.get(
        "/v1/trace/where-used", params={**_lot(RESIN), "limit": 0}, headers=oem
    )
    assert bad.status_code == 422
    limited = service.client.post(
        "/v1/trace/scope", json={"lots": [_lot(RESIN)], "limit": 2}, headers=oem
    ).json()
    assert limited["total"] == 6 and len(limited["nodes"]) == 2 and limited["truncated"]


def _ui_session(service: Service, party: Party) -> None:
    token = service.login(party)["Authorization"].split()[1]
    answer = service.client.post(
        "/ui/session", json={"accessToken": token}, headers={"Origin": "http://testserver"}
    )
    assert answer.status_code == 200, answer.text


def test_dashboard_tree_and_scope_pages(service: Service) -> None:
    _build(service)
    _ui_session(service, service.parties["oem"])
    home = service.client.get("/ui/trace")
    assert home.status_code == 200 and 'data-nav="scope"' in home.text
    tree = service.client.get(
        "/ui/trace", params={"maker": "OEM-01", "part": "VEHICLE", "lot": "VIN-1"}
    )
    assert tree.status_code == 200, tree.text
    for lot, depth in (("SN-1", 1), ("H-1", 2), ("P-7", 2), ("R-42", 3)):
        assert f'data-depth="{depth}" data-lot="{lot}"' in tree.text
    scope = service.client.get(
        "/ui/trace/scope", params={"lots": "RAW-01,PA66-RESIN,R-42\n", "site": "oem-plant-2"}
    )
    assert scope.status_code == 200, scope.text
    assert (
        '<span data-test="scope-total">1</span>' in scope.text and 'data-lot="VIN-2"' in scope.text
    )
    # Hostile form input is a page with the reason, never a server error; markup is escaped.
    bad = service.client.get("/ui/trace/scope", params={"lots": "<script>x</script>"})
    assert bad.status_code == 422 and "<script>x" not in bad.text
    dates = service.client.get(
        "/ui/trace/scope", params={"lots": "RAW-01,PA66-RESIN,R-42", "since": "2026-13-45"}
    )
    assert dates.status_code == 422
    # A supplier's page refuses a lot it did not make.
    _ui_session(service, service.parties["supplier"])
    denied = service.client.get(
        "/ui/trace", params={"maker": "RAW-01", "part": "PA66-RESIN", "lot": "R-42"}
    )
    assert denied.status_code == 403
