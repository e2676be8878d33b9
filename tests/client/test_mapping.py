"""Mapping files and cell conversion: what an export can hold that must not become evidence
silently (another script's digits, NaN, a float where a count belongs, an unknown value, a
missing column), and the mapping mistakes that must stop an import before it reads a row."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.drafts import sign_draft
from client.importer import Row, draft_of, nonce_of, row_key, salt_of
from client.mapping import Mapping, MappingError, RowError, convert, load_mapping
from ledger.keys import Signer
from ledger.records import Domain, RecordKind
from tests.client.conftest import MAPPING

PLAIN = Mapping(kind=RecordKind.INSPECTION, record={}, payload={})
COMMA = Mapping(kind=RecordKind.INSPECTION, record={}, payload={}, decimal=",")
DOMAIN = Domain(chainId=31337, verifyingContract="0x5FbDB2315678afecb367f642d1B4fB8Fe56d7c15")


@pytest.mark.parametrize(
    ("cell", "kind", "mapping", "value"),
    [
        ("50", "int", PLAIN, 50),
        (50.0, "int", PLAIN, 50),  # an Excel number
        (" -3 ", "int", PLAIN, -3),
        ("9.997", "float", PLAIN, 9.997),
        ("9,997", "float", COMMA, 9.997),
        (10, "float", PLAIN, 10.0),
        ("1e-3", "float", PLAIN, 0.001),
        (4711.0, "str", PLAIN, "4711"),  # a lot number Excel stored as a number
        ("x", "bool", PLAIN, True),
        ("No", "bool", PLAIN, False),
        ("2026-12-01T06:30:00+01:00", "time", PLAIN, 1796103000),
        ("2026-12-01T05:30:00", "time", PLAIN, 1796103000),  # naive: the mapping's UTC
        (datetime(2026, 12, 1, 5, 30), "time", PLAIN, 1796103000),
        ("1796103000", "time", PLAIN, 1796103000),
    ],
)
def test_cells_convert(cell: object, kind: str, mapping: Mapping, value: object) -> None:
    assert convert(cell, kind, mapping) == value


@pytest.mark.parametrize(
    ("cell", "kind", "mapping"),
    [
        ("５０", "int", PLAIN),  # fullwidth digits: int() would read 50
        ("1_000", "int", PLAIN),  # int() would read 1000
        ("50.5", "int", PLAIN),
        (50.5, "int", PLAIN),
        (True, "int", PLAIN),
        ("5O", "int", PLAIN),
        ("NaN", "float", PLAIN),
        ("inf", "float", PLAIN),
        ("1e400", "float", PLAIN),  # overflows to infinity
        (float("nan"), "float", PLAIN),
        ("١٢", "float", PLAIN),  # Arabic-Indic digits: float() would read 12
        ("1.234,5", "float", COMMA),
        ("9.997", "float", COMMA),
        ("maybe", "bool", PLAIN),
        ("yesterday", "time", PLAIN),
    ],
)
def test_hostile_cells_are_refused(cell: object, kind: str, mapping: Mapping) -> None:
    with pytest.raises(ValueError):
        convert(cell, kind, mapping)


def test_every_problem_of_a_row_is_reported_at_once() -> None:
    mapping = load_mapping(MAPPING)
    cells = {"Part": "P-100", "Lot": "", "Inspected at": "soon", "Station": "", "Lot size": "1000",
             "Sample": "50", "Result": "OK", "Flash": "1", "Porosity": "0", "Burr": "zero",
             **{f"Bore {i}": "" for i in range(1, 6)}, "Torque 1": "5.0", "Torque 2": "",
             "Torque 3": ""}  # fmt: skip
    with pytest.raises(RowError) as refused:
        draft_of(Row(9, cells), mapping)
    lines = [p.line(9) for p in refused.value.problems]
    assert lines == [
        "row 9: record.lotId (column \"Lot\"): empty cell; expected text, got ''",
        'row 9: record.eventTime (column "Inspected at"): not a date-time; '
        "expected an ISO 8601 date-time or Unix seconds, got 'soon'",
        'row 9: payload.defectList[2].count (column "Burr"): not a whole number; '
        "expected a whole number, got 'zero'",
        'row 9: payload.sensorReport[0].values (column "Bore 1, Bore 2, Bore 3, Bore 4, Bore 5"): '
        "every column is empty",
    ]


def test_a_delivery_export_maps_and_derives_its_event_time(tmp_path: Path) -> None:
    path = tmp_path / "delivery.toml"
    path.write_text(
        """
kind = "delivery"
[record]
subject = "SUP-01"
partNumber = { column = "Part" }
lotId = { column = "Lot" }
quantity = { column = "Qty", type = "int" }
defects = 0
[payload]
purchaseOrder = { column = "PO" }
promisedTime = { column = "Promised", type = "time" }
deliveredTime = { column = "Delivered", type = "time" }
"""
    )
    now = int(time.time())
    when = datetime.fromtimestamp(now - 7200, UTC).replace(tzinfo=None).isoformat()
    cells = {"Part": "P-100", "Lot": "L-1", "Qty": "400", "PO": "PO-77",
             "Promised": str(now - 9000), "Delivered": when}  # fmt: skip
    draft = draft_of(Row(2, cells), load_mapping(path))
    assert draft["eventTime"] == now - 7200 == draft["payload"]["deliveredTime"]
    signed = sign_draft(Signer.generate(), DOMAIN, {**draft, "nonce": 1})
    assert signed.record.quantity == 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "bribe"', "unknown kind 'bribe'"),
        ('kind = "inspection"\nsignature = "0x00"', "unknown keys ['signature']"),
        ('kind = "inspection"\n[record]\nnonce = 7', "[record]: unknown fields ['nonce']"),
        ('kind = "inspection"\n[record]\nlotId = { column = "L", type = "date" }', "type 'date'"),
        ('kind = "inspection"\ntimezone = "Europe/Berlin"', "timezone is"),
        ("kind = ", "not valid TOML"),
        ("", "no record kind"),
    ],
)
def test_a_bad_mapping_stops_everything(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MappingError) as refused:
        load_mapping(path)
    assert message in str(refused.value)


def test_nonce_and_salt_follow_the_content_the_signer_and_the_ledger() -> None:
    alice, bob = Signer.generate(), Signer.generate()
    record = {"subject": "S", "partNumber": "P", "lotId": "L", "eventTime": 1}
    mapping = Mapping(RecordKind.INSPECTION, record, {"sampleSize": 5, "defectList": []})
    draft = draft_of(Row(2, {}), mapping)
    key = row_key(DOMAIN, alice.address, draft)
    other = Domain(chainId=1, verifyingContract=DOMAIN.verifyingContract)
    assert row_key(other, alice.address, draft) != key
    assert row_key(DOMAIN, bob.address, draft) != key
    assert 0 <= nonce_of(key) < 2**63
    # The salt is deterministic for its signer and unguessable without the private key.
    assert salt_of(alice, key) == salt_of(alice, key) != salt_of(bob, key)
    assert alice.private_key.hex() not in salt_of(alice, key)
