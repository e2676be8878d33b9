"""A simulated as-built genealogy for a population (issue 19), four tiers:

  raw-material lots (external mills, leaves) -> each supplier's component lots (the lots its
  inspections were about; transformation, signed by the supplier) -> module serials (aggregation
  of several suppliers' component lots, signed by the module maker, the population's first
  supplier) -> vehicles (aggregation of modules, signed by the OEM).

Deterministic for a seed; every record is signed by the party that did the assembly or
transformation, about itself, so the service accepts them as they are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ledger.records import RecordKind, SignedRecord
from ledger.signing import sign_record
from simulator.population import DAY, OEM_ID, Population

Node = tuple[str, str, str]  # (maker, partNumber, lotId), as traceability.genealogy names it
RAW_MAKERS = ("RAW-0001", "RAW-0002", "RAW-0003")  # mills outside the ledger: leaves only
MODULE_PART = "ECU-MODULE"
VEHICLE_PART = "VEHICLE"
PLANTS = ("oem-plant-1", "oem-plant-2")


def lot_ref(node: Node) -> dict[str, Any]:
    return {"maker": node[0], "partNumber": node[1], "lotId": node[2]}


def aggregation_payload(children: Sequence[Node], site: str | None = None) -> dict[str, Any]:
    """Children assembled into the record's own lot or serial (AggregationEvent, ADD)."""
    payload: dict[str, Any] = {"childEPCs": [lot_ref(c) for c in children]}
    if site is not None:
        payload["bizLocation"] = site
    return payload


def transformation_payload(
    inputs: Sequence[Node], outputs: Sequence[Node], site: str | None = None
) -> dict[str, Any]:
    """Input lots consumed to make output lots (TransformationEvent)."""
    payload: dict[str, Any] = {
        "inputs": [lot_ref(i) for i in inputs],
        "outputs": [lot_ref(o) for o in outputs],
    }
    if site is not None:
        payload["bizLocation"] = site
    return payload


def simulate_genealogy(
    pop: Population,
    *,
    vehicles: int = 20,
    modules_per_vehicle: int = 2,
    lots_per_supplier: int = 3,
    seed: int = 0,
    start: int | None = None,
) -> list[SignedRecord]:
    """Signed transformation and aggregation records tying ``pop``'s inspected lots into
    ``vehicles`` vehicles, in an order the service accepts (parts before what contains them).

    ``start``: event time of the first record (default: a week before the population's end);
    the rest follow an hour apart, so a scope can be narrowed by window and plant.
    """
    rng = random.Random(seed)
    t = pop.end - 7 * DAY if start is None else start
    suppliers = [s.supplier_id for s in pop.suppliers]
    if len(suppliers) < 2:
        raise ValueError("a genealogy needs at least two suppliers (a module maker and a part)")
    module_maker = suppliers[0]
    records: list[SignedRecord] = []

    def sign(org: str, kind: RecordKind, node: Node, payload: dict[str, Any]) -> None:
        nonlocal t
        t += 3600
        records.append(
            sign_record(
                pop.signers[org],
                pop.domain,
                subject=node[0],
                kind=kind,
                part_number=node[1],
                lot_id=node[2],
                event_time=t,
                signed_at=t + 60,
                quantity=1,
                defects=0,
                nonce=pop.next_nonce(org),
                payload=payload,
            )
        )

    # Tier 3: each part supplier's inspected lots, each made from one raw-material lot.
    inspected: dict[str, list[Node]] = {}
    for signed in pop.records:
        r = signed.record
        if r.kind is RecordKind.INSPECTION and r.subject in suppliers[1:]:
            lots = inspected.setdefault(r.subject, [])
            node = (r.subject, r.partNumber, r.lotId)
            if len(lots) < lots_per_supplier and node not in lots:
                lots.append(node)
    components: list[Node] = []
    for sid in suppliers[1:]:
        for k, node in enumerate(inspected.get(sid, [])):
            raw = (rng.choice(RAW_MAKERS), "RAW", f"{sid}-R{k}")
            sign(sid, RecordKind.TRANSFORMATION, node, transformation_payload([raw], [node], sid))
            components.append(node)
    if not components:
        raise ValueError("the population has no inspected lots to build a genealogy from")
    # Tier 2: module serials, each of up to 3 different suppliers' component lots.
    modules: list[Node] = []
    for m in range(vehicles * modules_per_vehicle):
        node = (module_maker, MODULE_PART, f"SN-{seed}-{m:05d}")
        children = rng.sample(components, min(3, len(components)))
        sign(module_maker, RecordKind.AGGREGATION, node, aggregation_payload(children, "t1-line"))
        modules.append(node)
    # Tier 1: vehicles at two plants.
    for v in range(vehicles):
        node = (OEM_ID, VEHICLE_PART, f"VIN-{seed}-{v:05d}")
        own = modules[v * modules_per_vehicle : (v + 1) * modules_per_vehicle]
        sign(OEM_ID, RecordKind.AGGREGATION, node, aggregation_payload(own, PLANTS[v % 2]))
    return records
