"""OEM-side evidence kinds: part specifications and goods receipts, and the eventTime bound."""

from __future__ import annotations

import pytest

from ledger.errors import InvalidRecord, KindNotAllowed
from ledger.keys import Signer
from ledger.records import (
    KIND_SIGNER_ROLES,
    EventTimeOutOfBounds,
    RecordKind,
    Role,
    check_event_time,
    parse_payload,
)
from ledger.signing import check_kind_allowed, sign_record
from simulator.population import SIM_DOMAIN

T = 1_750_000_000
SPEC = {
    "revision": "rev-B",
    "effectiveTime": T,
    "characteristics": [
        {
            "type": "bore_diameter",
            "uom": "MMT",
            "lsl": 24.95,
            "usl": 25.05,
            "specialCharacteristic": "CC",
        },
        {"type": "flatness", "uom": "MMT", "usl": 0.05},
    ],
}
RECEIPT = {
    "purchaseOrder": "PO-1",
    "promisedTime": T - 3600,
    "receivedTime": T,
    "quantity": 800,
    "incomingInspection": {
        "sampleSize": 50,
        "defectList": [{"code": "DIM-bore", "count": 2, "severity": "major"}],
        "sensorReport": [{"type": "bore_diameter", "uom": "MMT", "values": [25.0, 25.01]}],
    },
}


def _sign(kind: str, payload: dict, **kw: object):
    fields = {
        "subject": "SUP-00001",
        "kind": kind,
        "part_number": "P-1",
        "lot_id": "rev-B" if kind == "part_spec" else "L-1",
        "event_time": T,
        "signed_at": T + 60,
        "quantity": 2 if kind == "part_spec" else 800,
        "defects": 0 if kind == "part_spec" else 2,
        "nonce": 1,
        "payload": payload,
    }
    fields.update(kw)
    return sign_record(Signer.generate(), SIM_DOMAIN, **fields)


def test_only_an_oem_signs_specs_and_receipts() -> None:
    assert KIND_SIGNER_ROLES[RecordKind.PART_SPEC] == {Role.OEM}
    assert KIND_SIGNER_ROLES[RecordKind.GOODS_RECEIPT] == {Role.OEM}
    for kind in (RecordKind.PART_SPEC, RecordKind.GOODS_RECEIPT):
        check_kind_allowed(kind, Role.OEM)
        with pytest.raises(KindNotAllowed):
            check_kind_allowed(kind, Role.SUPPLIER)


def test_signed_oem_records_validate_and_their_counts_must_agree() -> None:
    assert _sign("part_spec", SPEC).record.kind is RecordKind.PART_SPEC
    receipt = _sign("goods_receipt", RECEIPT)
    assert receipt.record.quantity == 800 and receipt.record.defects == 2
    assert parse_payload(RecordKind.GOODS_RECEIPT, RECEIPT).bizStep == "receiving"
    with pytest.raises(InvalidRecord, match="incoming-inspection defects"):
        _sign("goods_receipt", RECEIPT, defects=0)
    with pytest.raises(InvalidRecord, match="receivedTime"):
        _sign("goods_receipt", RECEIPT, event_time=T - 5)
    with pytest.raises(InvalidRecord, match="revision"):
        _sign("part_spec", SPEC, lot_id="rev-A")


@pytest.mark.parametrize(
    "bad",
    [
        {**SPEC, "characteristics": [{"type": "x", "uom": "MMT", "lsl": 2.0, "usl": 1.0}]},
        {**SPEC, "characteristics": [{"type": "x", "uom": "MMT"}]},
        {**SPEC, "characteristics": [SPEC["characteristics"][0]] * 2},
        {
            **SPEC,
            "characteristics": [{**SPEC["characteristics"][0], "specialCharacteristic": "KEY"}],
        },
        {**RECEIPT, "incomingInspection": {**RECEIPT["incomingInspection"], "sampleSize": 900}},
        {**RECEIPT, "bizStep": "shipping"},
    ],
)
def test_malformed_oem_payloads_are_refused(bad: dict) -> None:
    kind = RecordKind.PART_SPEC if "revision" in bad else RecordKind.GOODS_RECEIPT
    with pytest.raises(InvalidRecord):
        parse_payload(kind, bad)


def test_event_time_bound() -> None:
    rec = _sign("goods_receipt", RECEIPT).record
    check_event_time(rec)
    old = rec.model_copy(update={"eventTime": rec.signedAt - 30 * 86_400 - 1})
    with pytest.raises(EventTimeOutOfBounds) as err:
        check_event_time(old)
    assert err.value.code == "event_time_out_of_bounds"
    check_event_time(old, max_age_seconds=31 * 86_400)  # the bound is configurable
    with pytest.raises(EventTimeOutOfBounds):
        check_event_time(rec.model_copy(update={"eventTime": rec.signedAt + 301}), skew_seconds=300)
