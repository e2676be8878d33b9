"""Building and signing genealogy records (issue 19): the payloads the CLI, the simulator and
tests sign, in the field names of ``ledger.records`` (EPCIS 2.0 terms)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.keys import Signer
from ledger.records import Domain, RecordKind, SignedRecord
from ledger.signing import sign_record
from simulator.genealogy import aggregation_payload, lot_ref, transformation_payload
from traceability.genealogy import Node

__all__ = [
    "aggregation_payload",
    "lot_ref",
    "sign_aggregation",
    "sign_transformation",
    "transformation_payload",
]


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
