"""Intake's fast path (api.intake.check_records) against the model path it stands in for
(api.intake.check_record), on a hostile corpus: the same outcome for every record (accepted
with the same struct hash, role and row; or refused with the same status, code, message,
expected and got), then end to end through POST /v1/records:batch, where duplicates and
replays inside one batch and across batches are answered as before and the stored rows are
the model path's rows.

Adversaries: wrong types, extra and missing fields, huge integers, floats for integers,
Unicode look-alikes and control characters in strings, a payload over the size limit,
payload keys in another order, look-alike domains (chain id, contract), bad, high-s and
foreign signatures, unknown, revoked and wrong-role signers, a supplier filing about another,
stale and future signatures and event times, a record twice in one batch, a replayed nonce,
and a body with a duplicate JSON key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api import intake
from api.edges import parse_strict_json
from api.errors import ApiError
from api.intake import RECORD_COLUMNS, Checked, _fast_check, check_record, check_records
from api.store.models import Record
from ledger.eip712 import domain_separator
from ledger.keys import Signer
from ledger.records import Role, SignedRecord
from ledger.signing import sign_record
from tests.api.conftest import Party, Service, _database_urls, make_service
from tests.helpers import error_code, inspection_payload
from tests.intake_corpus import Case, corpus, resigned


@pytest.fixture(params=_database_urls())
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    # No per-key intake rate: these tests post the same keys' batches more than once.
    svc = make_service(tmp_path, request.param, intake_records_per_second_per_key=0)
    with svc.client:
        yield svc
    svc.ctx.engine.dispose()


def _outcome(ctx: Any, fn: Any, data: Any, now: int) -> tuple[Any, ...]:
    try:
        result = fn(ctx, data, now)
    except ApiError as exc:
        result = exc
    if isinstance(result, ApiError):
        return ("refused", result.status, result.code, result.message, result.expected, result.got)
    assert isinstance(result, Checked)
    return ("accepted", result.struct_hash, result.role, result.kind, result.signer, result.values)


def _old(ctx: Any, data: Any, now: int) -> Any:
    return check_record(ctx, data, now)


def _new(ctx: Any, data: Any, now: int) -> Any:
    return check_records(ctx, [data], now)[0]


def _sign(service: Service, party: Party, kind: str, payload: dict[str, Any], **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "subject": party.org,
        "kind": kind,
        "part_number": "P-100",
        "lot_id": f"LOT-{party.nonce}",
        "event_time": int(time.time()) - 3600,
        "quantity": 50,
        "defects": 1,
        "nonce": party.next_nonce(),
        "payload": payload,
    }
    fields.update(kw)
    return sign_record(party.signer, service.ctx.domain, **fields)


def _cases(service: Service) -> list[Case]:
    supplier, oem = service.parties["supplier"], service.parties["oem"]
    auditor = service.parties["auditor"]
    now = int(time.time())
    inspection = inspection_payload(1)
    inspection["sensorReport"][0]["values"] = [10.0, 1e-7, 12345.678, -0.0, 9.95]
    records: list[tuple[SignedRecord, Signer]] = [
        (_sign(service, supplier, "inspection", inspection), supplier.signer),
        (
            _sign(
                service,
                oem,
                "complaint",
                {
                    "complaintId": "C-1",
                    "severity": "major",
                    "defectCode": "F",
                    "description": "Grüße",
                },
                subject="SUP-01",
            ),
            oem.signer,
        ),
        (
            _sign(
                service,
                auditor,
                "audit",
                {
                    "standard": "IATF16949",
                    "auditType": "process",
                    "majorNonconformities": 1,
                    "minorNonconformities": 2,
                },
                subject="SUP-01",
                quantity=3,
            ),
            auditor.signer,
        ),
    ]

    def rules() -> list[Case]:
        stranger = Party(Signer.generate(), "SUP-01", Role.SUPPLIER)
        big = inspection_payload(0)
        big["sensorReport"] = [
            {**big["sensorReport"][0], "type": f"c{i}", "values": [10.5] * 400} for i in range(50)
        ]
        timed = {
            "stale signature": {"signed_at": now - 3600},
            "signature from the future": {"signed_at": now + 3600},
            "eventTime in the future": {"event_time": now + 86_400, "signed_at": now},
            "eventTime too old": {"event_time": now - 31 * 86_400},
            "eventTime just after signedAt": {"event_time": now + 100, "signed_at": now},
        }
        out: list[Case] = [
            ("unknown signer", _sign(service, stranger, "inspection", inspection_payload())),
            ("OEM signs an inspection", _sign(service, oem, "inspection", inspection_payload())),
            (
                "auditor signs an inspection",
                _sign(service, auditor, "inspection", inspection_payload()),
            ),
            (
                "supplier files about another",
                _sign(service, supplier, "inspection", inspection_payload(), subject="SUP-02"),
            ),
            ("payload over the size limit", _sign(service, supplier, "inspection", big, defects=0)),
        ]
        for name, fields in timed.items():
            payload = inspection_payload()
            out.append((name, _sign(service, supplier, "inspection", payload, **fields)))
        return [(name, signed.model_dump(mode="json")) for name, signed in out]

    return corpus(records, service.ctx.domain, rules)


def test_fast_path_and_model_path_agree_on_every_record(service: Service) -> None:
    ctx, now = service.ctx, int(time.time())
    separator = domain_separator(ctx.domain)
    accepted = 0
    for name, data in _cases(service):
        old = _outcome(ctx, _old, data, now)
        assert _outcome(ctx, _new, data, now) == old, name
        if old[0] == "accepted":
            accepted += 1
            # The fast path itself decided it (these kinds never need the models).
            assert _fast_check(ctx, data, now, {}, separator) is not None, name
    assert accepted >= 20


def test_a_revoked_key_is_refused_by_both_paths(service: Service) -> None:
    ctx = service.ctx
    party = Party(Signer.generate(), "SUP-09", Role.SUPPLIER)
    service.chain.register_participant(party.address, Role.SUPPLIER, party.org)
    ctx.follower.sync()
    data = _sign(service, party, "inspection", inspection_payload()).model_dump(mode="json")
    now = int(time.time())
    assert _outcome(ctx, _new, data, now)[0] == "accepted"
    service.chain.revoke_participant(party.address, Role.SUPPLIER)
    ctx.follower.sync()
    ctx.roles.refresh()
    refused = _outcome(ctx, _new, data, now)
    assert refused == _outcome(ctx, _old, data, now)
    assert refused[:3] == ("refused", 403, "signer_not_registered")


def test_batch_through_http_answers_and_stores_as_the_model_path(service: Service) -> None:
    ctx = service.ctx
    supplier = service.parties["supplier"]
    cases = _cases(service)
    first = _sign(service, supplier, "inspection", inspection_payload()).model_dump(mode="json")
    replay = resigned(
        {**first, "record": {**first["record"], "lotId": "LOT-REPLAY"}}, supplier.signer, ctx.domain
    )
    # Records whose text the strict-JSON edge refuses would refuse the whole body (test_edges).
    batch = [*[data for _, data in cases if _passes_the_edge(data)][:900], first, first, replay]
    now = int(time.time())
    expected: list[tuple[str, str | None]] = []  # (status, error code) per index
    seen_hashes: set[str] = set()
    seen_nonces: set[tuple[str, int]] = set()
    stored: dict[str, tuple[Any, ...]] = {}
    for data in batch:
        old = _outcome(ctx, _old, data, now)
        if old[0] == "refused":
            expected.append(("rejected", old[2]))
            continue
        checked = check_record(ctx, data, now)
        if checked.struct_hash in seen_hashes:
            expected.append(("duplicate", None))
        elif (checked.signer, checked.nonce) in seen_nonces:
            expected.append(("rejected", "nonce_replayed"))
        else:
            expected.append(("accepted", None))
            stored[checked.struct_hash] = checked.values
        seen_hashes.add(checked.struct_hash)
        seen_nonces.add((checked.signer, checked.nonce))
    response = service.client.post("/v1/records:batch", json={"records": batch})
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    got = [(r["status"], r.get("error", {}).get("code")) for r in results]
    assert got == expected
    assert ("accepted", None) in got and ("duplicate", None) in got
    # The stored rows are the model path's rows, column by column.
    with ctx.sessions() as s:
        rows = {r.struct_hash: r for r in s.scalars(select(Record))}
    assert set(rows) == set(stored)
    for struct_hash, values in stored.items():
        row = rows[struct_hash]
        assert tuple(getattr(row, column) for column in RECORD_COLUMNS) == values
        assert row.batch_id is None or row.batch_id > 0
    # The same batch again: every accepted record is now a duplicate, nothing else changes.
    again = service.client.post("/v1/records:batch", json={"records": batch}).json()["results"]
    assert [r["status"] for r in again] == [
        "duplicate" if status in ("accepted", "duplicate") else status for status, _ in got
    ]


def _passes_the_edge(data: Any) -> bool:
    try:
        parse_strict_json(json.dumps({"records": [data]}).encode())
    except ApiError:
        return False
    return True


def test_a_duplicate_json_key_refuses_the_whole_body(service: Service) -> None:
    supplier = service.parties["supplier"]
    record = service.inspection(supplier).model_dump(mode="json")
    text = json.dumps(record).replace('"signature":', '"signature": "0x00", "signature":', 1)
    body = '{"records": [' + text + "]}"
    response = service.client.post(
        "/v1/records:batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and error_code(response) == "duplicate_key"


@pytest.mark.parametrize("count", [1, 1000])
def test_full_batches_of_valid_records_are_all_taken_by_the_fast_path(
    service: Service, count: int
) -> None:
    supplier = service.parties["supplier"]
    records = [service.inspection(supplier).model_dump(mode="json") for _ in range(count)]
    now = int(time.time())
    separator = domain_separator(service.ctx.domain)
    assert all(_fast_check(service.ctx, r, now, {}, separator) for r in records)
    response = service.client.post("/v1/records:batch", json={"records": records})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == count


def test_lookups_split_into_statements_answer_as_one(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates and replays are found whatever the statements' split: many signers, one
    signer's nonces across several statements (a tiny LOOKUP_CHUNK forces both)."""
    monkeypatch.setattr(intake, "LOOKUP_CHUNK", 3)
    parties = [service.parties[name] for name in ("supplier", "supplier2")]
    first = [service.inspection(p).model_dump(mode="json") for p in parties for _ in range(7)]
    response = service.client.post("/v1/records:batch", json={"records": first})
    assert response.json()["accepted"] == 14
    replays = [
        resigned(
            {**r, "record": {**r["record"], "lotId": "LOT-X"}},
            parties[i // 7].signer,
            service.ctx.domain,
        )
        for i, r in enumerate(first)
    ]
    again = service.client.post("/v1/records:batch", json={"records": first + replays}).json()
    statuses = [(r["status"], r.get("error", {}).get("code")) for r in again["results"]]
    assert statuses == [("duplicate", None)] * 14 + [("rejected", "nonce_replayed")] * 14


def test_racing_writers_of_the_same_records_store_each_once(service: Service) -> None:
    """Two writers (as two API processes would) store the same records at once: the loser's
    transaction fails on the unique key (an INSERT or, on PostgreSQL, a COPY), is rolled back
    and reclassified, so each record is accepted once and a duplicate for the other."""
    import threading

    supplier = service.parties["supplier"]
    ctx = service.ctx
    for _ in range(3):
        records = [service.inspection(supplier).model_dump(mode="json") for _ in range(200)]
        items = list(enumerate(check_records(ctx, records)))
        results: list[list[str]] = []
        barrier = threading.Barrier(2)

        def write(
            results: list[list[str]] = results,
            items: Any = items,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            results.append([o.status for o in intake.store(ctx, items)])

        threads = [threading.Thread(target=write) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 2
        for first, second in zip(*results, strict=True):
            assert sorted((first, second)) == ["accepted", "duplicate"]
