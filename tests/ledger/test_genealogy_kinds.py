"""Genealogy evidence kinds (aggregation, transformation): who may sign, and the shape rules a
forger or a careless integrator would break (self-loops, duplicate links, foreign outputs)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.errors import InvalidRecord
from ledger.keys import Signer
from ledger.records import (
    KIND_SIGNER_ROLES,
    SELF_SUBJECT_KINDS,
    RecordKind,
    Role,
    load_signed_record,
    parse_payload,
)
from ledger.signing import sign_record
from simulator.population import SIM_DOMAIN

T = 1_750_000_000
CHILD = {"maker": "SUP-00002", "partNumber": "PCB-7", "lotId": "L-77", "quantity": 1}
LINK = "https://id.gs1.org/01/09506000134352/10/L-77"


def _sign(kind: str, payload: dict[str, Any], **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "subject": "SUP-00001",
        "kind": kind,
        "part_number": "ECU-1",
        "lot_id": "SN-0001",
        "event_time": T,
        "signed_at": T + 60,
        "quantity": 1,
        "defects": 0,
        "nonce": 1,
        "payload": payload,
    }
    fields.update(kw)
    return sign_record(Signer.generate(), SIM_DOMAIN, **fields)


def test_both_assembling_roles_sign_genealogy_about_themselves() -> None:
    for kind in (RecordKind.AGGREGATION, RecordKind.TRANSFORMATION):
        assert KIND_SIGNER_ROLES[kind] == {Role.SUPPLIER, Role.OEM}
        assert kind in SELF_SUBJECT_KINDS


def test_aggregation_round_trips_with_gs1_and_catena_x_names() -> None:
    child = {**CHILD, "bpn": "BPNL00000003AYRE", "digitalLink": LINK}
    signed = _sign("aggregation", {"childEPCs": [child], "bizLocation": "plant-1"})
    again = load_signed_record(signed.model_dump(mode="json"))
    payload = parse_payload(again.record.kind, again.payload)
    assert payload.model_dump()["eventType"] == "AggregationEvent"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"childEPCs": []}, "at least 1"),
        ({"childEPCs": [CHILD, CHILD]}, "twice"),
        ({"childEPCs": [{**CHILD, "bpn": "BPNX00000003AYRE"}]}, "pattern"),
        ({"childEPCs": [{**CHILD, "digitalLink": "http://id.gs1.org/01/1/10/x"}]}, "pattern"),
        ({"childEPCs": [{**CHILD, "quantity": "1"}]}, "integer"),
        ({"childEPCs": [{**CHILD, "lotId": "../etc"}]}, "pattern"),
        ({"childEPCs": [CHILD] * 1001}, "at most 1000"),
        ({"childEPCs": [CHILD], "eventType": "ObjectEvent"}, "AggregationEvent"),
        ({"childEPCs": [CHILD], "action": "DELETE"}, "ADD"),
    ],
)
def test_aggregation_refuses_malformed_links(payload: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidRecord, match=why):
        parse_payload(RecordKind.AGGREGATION, payload)


def test_aggregation_cannot_contain_its_own_parent() -> None:
    own = {"maker": "SUP-00001", "partNumber": "ECU-1", "lotId": "SN-0001"}
    with pytest.raises(InvalidRecord, match="own parent"):
        _sign("aggregation", {"childEPCs": [CHILD, own]})


def test_genealogy_carries_no_defects() -> None:
    with pytest.raises(InvalidRecord, match="no defects"):
        _sign("aggregation", {"childEPCs": [CHILD]}, quantity=5, defects=1)


def test_transformation_outputs_are_the_signers_own() -> None:
    resin = {"maker": "SUP-00009", "partNumber": "PA66", "lotId": "R-1", "quantity": 500}
    out = {"maker": "SUP-00001", "partNumber": "ECU-1", "lotId": "SN-0001", "quantity": 40}
    signed = _sign("transformation", {"inputs": [resin], "outputs": [out]}, quantity=40)
    assert load_signed_record(signed.model_dump(mode="json")) == signed
    # Claiming another maker's output lot would graft foreign parts into the signer's tree.
    foreign = {**out, "lotId": "SN-0002", "maker": "SUP-00003"}
    with pytest.raises(InvalidRecord, match="made by the signer"):
        _sign("transformation", {"inputs": [resin], "outputs": [out, foreign]})
    with pytest.raises(InvalidRecord, match="names one of its outputs"):
        _sign("transformation", {"inputs": [resin], "outputs": [out]}, lot_id="SN-9")
    with pytest.raises(InvalidRecord, match="both input and output"):
        parse_payload(RecordKind.TRANSFORMATION, {"inputs": [out], "outputs": [out]})


def test_transformation_links_are_bounded_by_inputs_times_outputs() -> None:
    """Every input links to every output: 40 inputs x 30 outputs would be 1,200 link rows from
    one record, past MAX_GENEALOGY_LINKS, though each list alone is within it."""

    def lot(maker: str, i: int) -> dict[str, Any]:
        return {"maker": maker, "partNumber": "P", "lotId": f"L-{i}"}

    outputs = [lot("SUP-00001", i) for i in range(30)]
    outputs[0] = {"maker": "SUP-00001", "partNumber": "ECU-1", "lotId": "SN-0001"}
    payload = {"inputs": [lot("SUP-00009", i) for i in range(40)], "outputs": outputs}
    with pytest.raises(InvalidRecord, match="links"):
        parse_payload(RecordKind.TRANSFORMATION, payload)
    payload["inputs"] = payload["inputs"][:33]  # 33 x 30 = 990
    parse_payload(RecordKind.TRANSFORMATION, payload)
