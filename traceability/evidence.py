"""Building and signing genealogy records (issue 19): the payloads the CLI, the simulator and
tests sign, in the field names of ``ledger.records`` (EPCIS 2.0 terms)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.keys import Signer
from ledger.records import Domain, RecordKind, SignedRecord
from ledger.signing import sign_record
from traceability.genealogy import Node


def lot_ref(node: Node, quantity: int | None = None, bpn: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"maker": node[0], "partNumber": node[1], "lotId": node[2]}
    if quantity is not None:
        ref["quantity"] = quantity
    if bpn is not None:
        ref["bpn"] = bpn
    return ref


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


def sign_aggregation(
    signer: Signer,
    domain: Domain,
    *,
    parent: Node,
    children: Sequence[Node],
    event_time: int,
    nonce: int,
    site: str | None = None,
    signed_at: int | None = None,
) -> SignedRecord:
    """The assembler (``parent``'s maker) signs that ``children`` went into ``parent``."""
    return sign_record(
        signer,
        domain,
        subject=parent[0],
        kind=RecordKind.AGGREGATION,
        part_number=parent[1],
        lot_id=parent[2],
        event_time=event_time,
        quantity=1,
        defects=0,
        nonce=nonce,
        payload=aggregation_payload(children, site),
        signed_at=signed_at,
    )


def sign_transformation(
    signer: Signer,
    domain: Domain,
    *,
    inputs: Sequence[Node],
    outputs: Sequence[Node],
    event_time: int,
    nonce: int,
    site: str | None = None,
    signed_at: int | None = None,
) -> SignedRecord:
    """The maker of ``outputs`` signs that ``inputs`` were made into them; the record names
    the first output."""
    first = outputs[0]
    return sign_record(
        signer,
        domain,
        subject=first[0],
        kind=RecordKind.TRANSFORMATION,
        part_number=first[1],
        lot_id=first[2],
        event_time=event_time,
        quantity=len(outputs),
        defects=0,
        nonce=nonce,
        payload=transformation_payload(inputs, outputs, site),
        signed_at=signed_at,
    )
