"""EPCIS 2.0 interop (issue 19 item 3): the standard's examples import into records, every
record kind exports to a schema-valid event, export -> import loses nothing, and the documents
a hostile or careless partner sends are refused with errors that say where and why."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from client.drafts import sign_draft
from ledger.errors import LedgerError
from ledger.keys import Signer
from ledger.records import RecordKind, SignedRecord, validated_payload
from simulator.population import SIM_DOMAIN
from tests.traceability.epcis_helpers import (
    COMPANIES,
    EXAMPLES,
    ORG,
    assembly_example,
    example,
    recent,
    shipping_example,
    sign_kind,
    transformation_example,
)
from traceability.epcis import (
    Companies,
    EpcisError,
    export_document,
    import_document,
    lot_uri,
    parse_epc,
    schema_errors,
)
from traceability.epcis.mapping import LOC_BASE, id_uri, uri_id

TABLE = Companies.model_validate(COMPANIES)
STRUCT = ("subject", "kind", "partNumber", "lotId", "eventTime", "quantity", "defects")


def _sign(draft: dict[str, Any], signer: Signer, nonce: int) -> SignedRecord:
    return sign_draft(signer, SIM_DOMAIN, {**draft, "nonce": nonce})


def _drafts(doc: dict[str, Any], org: str = ORG) -> list[dict[str, Any]]:
    items = import_document(doc, org=org, companies=TABLE)
    errors = [(i.index, i.error) for i in items if i.error]
    assert not errors, errors
    return [i.draft for i in items if i.draft is not None]


def _error(doc: dict[str, Any], org: str = ORG) -> str:
    items = import_document(doc, org=org, companies=TABLE)
    assert items[0].error is not None, items[0].draft
    return items[0].error


def test_the_standards_examples_validate_against_the_vendored_schema() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.jsonld"))
    assert len(names) == 5
    for name in names:
        assert schema_errors(example(name)) == [], name


@pytest.mark.parametrize("kind", list(RecordKind))
def test_every_record_kind_exports_to_a_schema_valid_event_and_back(kind: RecordKind) -> None:
    signer = Signer.generate()
    signed = sign_kind(kind, signer, SIM_DOMAIN)
    doc = export_document([signed])
    assert schema_errors(doc) == []
    event = doc["epcisBody"]["eventList"][0]
    want_type = {"aggregation": "AggregationEvent", "transformation": "TransformationEvent"}
    assert event["type"] == want_type.get(kind.value, "ObjectEvent")
    assert event["qledger:record"]["signer"] == signer.address
    assert event["eventID"].endswith(event["qledger:record"]["structHash"])
    # The event alone gives back the record: the signed struct's fields and the payload's
    # meaning (defaults applied; children in EPCIS's order, instance-level ones first).
    [draft] = _drafts(doc)
    rec = signed.record.model_dump(mode="json")
    assert {k: draft[k] for k in STRUCT} == {k: rec[k] for k in STRUCT}
    want = validated_payload(kind, signed.payload)
    got = validated_payload(kind, draft["payload"])
    for side in ("childEPCs", "inputs", "outputs"):
        if side in want:
            key = lambda r: (r["maker"], r["partNumber"], r["lotId"])  # noqa: E731
            want[side], got[side] = sorted(want[side], key=key), sorted(got[side], key=key)
    assert got == want
    # And the event's record is one intake takes: it signs.
    _sign(draft, signer, 2)


@pytest.mark.parametrize("build", [assembly_example, transformation_example, shipping_example])
def test_standard_examples_round_trip_import_records_export_import(build: Any) -> None:
    """import -> signed records -> export (schema-valid) -> import: identical records but for
    what each signature makes fresh (nonce, salt, signedAt, signature)."""
    signer = Signer.generate()
    first = [_sign(d, signer, n) for n, d in enumerate(_drafts(build()), 1)]
    doc = export_document(first)
    assert schema_errors(doc) == []
    again = [_sign(d, signer, n) for n, d in enumerate(_drafts(doc), 100)]
    fresh = {"nonce", "salt", "signedAt"}
    for a, b in zip(first, again, strict=True):
        assert a.payload == b.payload
        ra, rb = a.record.model_dump(), b.record.model_dump()
        assert {k: v for k, v in ra.items() if k not in fresh} == {
            k: v for k, v in rb.items() if k not in fresh
        }


def test_foreign_identifiers_become_lots_with_makers_digital_links_and_bpns() -> None:
    [draft] = _drafts(transformation_example())
    payload = draft["payload"]
    by_lot = {r["lotId"]: r for r in payload["inputs"] + payload["outputs"]}
    # urn:epc:id:sgtin:4000001.065432.99886655: GTIN 04000001654321 (check digit 1)
    assert by_lot["99886655"] | {} == {
        "maker": "SUP-02",
        "partNumber": "04000001654321",
        "lotId": "99886655",
        "uom": "EA",
        "digitalLink": "https://id.gs1.org/01/04000001654321/21/99886655",
    }
    # A Digital Link lot class of company 0614141 (its BPN from the table), 30 units.
    assert by_lot["987"]["maker"] == "SUP-03"
    assert by_lot["987"]["bpn"] == "BPNL000000000003"
    assert by_lot["987"]["quantity"] == 30
    # An lgtin class in kilograms.
    assert (by_lot["4444"]["quantity"], by_lot["4444"]["uom"]) == (10, "KGM")
    assert {o["maker"] for o in payload["outputs"]} == {ORG}
    assert (draft["subject"], draft["partNumber"], draft["lotId"]) == (ORG, "04012345778892", "25")


def test_lot_uri_and_gs1_forms_parse_back() -> None:
    uri = lot_uri("SUP:1", "P/100", "L#1")
    assert uri == "https://qledger.example/parts/SUP%3A1/P%2F100/lot/L%231"
    node = parse_epc(uri)
    assert (node.maker, node.part_number, node.lot_id) == ("SUP:1", "P/100", "L#1")
    # An id that is a URI stays itself; one that is not (two '#') is encoded, and reads back.
    for value, uri in [
        ("urn:epc:id:sgln:0614141.07346.1234", "urn:epc:id:sgln:0614141.07346.1234"),
        ("a:b#c#d", "https://qledger.example/epcis/location/a%3Ab%23c%23d"),
        ("plant-1/line#3", "https://qledger.example/epcis/location/plant-1%2Fline%233"),
    ]:
        assert id_uri(LOC_BASE, value) == uri
        assert uri_id(LOC_BASE, uri, "readPoint") == value
    sgtin = parse_epc("urn:epc:id:sgtin:0614141.107346.2017")
    assert sgtin.gtin == "10614141073464"  # GS1's worked example of this SGTIN
    assert sgtin.digital_link == "https://id.gs1.org/01/10614141073464/21/2017"


# -- what the standard's examples must NOT import as -----------------------------------------


def test_observed_aggregation_is_not_an_assembly() -> None:
    error = _error(recent(example("Example_9.6.3-AggregationEvent.jsonld")))
    assert "action ADD" in error and "OBSERVE" in error


def test_identifier_patterns_and_gtin_only_classes_name_no_lot() -> None:
    error = _error(recent(example("Example_9.6.4-TransformationEvent.jsonld")))
    assert "urn:epc:idpat:sgtin:4012345.066666.*" in error
    doc = recent(example("Example_9.6.4-TransformationEventWithDigitalLink.jsonld"))
    assert "https://id.gs1.org/01/04012345666663" in _error(doc)


def test_object_events_say_what_the_record_kind_misses() -> None:
    items = import_document(
        recent(example("Example_9.6.1-ObjectEvent.jsonld")), org=ORG, companies=TABLE
    )
    assert "exactly one EPC" in (items[0].error or "")
    # The receipt maps to a goods receipt, which needs the OEM's promised date.
    assert items[1].error == "promisedTime: Field required"
    # Without the company table, nobody is known to have made the received lot.
    items = import_document(recent(example("Example_9.6.1-ObjectEvent.jsonld")), org="OEM-1")
    assert "no maker known for 'urn:epc:id:sgtin:0614141.107346.2018'" in (items[1].error or "")
    doc = shipping_example()
    del doc["epcisBody"]["eventList"][0]["qledger:promisedTime"]
    assert _error(doc) == "promisedTime: Field required"


# -- hostile documents -----------------------------------------------------------------------


def _refused(doc: Any) -> EpcisError:
    with pytest.raises(EpcisError) as caught:
        import_document(doc, org=ORG, companies=TABLE)
    return caught.value


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([1, 2], "not an EPCIS document"),
        ("EPCISDocument", "not an EPCIS document"),
        (example("Example_9.6.3-AggregationEvent.jsonld")["epcisBody"]["eventList"][0], "not an"),
        ({"type": "EPCISQueryDocument", "schemaVersion": "2.0"}, "not an EPCIS document"),
    ],
)
def test_what_is_not_a_document_is_refused(doc: Any, why: str) -> None:
    assert why in str(_refused(doc))


def test_a_document_of_another_epcis_version_is_refused() -> None:
    doc = assembly_example() | {"schemaVersion": "1.2"}
    assert "only EPCIS 2.0" in str(_refused(doc))


def test_ten_thousand_events_are_refused_before_any_is_read() -> None:
    doc = assembly_example()
    event = doc["epcisBody"]["eventList"][0]
    event["childEPCs"][0] = "not a uri"  # would fail the schema, were the schema run
    doc["epcisBody"]["eventList"] = [event] * 10_000
    error = _refused(doc)
    # Refused by its count alone: no schema error, so no event was validated.
    assert "1..1000" in str(error) and "10000" in str(error)
    assert error.errors == []


@pytest.mark.parametrize("etype", ["TransactionEvent", "AssociationEvent", "urn:x:MyEvent", None])
def test_a_foreign_event_type_is_refused_by_name(etype: str | None) -> None:
    doc = assembly_example()
    doc["epcisBody"]["eventList"][0]["type"] = etype
    error = _refused(doc)
    assert error.errors == [("/epcisBody/eventList/0/type", f"{etype!r} is not imported")]


@pytest.mark.parametrize("bad", ["not a uri", "ab cd:x", "", 42])
def test_a_child_epc_that_is_not_a_uri_fails_the_schema_with_its_pointer(bad: Any) -> None:
    doc = assembly_example()
    doc["epcisBody"]["eventList"][0]["childEPCs"][1] = bad
    error = _refused(doc)
    assert error.errors and error.errors[0][0] == "/epcisBody/eventList/0/childEPCs/1"
    assert "EPCIS 2.0 JSON schema" in str(error)


def test_schema_errors_point_into_the_document() -> None:
    doc = assembly_example()
    event = doc["epcisBody"]["eventList"][0]
    event["eventTime"] = "yesterday"
    del event["eventTimeZoneOffset"]
    pointers = {p for p, _ in _refused(doc).errors}
    assert "/epcisBody/eventList/0/eventTime" in pointers


def test_an_output_the_signer_did_not_make_is_refused() -> None:
    # Company 4000001 is SUP-02's: an SUP-01 import cannot claim its lot as its own output.
    doc = transformation_example()
    event = doc["epcisBody"]["eventList"][0]
    event["outputEPCList"] = ["urn:epc:id:sgtin:4000001.065432.1"] + event["outputEPCList"]
    assert "not the signer's own product" in _error(doc)
    # Nor by naming another maker in the extension for an output further down the list.
    doc = transformation_example()
    event = doc["epcisBody"]["eventList"][0]
    out = event["outputEPCList"][2]
    event["qledger:lots"] = {out: {"maker": "SUP-02", "partNumber": "X", "lotId": "Y"}}
    signer = Signer.generate()
    [draft] = _drafts(doc)  # maps; the record itself is what the ledger refuses to sign
    with pytest.raises(LedgerError, match="every output of a transformation is made by"):
        _sign(draft, signer, 1)
    # Nor as a qledger lot URI naming another maker as the parent of an assembly.
    doc = assembly_example()
    doc["epcisBody"]["eventList"][0]["parentID"] = lot_uri("SUP-02", "ECU", "1")
    assert "not the signer's own product" in _error(doc)


def test_an_extension_cannot_override_a_standard_field() -> None:
    doc = shipping_example()
    doc["epcisBody"]["eventList"][0]["qledger:disposition"] = "conformant"
    assert "repeats a field EPCIS already carries" in _error(doc)


def test_an_extension_cannot_add_fields_the_payload_does_not_have() -> None:
    doc = shipping_example()
    doc["epcisBody"]["eventList"][0]["qledger:creditScore"] = 100
    assert _error(doc).startswith("creditScore: Extra inputs are not permitted")


def test_fractional_quantities_and_wrong_check_digits_are_refused() -> None:
    doc = copy.deepcopy(transformation_example())
    doc["epcisBody"]["eventList"][0]["inputQuantityList"][0]["quantity"] = 10.5
    assert "whole count" in _error(doc)
    doc = assembly_example()
    doc["epcisBody"]["eventList"][0]["childEPCs"][0] = "https://id.gs1.org/01/70614141123452/21/1"
    assert "check digit" in _error(doc)


def test_a_supplier_cannot_import_evidence_about_another_suppliers_lot() -> None:
    doc = shipping_example()
    doc["epcisBody"]["eventList"][0]["epcList"] = ["urn:epc:id:sgtin:4000001.065432.7"]
    error = _error(doc)
    assert "signer's own lot" in error and "SUP-02" in error


def test_mangled_documents_get_an_answer_never_a_crash() -> None:
    """A careless or hostile repository's output, mangled at random (seeded): the import either
    refuses the document or gives every event a draft or a one-line error."""
    rng = random.Random(19)
    values: list[Any] = [None, -1, 2**40, 1.5, "x", "", [], {}, [1], {"a": 1}, True, "urn:x:y"]
    signer = Signer.generate()
    bases = [
        assembly_example(),
        transformation_example(),
        shipping_example(),
        export_document([sign_kind(k, signer, SIM_DOMAIN) for k in RecordKind]),
    ]

    def mangle(node: Any, depth: int = 0) -> None:
        if isinstance(node, dict | list) and node:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = rng.choice(keys)
            if depth > 3 or rng.random() < 0.5:
                node[key] = rng.choice(values)
            else:
                mangle(node[key], depth + 1)

    outcomes = {"refused": 0, "events": 0}
    for _ in range(120):
        doc = copy.deepcopy(rng.choice(bases))
        event = rng.choice(doc["epcisBody"]["eventList"])
        for _ in range(rng.randint(1, 3)):
            mangle(event)
        try:
            items = import_document(doc, org=ORG, companies=TABLE)
        except EpcisError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        for item in items:
            assert (item.draft is None) != (item.error is None)
            assert item.error is None or "\n" not in item.error
        outcomes["events"] += 1
    assert outcomes["refused"] > 15 and outcomes["events"] > 15, outcomes


def test_a_second_schema_implementation_agrees() -> None:
    """The exports and the refusals are not an artefact of one validator: jsonschema-rs (a Rust
    implementation, there through schemathesis) with formats on gives the same verdicts."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    from traceability.epcis.schema import SCHEMA_FILE

    vendored = Path(__file__).parents[2] / "traceability" / "epcis" / "schema" / SCHEMA_FILE
    schema = json.loads(vendored.read_text())
    other = jsonschema_rs.Draft7Validator(schema, validate_formats=True)
    signer = Signer.generate()
    exported = export_document([sign_kind(k, signer, SIM_DOMAIN) for k in RecordKind])
    good = [exported, assembly_example(), transformation_example(), shipping_example()]
    assert all(other.is_valid(d) for d in good)
    bad = assembly_example()
    bad["epcisBody"]["eventList"][0]["childEPCs"][0] = "not a uri"
    assert not other.is_valid(bad) and schema_errors(bad)
