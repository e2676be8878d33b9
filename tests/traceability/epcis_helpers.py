"""Records of every kind, and the GS1 EPCIS 2.0 examples (vendored in epcis_examples/), for the
EPCIS interop tests."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from ledger.keys import Signer
from ledger.records import Domain, RecordKind, SignedRecord
from ledger.signing import sign_record
from tests.helpers import inspection_payload

EXAMPLES = Path(__file__).parent / "epcis_examples"
ORG = "SUP-01"
T = int(time.time()) - 3600  # within the 30-day eventTime bound of intake
LINK = "https://id.gs1.org/01/09506000134352/10/L-77"
BPN = "BPNL00000003AYRE"
# The GS1 company prefixes of the standard's examples, and who they are here.
COMPANIES = {
    "prefixes": {
        "4012345": {"org": ORG, "bpn": "BPNL000000000001"},
        "4000001": {"org": "SUP-02"},
        "0614141": {"org": "SUP-03", "bpn": "BPNL000000000003"},
    }
}


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def recent(doc: dict[str, Any], at: int = T) -> dict[str, Any]:
    """The example with its event times moved to ``at`` (intake refuses 2013 evidence)."""
    doc = copy.deepcopy(doc)
    for event in doc["epcisBody"]["eventList"]:
        event["eventTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.591Z", time.gmtime(at))
    return doc


def assembly_example() -> dict[str, Any]:
    """GS1 example 9.6.3 (Digital Link form), changed only where qledger needs an assembly:
    action ADD and bizStep assembling instead of an OBSERVEd receipt, a recent eventTime, and
    the parent an SGTIN of the importer instead of a pallet SSCC; its GTIN-only class (no lot)
    left out and the 200.5 kg of the lot class made 200 (a LotRef counts whole units)."""
    doc = recent(example("Example_9.6.3-AggregationEventWithDigitalLink.jsonld"))
    event = doc["epcisBody"]["eventList"][0]
    event |= {"action": "ADD", "bizStep": "assembling"}
    event["parentID"] = "urn:epc:id:sgtin:4012345.011122.9000"
    # A class without a lot (a bare GTIN) names no lot; qledger links lots only.
    event["childQuantityList"] = event["childQuantityList"][1:]
    event["childQuantityList"][0]["quantity"] = 200
    return doc


def transformation_example() -> dict[str, Any]:
    """GS1 example 9.6.4 (Digital Link form) with a recent eventTime and its GTIN-only input
    class (no lot) left out."""
    doc = recent(example("Example_9.6.4-TransformationEventWithDigitalLink.jsonld"))
    event = doc["epcisBody"]["eventList"][0]
    event["inputQuantityList"] = event["inputQuantityList"][:2]
    return doc


def shipping_example() -> dict[str, Any]:
    """GS1 example 9.6.1's shipping event, with the promised time a delivery record needs
    (qledger:promisedTime) and one SGTIN of the importer."""
    doc = recent(example("Example_9.6.1-ObjectEvent.jsonld"))
    event = doc["epcisBody"]["eventList"][0]
    event["epcList"] = ["urn:epc:id:sgtin:4012345.011122.2017"]
    event["qledger:promisedTime"] = T - 86_400
    doc["epcisBody"]["eventList"] = [event]
    doc["@context"][1]["qledger"] = "https://qledger.example/epcis/"
    return doc


def payloads() -> dict[RecordKind, tuple[dict[str, Any], dict[str, Any]]]:
    """(record fields, payload) of one record of every kind, each a valid record."""
    child = {"maker": "SUP-02", "partNumber": "PCB-7", "lotId": "L-77", "quantity": 4}
    return {
        RecordKind.INSPECTION: ({"quantity": 50, "defects": 1}, inspection_payload(1)),
        RecordKind.DELIVERY: (
            {"quantity": 800, "defects": 0},
            {"purchaseOrder": "PO-1", "promisedTime": T - 60, "deliveredTime": T, "uom": "EA"},
        ),
        RecordKind.COMPLAINT: (
            {"quantity": 800, "defects": 3},
            {
                "complaintId": "C-1",
                "severity": "major",
                "defectCode": "DIM",
                "readPoint": "plant-1",
            },
        ),
        RecordKind.CORRECTIVE_ACTION: (
            {"quantity": 0, "defects": 0},
            {"complaintId": "C-1", "status": "open", "eightD": {"D0": T - 100, "D1": T}},
        ),
        RecordKind.AUDIT: (
            {"quantity": 3, "defects": 1},
            {
                "standard": "IATF16949",
                "auditType": "process",
                "majorNonconformities": 1,
                "minorNonconformities": 2,
                "findings": [{"id": "F-1", "severity": "major", "clause": "8.5.1"}],
            },
        ),
        RecordKind.IMPROVEMENT: (
            {"quantity": 0, "defects": 0},
            {"remedies": ["0x" + "ab" * 32], "evidenceType": "audit_closure", "verifiedCpk": 1.5},
        ),
        RecordKind.PART_SPEC: (
            {"quantity": 1, "defects": 0, "lot_id": "rev-B"},
            {
                "revision": "rev-B",
                "effectiveTime": T,
                "characteristics": [
                    {
                        "type": "bore",
                        "uom": "MMT",
                        "lsl": 9.9,
                        "usl": 10.1,
                        "specialCharacteristic": "CC",
                    }
                ],
            },
        ),
        RecordKind.GOODS_RECEIPT: (
            {"quantity": 800, "defects": 2},
            {
                "purchaseOrder": "PO-1",
                "promisedTime": T - 60,
                "receivedTime": T,
                "quantity": 800,
                "uom": "KGM",
                "incomingInspection": {
                    "sampleSize": 50,
                    "defectList": [{"code": "DIM", "count": 2, "severity": "major"}],
                },
            },
        ),
        RecordKind.AGGREGATION: (
            {"quantity": 1, "defects": 0},
            {
                "bizLocation": "plant-1/line#3",
                "parentBpn": BPN,
                "childEPCs": [
                    child,
                    {"maker": "SUP-03", "partNumber": "SCREW", "lotId": "S-1", "bpn": BPN},
                    {
                        "maker": "SUP-02",
                        "partNumber": "PCB-8",
                        "lotId": "L-78",
                        "digitalLink": LINK,
                    },
                ],
            },
        ),
        RecordKind.NOTIFICATION: (
            {"quantity": 1, "defects": 0, "part_number": "created", "lot_id": "QN-1"},
            {
                "notificationId": "QN-1",
                "type": "alert",
                "transition": "created",
                "sender": ORG,
                "recipient": "OEM-01",
                "affectedParts": [child],
                "deadline": T + 86_400,
                "severity": "major",
                "description": "bore diameter drift on lot L-77",
            },
        ),
        RecordKind.TRANSFORMATION: (
            {"quantity": 100, "defects": 0},
            {
                "transformationID": "MOULD-7",
                "inputs": [{**child, "uom": "KGM"}],
                "outputs": [
                    {"maker": ORG, "partNumber": "HOUSING", "lotId": "H-0", "quantity": 50},
                    {"maker": ORG, "partNumber": "P-100", "lotId": "L-1", "quantity": 100},
                ],
            },
        ),
    }


def sign_kind(kind: RecordKind, signer: Signer, domain: Domain, nonce: int = 1) -> SignedRecord:
    fields, payload = payloads()[kind]
    lot = fields.get("lot_id", "L-1")
    event_time = T
    if kind is RecordKind.PART_SPEC:
        event_time = payload["effectiveTime"]
    return sign_record(
        signer,
        domain,
        subject=ORG,
        kind=kind,
        part_number=fields.get("part_number", "P-100"),
        lot_id=lot,
        event_time=event_time,
        quantity=fields["quantity"],
        defects=fields["defects"],
        nonce=nonce,
        payload=payload,
    )
