"""EPCIS 2.0 through the live service (issue 19 item 3): a supplier imports the standard's
examples as signed records, they anchor, and they come back out of the API (and out of
``qledger epcis export``) as documents that validate against the GS1 schema and import again
to the same records. Other parties read nothing they may not read."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from api.anchorer import Anchorer
from api.main import create_app
from api.schemas import EpcisDocument, EpcisEvent
from cli import app
from client.drafts import sign_draft
from ledger.keys import Signer
from ledger.records import Domain, Role, SignedRecord
from tests.api.conftest import Service, make_service
from tests.helpers import assert_documented, error_code
from tests.traceability.epcis_helpers import (
    COMPANIES,
    assembly_example,
    shipping_example,
    transformation_example,
)
from traceability.epcis import Companies, document, import_document, schema_errors

TABLE = Companies.model_validate(COMPANIES)
runner = CliRunner()


def _published(doc: dict[str, Any]) -> None:
    """The document is what OpenAPI publishes (EpcisDocument; each event an EpcisEvent whose
    only unnamed members are qledger: extensions) and what GS1's EPCIS 2.0 schema allows."""
    assert_documented(EpcisDocument, doc)
    events = doc["epcisBody"]["eventList"]
    if events:
        assert_documented(EpcisEvent, events, extensions="qledger:")
    assert schema_errors(doc) == []


def _all_examples() -> dict[str, Any]:
    doc = shipping_example()
    doc["epcisBody"]["eventList"] += [
        assembly_example()["epcisBody"]["eventList"][0],
        transformation_example()["epcisBody"]["eventList"][0],
    ]
    return doc


def _drafts(doc: dict[str, Any], org: str) -> list[dict[str, Any]]:
    items = import_document(doc, org=org, companies=TABLE)
    assert [i.error for i in items] == [None] * len(items)
    return [i.draft for i in items if i.draft is not None]


def _sign(signer: Signer, domain: Domain, draft: dict[str, Any], nonce: int) -> SignedRecord:
    return sign_draft(signer, domain, {**draft, "nonce": nonce})


def test_import_anchor_export_through_the_api(service: Service) -> None:
    supplier = service.parties["supplier"]
    drafts = _drafts(_all_examples(), supplier.org)
    assert [d["kind"] for d in drafts] == ["delivery", "aggregation", "transformation"]
    signed = [
        _sign(supplier.signer, service.ctx.domain, d, supplier.next_nonce()).model_dump(mode="json")
        for d in drafts
    ]
    answer = service.client.post("/v1/records:batch", json={"records": signed})
    assert answer.status_code == 202, answer.text
    hashes = [r["structHash"] for r in answer.json()["results"]]
    Anchorer(service.ctx).run_once(force=True)

    auth = service.login(supplier)
    events = []
    for h in hashes:
        assert service.client.get(f"/v1/records/{h}/receipt", headers=auth).status_code == 200
        got = service.client.get(f"/v1/records/{h}/epcis", headers=auth)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/ld+json")
        doc = got.json()
        _published(doc)
        [event] = doc["epcisBody"]["eventList"]
        assert event["eventID"].endswith(h)
        assert event["qledger:signature"] == signed[len(events)]["signature"]
        events.append(event)
    # The exported document imports again to the very drafts the supplier signed.
    assert _drafts(document(events), supplier.org) == drafts

    page = service.client.get(
        "/v1/epcis/events", params={"subject": supplier.org, "limit": 10}, headers=auth
    )
    assert page.status_code == 200
    _published(page.json())
    assert {e["eventID"][-66:] for e in page.json()["epcisBody"]["eventList"]} == set(hashes)


def test_nobody_reads_another_suppliers_records_as_epcis(service: Service) -> None:
    supplier, other = service.parties["supplier"], service.parties["supplier2"]
    record = service.inspection(supplier)
    answer = service.client.post("/v1/records", json=record.model_dump(mode="json"))
    assert answer.status_code == 202
    h = answer.json()["structHash"]
    path = f"/v1/records/{h}/epcis"
    assert error_code(service.client.get(path)) == "not_authenticated"
    foreign = service.client.get(path, headers=service.login(other))
    assert (foreign.status_code, error_code(foreign)) == (404, "record_not_found")
    listed = service.client.get(
        "/v1/epcis/events", params={"subject": supplier.org}, headers=service.login(other)
    )
    assert listed.json()["epcisBody"]["eventList"] == []  # a supplier sees its own only
    assert_documented(EpcisDocument, listed.json())  # an empty page is still a document
    auditor = service.login(service.parties["auditor"])
    inspection = service.client.get(path, headers=auditor)
    assert inspection.status_code == 200
    _published(inspection.json())  # an ObjectEvent with its sensor readings
    too_many = service.client.get("/v1/epcis/events", params={"limit": 201}, headers=auditor)
    assert (too_many.status_code, error_code(too_many)) == (422, "invalid_request")


# -- the command line against a served app ----------------------------------------------------


def _serve(app_: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(app_, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def _count(svc: Service) -> int:
    from sqlalchemy import func, select

    from api.store.models import Record

    with svc.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Record)) or 0)


@pytest.mark.slow
def test_qledger_epcis_import_and_export_as_a_user_runs_them(tmp_path: Path) -> None:
    svc = make_service(tmp_path, "sqlite")
    signer = Signer.generate()  # a second key of SUP-01, in a plain key file
    svc.chain.register_participant(signer.address, Role.SUPPLIER, "SUP-01")
    svc.ctx.follower.sync()
    key = tmp_path / "supplier.json"
    key.write_text(json.dumps({"private_key": signer.private_key.hex()}))
    companies = tmp_path / "companies.json"
    companies.write_text(json.dumps(COMPANIES))
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(_all_examples()))
    server, thread, url = _serve(create_app(ctx=svc.ctx))
    try:
        base = ["--key", str(key), "--url", url]
        # A hostile document: refused before sign-in, nothing submitted.
        bad = tmp_path / "bad.json"
        hostile = _all_examples()
        hostile["epcisBody"]["eventList"][1]["childEPCs"][0] = "not a uri"
        bad.write_text(json.dumps(hostile))
        result = runner.invoke(app, ["epcis", "import", str(bad), *base])
        assert result.exit_code == 1
        assert "/epcisBody/eventList/1/childEPCs/0" in result.output
        assert "nothing submitted" in result.output
        # One event the signer may not claim stops the whole import.
        foreign = _all_examples()
        foreign["epcisBody"]["eventList"][2]["outputEPCList"][0] = "urn:epc:id:sgtin:4000001.0654.1"
        bad.write_text(json.dumps(foreign))
        result = runner.invoke(
            app, ["epcis", "import", str(bad), "--companies", str(companies), *base]
        )
        assert result.exit_code == 1, result.output
        assert "1 of 3 events cannot be imported; nothing submitted" in result.output
        assert _count(svc) == 0

        result = runner.invoke(
            app, ["epcis", "import", str(doc), "--companies", str(companies), "--dry-run", *base]
        )
        assert result.exit_code == 0, result.output
        assert _count(svc) == 0
        result = runner.invoke(
            app, ["epcis", "import", str(doc), "--companies", str(companies), *base]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["submitted"] == 3
        assert [e["status"] for e in report["events"]] == ["accepted"] * 3
        assert report["events"][2]["notCarried"] == ["disposition", "example:myField", "ilmd"]
        hashes = [e["structHash"] for e in report["events"]]
        assert _count(svc) == 3

        out = tmp_path / "out.jsonld"
        result = runner.invoke(app, ["epcis", "export", *hashes, "--out", str(out), *base])
        assert result.exit_code == 0, result.output
        exported = json.loads(out.read_text())
        assert schema_errors(exported) == []
        assert [e["eventID"][-66:] for e in exported["epcisBody"]["eventList"]] == hashes
        result = runner.invoke(app, ["epcis", "export", "--subject", "SUP-01", *base])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["epcisBody"]["eventList"]) == 3
        # A replay: the same document again, and the export of it (which maps to the very same
        # records), add nothing: each event is "already_imported", the evidence counted once.
        for again in (doc, out):
            result = runner.invoke(
                app, ["epcis", "import", str(again), "--companies", str(companies), *base]
            )
            assert result.exit_code == 0, result.output
            replay = json.loads(result.stdout)
            assert replay["submitted"] == 0
            assert [e["status"] for e in replay["events"]] == ["already_imported"] * 3
        assert _count(svc) == 3
        # The same event twice in one document is refused before anything is submitted.
        twice = _all_examples()
        twice["epcisBody"]["eventList"].append(twice["epcisBody"]["eventList"][0])
        bad.write_text(json.dumps(twice))
        result = runner.invoke(
            app, ["epcis", "import", str(bad), "--companies", str(companies), *base]
        )
        assert result.exit_code == 1
        assert "repeats /epcisBody/eventList/0" in result.output
        assert _count(svc) == 3
    finally:
        server.should_exit = True
        thread.join(30)
        svc.ctx.engine.dispose()
