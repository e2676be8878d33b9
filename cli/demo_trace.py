"""The demo's quality data chain (issue 19): a vehicle fails in the field; its as-built tree
names the supplier lots in it; the recall scope of the suspect lot counts the vehicles to
contain; an investigation goes to the tier-1 module maker, who forwards it to the tier-2
supplier of the suspect lot; that supplier files an 8D and accepts; each sender closes; and the
responsibility matrix is computed over exactly the supplier lots of the failed vehicle.

Every step is a record signed by the party whose turn it is, submitted through the HTTP API
like all evidence (``cli/demo.py`` runs it as step 6).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from client.service import QledgerClient
from credit.responsibility import Incident, IncidentLot
from ledger.keys import Signer
from ledger.records import Domain, NotificationPayload, RecordKind, SignedRecord
from ledger.signing import sign_record
from simulator.genealogy import MODULE_PART, RAW_MAKERS, VEHICLE_PART
from simulator.population import Population
from traceability.notifications import draft

Node = tuple[str, str, str]


@dataclass
class Party:
    """One organisation in the conversation: its key, its session and what it submitted."""

    org: str
    signer: Signer
    client: QledgerClient
    submitted: list[str] = field(default_factory=list)

    def sign_and_submit(self, domain: Domain, **fields: Any) -> str:
        signed = sign_record(self.signer, domain, subject=self.org, **fields)
        answer = self.client.submit(signed.model_dump(mode="json"))
        self.submitted.append(answer["structHash"])
        return answer["structHash"]

    def step(self, domain: Domain, payload: NotificationPayload) -> str:
        """Sign one transition of a notification as this party and submit it."""
        d = draft(payload, int(time.time()), self.org)
        return self.sign_and_submit(
            domain,
            kind=d["kind"],
            part_number=d["partNumber"],
            lot_id=d["lotId"],
            event_time=d["eventTime"],
            quantity=d["quantity"],
            defects=d["defects"],
            nonce=time.time_ns() // 1000,
            payload=d["payload"],
        )


def _node(n: dict[str, Any]) -> Node:
    return (n["maker"], n["partNumber"], n["lotId"])


def _ref(node: Node) -> dict[str, str]:
    return {"maker": node[0], "partNumber": node[1], "lotId": node[2]}


def _payload(terms: dict[str, Any], transition: str, **extra: Any) -> NotificationPayload:
    names = {k: terms[k] for k in ("notificationId", "type", "sender", "recipient")}
    if transition == "created":
        names = terms
    return NotificationPayload.model_validate({**names, "transition": transition, **extra})


def field_failure(
    pop: Population,
    domain: Domain,
    url: str,
    oem: QledgerClient,
    genealogy: Sequence[SignedRecord],
    culprit_hint: str,
    lot_readings: Callable[[str], list[dict[str, float | str]]],
    console: Console,
) -> dict[str, Any]:
    """Run the story; answers what the demo result and the report keep (see module doc)."""
    suppliers = [t.supplier_id for t in pop.suppliers]
    module_maker = suppliers[0]  # simulator.genealogy: the first supplier assembles modules

    def party(org: str) -> Party:
        client = QledgerClient(url)
        client.login(pop.signers[org])
        return Party(org, pop.signers[org], client)

    def get(path: str, **params: Any) -> Any:
        return oem.get(path, **params)

    # 1. Which supplier lot is suspect: the culprit's component lot that went into a vehicle
    # (the component lots are the outputs of the suppliers' signed transformations).
    components: dict[str, list[Node]] = {}
    for rec in genealogy:
        if rec.record.kind is RecordKind.TRANSFORMATION:
            r = rec.record
            components.setdefault(r.subject, []).append((r.subject, r.partNumber, r.lotId))
    vehicles: list[Node] = []
    suspect: Node | None = None
    for sid in [culprit_hint, *suppliers[1:]]:
        for lot in components.get(sid, []) if sid != module_maker else []:
            used = get("/v1/trace/where-used", maker=lot[0], partNumber=lot[1], lotId=lot[2])
            vehicles = sorted(_node(n) for n in used["nodes"] if n["partNumber"] == VEHICLE_PART)
            if vehicles:
                suspect = lot
                break
        if suspect is not None:
            break
    if suspect is None:
        raise RuntimeError("no supplier lot of the genealogy went into a vehicle")
    failed = vehicles[0]

    # 2. The failed vehicle's as-built tree: the supplier lots in it.
    tree = get("/v1/trace/where-from", maker=failed[0], partNumber=failed[1], lotId=failed[2])
    in_vehicle = [_node(n) for n in tree["nodes"]]
    supplier_lots = sorted(
        n
        for n in in_vehicle
        if n[0] in suppliers and n[1] != MODULE_PART and n[0] not in RAW_MAKERS
    )
    modules = sorted(n for n in in_vehicle if n[1] == MODULE_PART)
    console.print(
        f"{failed[2]} failed in the field; its as-built tree: {len(modules)} modules, "
        f"{len(supplier_lots)} supplier lots ({tree['recordCount']} signed records)"
    )

    # 3. Recall scope of the suspect lot: every product downstream of it.
    scope = oem.post("/v1/trace/scope", {"lots": [_ref(suspect)]}, ok=(200,))
    in_scope_vehicles = sorted(_node(n) for n in scope["nodes"] if n["partNumber"] == VEHICLE_PART)
    in_scope_modules = sorted(_node(n) for n in scope["nodes"] if n["partNumber"] == MODULE_PART)
    levels = ", ".join(
        f"depth {lv['depth']}: {lv['count']} ({', '.join(sorted(lv['parts']))})"
        for lv in scope["levels"]
    )
    console.print(
        f"recall scope of {'/'.join(suspect)}: {len(in_scope_vehicles)} vehicles, "
        f"{len(in_scope_modules)} modules ({levels})"
    )

    # 4. The OEM opens the incident on the failed vehicle, over exactly its supplier lots.
    incident = Incident(
        incident_id=f"INC-{failed[2]}",
        product=f"{VEHICLE_PART} {failed[2]}",
        occurred_at=int(time.time()) - 3600,
        lots=[
            IncidentLot(
                supplier_id=n[0],
                part_number=n[1],
                lot_id=n[2],
                process=lot_readings(n[0]),
            )
            for n in supplier_lots
        ],
        description="field failure; the lots are the failed vehicle's as-built tree",
    )
    matrix = oem.post("/v1/incidents", incident.model_dump(mode="json"))["responsibility"]

    # 5. Investigation OEM -> module maker (tier 1), forwarded to the suspect lot's maker
    # (tier 2); each step signed by the party whose turn it is.
    the_oem, tier1, tier2 = party("OEM-0001"), party(module_maker), party(suspect[0])
    deadline = int(time.time()) + 14 * 86_400
    inv = {
        "notificationId": f"QN-{failed[2]}",
        "type": "investigation",
        "sender": the_oem.org,
        "recipient": tier1.org,
        "affectedParts": [_ref(n) for n in [suspect, *in_scope_modules][:1000]],
        "deadline": deadline,
        "severity": "critical",
        "description": f"field failure of {failed[2]}; recall scope {len(in_scope_vehicles)}",
        "links": {"incidentId": incident.incident_id},
    }
    fwd = {
        **inv,
        "notificationId": f"QN-{failed[2]}-T2",
        "sender": tier1.org,
        "recipient": tier2.org,
        "originId": inv["notificationId"],
        "affectedParts": [_ref(suspect)],
    }
    the_oem.step(domain, _payload(inv, "created"))
    the_oem.step(domain, _payload(inv, "sent"))
    tier1.step(domain, _payload(inv, "received"))
    tier1.step(domain, _payload(inv, "acknowledged"))
    tier1.step(domain, _payload(fwd, "created"))
    tier1.step(domain, _payload(fwd, "sent"))
    tier2.step(domain, _payload(fwd, "received"))
    tier2.step(domain, _payload(fwd, "acknowledged"))
    # The OEM's complaint on the suspect lot, and the tier-2 supplier's 8D answering it.
    complaint_id = f"CMP-{failed[2]}"
    now = int(time.time())
    complaint = sign_record(
        the_oem.signer,
        domain,
        subject=tier2.org,
        kind=RecordKind.COMPLAINT,
        part_number=suspect[1],
        lot_id=suspect[2],
        event_time=now - 600,
        quantity=max(1, len(in_scope_vehicles)),
        defects=1,
        nonce=time.time_ns() // 1000,
        payload={
            "complaintId": complaint_id,
            "severity": "critical",
            "defectCode": "FIELD-FAILURE",
            "customerDisruption": True,
            "description": f"field failure of {failed[2]}",
        },
    )
    complaint_hash = oem.submit(complaint.model_dump(mode="json"))["structHash"]
    eight_d = tier2.sign_and_submit(
        domain,
        kind=RecordKind.CORRECTIVE_ACTION,
        part_number=suspect[1],
        lot_id=suspect[2],
        event_time=now - 60,
        quantity=0,
        defects=0,
        nonce=time.time_ns() // 1000,
        payload={
            "complaintId": complaint_id,
            "status": "open",
            "firstResponseTime": now - 300,
            "eightD": {"D0": now - 300, "D1": now - 240, "D2": now - 180, "D3": now - 120},
            "rootCause": "containment in place; root cause analysis (D4) under way",
        },
    )
    answer = {"links": {"complaints": [complaint_hash], "correctiveActions": [eight_d]}}
    tier2.step(domain, _payload(fwd, "accepted", **answer))
    tier1.step(domain, _payload(fwd, "closed"))
    tier1.step(domain, _payload(inv, "accepted", **answer))
    the_oem.step(domain, _payload(inv, "closed"))
    thread = the_oem.client.get(f"/v1/notifications/{inv['notificationId']}")
    for p in (the_oem, tier1, tier2):
        p.client.close()

    table = Table("notification", "from", "to", "state", "steps", title="investigation")
    for t in [thread, *thread.get("forwards", [])]:
        table.add_row(
            t["notificationId"],
            t["sender"],
            t["recipient"],
            t["state"],
            str(len(t.get("history", []))),
        )
    console.print(table)
    return {
        "failedVehicle": "/".join(failed),
        "suspectLot": "/".join(suspect),
        "asBuiltSupplierLots": ["/".join(n) for n in supplier_lots],
        "scopeVehicles": len(in_scope_vehicles),
        "scopeModules": len(in_scope_modules),
        "scopeLevels": scope["levels"],
        "notification": thread,
        "complaint": complaint_hash,
        "eightD": eight_d,
        "incidentId": incident.incident_id,
        "matrix": matrix,
        "records": [*the_oem.submitted, *tier1.submitted, *tier2.submitted, complaint_hash],
    }
