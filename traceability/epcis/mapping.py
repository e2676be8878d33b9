"""Signed records <-> GS1 EPCIS 2.0 events (JSON / JSON-LD), both ways, as pure data.

Export: any signed record becomes one EPCIS 2.0 event: quality kinds an ObjectEvent, genealogy
kinds an AggregationEvent or TransformationEvent. What EPCIS has a field for goes in that field;
what it has none for travels in the ``qledger:`` extension namespace (a JSON-LD prefix in the
document's ``@context``), so that export -> import loses nothing (docs/epcis.md has the table).

Import: an EPCISDocument from any EPCIS 2.0 repository becomes one record draft per event (the
fields a person would fill in; the caller signs them). A foreign document needs no ``qledger:``
extension for AggregationEvent and TransformationEvent; an ObjectEvent maps by its bizStep and
must carry what the kind's payload requires, else its error says which field is missing. The
whole document is refused if any event cannot be mapped: nothing is half-imported.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger.canonical import canonical_json
from ledger.eip712 import record_struct_hash
from ledger.errors import InvalidRecord, LedgerError
from ledger.records import (
    DIGITAL_LINK_PATTERN,
    GENEALOGY_KINDS,
    KIND_SIGNER_ROLES,
    PAYLOAD_MODELS,
    BusinessPartnerNumber,
    Identifier,
    RecordKind,
    Role,
    SignedRecord,
    is_identifier,
    parse_payload,
)
from traceability.epcis.schema import is_uri, schema_errors

# -- namespaces and identifier forms (docs/epcis.md) -------------------------------------------

# GS1's published JSON-LD context for EPCIS 2.0 (EPCIS 2.0 standard, section 12.1).
GS1_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# qledger's extension namespace: every field EPCIS has no term for is ``qledger:<name>``.
QLEDGER_NS = "https://qledger.example/epcis/"
PREFIX = "qledger:"
SCHEMA_VERSION = "2.0"
# A lot named by qledger's own (maker, partNumber, lotId), each segment percent-encoded.
LOT_BASE = "https://qledger.example/parts/"
# qledger identifiers that are not URIs (a readPoint "plant-1") become URIs under these bases.
LOC_BASE = QLEDGER_NS + "location/"
PO_BASE = QLEDGER_NS + "po/"
TRANSFORMATION_BASE = QLEDGER_NS + "transformation/"
CHARACTERISTIC_BASE = QLEDGER_NS + "characteristic/"
EVENT_ID_PREFIX = "urn:qledger:record:"
# GS1's resolver, for the Digital Link form of an EPC URN (GS1 Digital Link standard 1.2, 4.1).
GS1_RESOLVER = "https://id.gs1.org"
# One import is at most one batch (Settings.max_batch_records' default).
MAX_EVENTS = 1000

# Extension keys about the record rather than its payload.
RECORD_EXT = PREFIX + "record"
LOTS_EXT = PREFIX + "lots"
SIGNATURE_EXT = PREFIX + "signature"
DOMAIN_EXT = PREFIX + "domain"
_RECORD_LEVEL = {RECORD_EXT, LOTS_EXT, SIGNATURE_EXT, DOMAIN_EXT}


def _extension_context() -> dict[str, Any]:
    """The ``qledger`` prefix, and each extension term typed ``@json`` (JSON-LD 1.1, 4.2.2):
    their values are nested JSON whose keys have no IRIs, which JSON-LD expansion would
    otherwise drop (GS1's context defines no @vocab). The value is kept as one JSON literal."""
    names = set(_RECORD_LEVEL) | {PREFIX + k for k in ("lsl", "usl", "key")}
    for model in PAYLOAD_MODELS.values():
        names |= {PREFIX + name for name in model.model_fields}
    return {"qledger": QLEDGER_NS} | {name: {"@type": "@json"} for name in sorted(names)}


CONTEXT: list[Any] = [GS1_CONTEXT, _extension_context()]

# CBV 2.0 vocabulary URIs that mean the bare word after them (EPCIS 2.0 JSON allows both).
_BIZSTEP_PREFIXES = ("https://ref.gs1.org/cbv/BizStep-", "urn:epcglobal:cbv:bizstep:")
_DISP_PREFIXES = ("https://ref.gs1.org/cbv/Disp-", "urn:epcglobal:cbv:disp:")
_PO_TYPES = ("po", "https://ref.gs1.org/cbv/BTT-po", "urn:epcglobal:cbv:btt:po")

# A foreign ObjectEvent's kind, by its bizStep (CBV 2.0 section 7.2): override with kind_map.
DEFAULT_KIND_MAP: dict[str, RecordKind] = {
    "inspecting": RecordKind.INSPECTION,
    "shipping": RecordKind.DELIVERY,
    "receiving": RecordKind.GOODS_RECEIPT,
    "repairing": RecordKind.CORRECTIVE_ACTION,
}
_EVENT_KINDS = {
    "AggregationEvent": RecordKind.AGGREGATION,
    "TransformationEvent": RecordKind.TRANSFORMATION,
}
SUPPORTED_EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransformationEvent")


class EpcisError(LedgerError):
    """An EPCIS document qledger cannot import (not a document, the schema, a bound)."""

    code = "invalid_epcis"
    http_status = 422

    def __init__(
        self, message: str, *, errors: list[tuple[str, str]] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.errors = errors or []


# A GS1 company prefix: 6 to 12 digits (the SGTIN partition table of GS1's EPC Tag Data Standard).
CompanyPrefix = Annotated[str, Field(pattern=r"^[0-9]{6,12}$")]


class Company(BaseModel):
    """Who a GS1 company prefix belongs to: a qledger organisation and its Catena-X BPN."""

    model_config = ConfigDict(extra="forbid", strict=True)

    org: Identifier
    bpn: BusinessPartnerNumber | None = None


class Companies(BaseModel):
    """A GS1 company prefix (6 to 12 digits) -> company table, for foreign identifiers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prefixes: dict[CompanyPrefix, Company] = Field(default_factory=dict, max_length=10_000)


# ---------------------------------------------------------------------------------------------
# identifiers
# ---------------------------------------------------------------------------------------------

_DL = re.compile(r"^https?://[^/?#]+(?:/[^/?#]+)*?/01/([0-9]{14})/(10|21)/([^/?#]+)$")
_SGTIN = re.compile(r"^urn:epc:id:sgtin:([0-9]+)\.([0-9]+)\.(.+)$")
_LGTIN = re.compile(r"^urn:epc:class:lgtin:([0-9]+)\.([0-9]+)\.(.+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def _seg(value: str) -> str:
    return quote(value, safe="")


def lot_uri(maker: str, part_number: str, lot_id: str) -> str:
    """qledger's URI for a lot: ``https://qledger.example/parts/<maker>/<part>/lot/<lot>``."""
    return f"{LOT_BASE}{_seg(maker)}/{_seg(part_number)}/lot/{_seg(lot_id)}"


def id_uri(base: str, value: str) -> str:
    """An EPCIS URI for a qledger identifier: itself when it is already an absolute URI (an
    SGLN URN, an https address), else percent-encoded under ``base``."""
    if _SCHEME.match(value) and is_uri(value) and not value.startswith(base):
        return value
    return base + _seg(value)


def uri_id(base: str, uri: str, what: str) -> str:
    """The inverse of :func:`id_uri`; the result must be a qledger identifier."""
    value = unquote(uri[len(base) :]) if uri.startswith(base) else uri
    if not is_identifier(value):
        raise InvalidRecord(
            f"{what} {uri!r} is not a qledger identifier (printable, at most 64 characters)"
        )
    return value


def _gtin_check_digit(digits13: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits13)))
    return str((10 - total % 10) % 10)


@dataclass(frozen=True)
class Node:
    """A parsed EPC: enough to name a qledger lot once its maker is known."""

    part_number: str
    lot_id: str
    maker: str | None = None
    digital_link: str | None = None
    gtin: str | None = None
    company_prefix: str | None = None  # known exactly only from an EPC URN


def parse_epc(uri: str) -> Node:
    """A qledger lot URI, a GS1 Digital Link (AI 01 + 10 or 21) or an sgtin/lgtin EPC URN."""
    if uri.startswith(LOT_BASE):
        parts = uri[len(LOT_BASE) :].split("/")
        if len(parts) == 4 and parts[2] == "lot":
            maker, part, lot = (unquote(parts[0]), unquote(parts[1]), unquote(parts[3]))
            if all(is_identifier(v) for v in (maker, part, lot)):
                return Node(part, lot, maker=maker)
        raise InvalidRecord(f"{uri!r} is not a qledger lot URI", expected=lot_uri("M", "P", "L"))
    if m := _DL.match(uri):
        gtin, ai, value = m.group(1), m.group(2), unquote(m.group(3))
        if gtin[-1] != _gtin_check_digit(gtin[:-1]):
            raise InvalidRecord(f"GTIN {gtin} in {uri!r} has a wrong check digit")
        return _gs1_node(uri, gtin, ai, value, None)
    for pattern, ai in ((_SGTIN, "21"), (_LGTIN, "10")):
        if m := pattern.match(uri):
            prefix, item, value = m.group(1), m.group(2), unquote(m.group(3))
            if len(prefix) + len(item) != 13 or not 6 <= len(prefix) <= 12:
                raise InvalidRecord(f"{uri!r}: company prefix + item reference must be 13 digits")
            body = item[0] + prefix + item[1:]
            return _gs1_node(uri, body + _gtin_check_digit(body), ai, value, prefix)
    raise InvalidRecord(
        f"identifier {uri!r} is not a GS1 Digital Link (01 + 10/21), an sgtin/lgtin EPC URN "
        "or a qledger lot URI"
    )


def _gs1_node(uri: str, gtin: str, ai: str, value: str, prefix: str | None) -> Node:
    if not is_identifier(value):
        raise InvalidRecord(f"lot/serial {value!r} of {uri!r} is not a qledger identifier")
    link = uri if re.fullmatch(DIGITAL_LINK_PATTERN, uri) else None
    if link is None:  # an EPC URN, or a link on plain http: name it on GS1's resolver
        canonical = f"{GS1_RESOLVER}/01/{gtin}/{ai}/{quote(value, safe='')}"
        link = canonical if re.fullmatch(DIGITAL_LINK_PATTERN, canonical) else None
    return Node(gtin, value, digital_link=link, gtin=gtin, company_prefix=prefix)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def iso(ts: int) -> str:
    """A unix time as an EPCIS eventTime (UTC, 'Z')."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lot_id_of(ref: Mapping[str, Any]) -> str:
    link = ref.get("digitalLink")
    return str(link) if link else lot_uri(ref["maker"], ref["partNumber"], ref["lotId"])


def _lot_entry(ref: Mapping[str, Any], uri: str) -> dict[str, Any] | None:
    """What the URI alone does not say about a lot (its maker behind a Digital Link, its BPN)."""
    if uri.startswith(LOT_BASE) and not ref.get("bpn"):
        return None
    entry = {k: ref[k] for k in ("maker", "partNumber", "lotId")}
    if ref.get("bpn"):
        entry["bpn"] = ref["bpn"]
    return entry


def _split(refs: list[dict[str, Any]], lots: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """LotRefs -> (instance-level EPC list, class-level quantity list): a ref with a quantity
    is a quantity of a lot class, one without is an instance (a serial, or a whole lot)."""
    epcs: list[str] = []
    quantities: list[dict[str, Any]] = []
    for ref in refs:
        uri = _lot_id_of(ref)
        if (entry := _lot_entry(ref, uri)) is not None:
            lots[uri] = entry
        if ref.get("quantity") is None:
            epcs.append(uri)
        else:
            quantities.append({"epcClass": uri, "quantity": ref["quantity"], "uom": ref["uom"]})
    return epcs, quantities


def record_event(signed: SignedRecord) -> dict[str, Any]:
    """One signed record as one EPCIS 2.0 event (JSON-LD; the document's @context applies)."""
    rec = signed.record
    payload = parse_payload(rec.kind, signed.payload).model_dump(mode="json")
    struct_hash = "0x" + record_struct_hash(rec).hex()
    event: dict[str, Any] = {
        "type": payload.pop("eventType"),
        "eventTime": iso(rec.eventTime),
        "eventTimeZoneOffset": "+00:00",
        # When the record entered qledger's evidence: when its signer signed it.
        "recordTime": iso(rec.signedAt),
        "eventID": EVENT_ID_PREFIX + struct_hash,
    }
    for key in ("bizStep", "disposition", "action"):
        if key in payload:
            event[key] = payload.pop(key)
    for key in ("readPoint", "bizLocation"):
        if key in payload and (value := payload.pop(key)) is not None:
            event[key] = {"id": id_uri(LOC_BASE, value)}
    lots: dict[str, Any] = {}
    if event["type"] == "ObjectEvent":
        _export_object(
            rec.kind, rec.subject, rec.partNumber, rec.lotId, rec.quantity, payload, event
        )
    elif event["type"] == "AggregationEvent":
        parent = {
            "maker": rec.subject,
            "partNumber": rec.partNumber,
            "lotId": rec.lotId,
            "digitalLink": payload.pop("parentDigitalLink"),
            "bpn": payload.pop("parentBpn"),
        }
        event["parentID"] = _lot_id_of(parent)
        if (entry := _lot_entry(parent, event["parentID"])) is not None:
            lots[event["parentID"]] = entry
        epcs, quantities = _split(payload.pop("childEPCs"), lots)
        event |= {"childEPCs": epcs} if epcs else {}
        event |= {"childQuantityList": quantities} if quantities else {}
    else:  # TransformationEvent
        for side in ("input", "output"):
            epcs, quantities = _split(payload.pop(f"{side}s"), lots)
            event |= {f"{side}EPCList": epcs} if epcs else {}
            event |= {f"{side}QuantityList": quantities} if quantities else {}
        if (tid := payload.pop("transformationID")) is not None:
            event["transformationID"] = id_uri(TRANSFORMATION_BASE, tid)
    # Everything EPCIS has no field for: the rest of the payload, then the signed record.
    # (None and empty lists are the models' defaults: left out, they read back the same.)
    event |= {PREFIX + k: v for k, v in payload.items() if v not in (None, [], {})}
    if lots:
        event[LOTS_EXT] = lots
    event[RECORD_EXT] = {**rec.model_dump(mode="json"), "structHash": struct_hash}
    event[SIGNATURE_EXT] = signed.signature
    event[DOMAIN_EXT] = {
        "chainId": signed.domain.chainId,
        "verifyingContract": signed.domain.verifyingContract,
    }
    return event


def _export_object(
    kind: RecordKind,
    subject: str,
    part_number: str,
    lot_id: str,
    quantity: int,
    payload: dict[str, Any],
    event: dict[str, Any],
) -> None:
    event["action"] = "OBSERVE"
    element: dict[str, Any] = {"epcClass": lot_uri(subject, part_number, lot_id)}
    element["quantity"] = quantity
    if "uom" in payload:
        element["uom"] = payload.pop("uom")
    event["quantityList"] = [element]
    # Fields the signed struct already fixes (checked at intake): said once, in eventTime or
    # the quantity list.
    for fixed in ("deliveredTime", "receivedTime"):
        payload.pop(fixed, None)
    if kind is RecordKind.GOODS_RECEIPT:
        payload.pop("quantity", None)
    if (po := payload.pop("purchaseOrder", None)) is not None:
        event["bizTransactionList"] = [{"type": "po", "bizTransaction": id_uri(PO_BASE, po)}]
    if kind is RecordKind.INSPECTION and payload.get("sensorReport"):
        event["sensorElementList"] = [_sensor_element(c) for c in payload.pop("sensorReport")]


def _sensor_element(c: dict[str, Any]) -> dict[str, Any]:
    """One measured characteristic as one EPCIS sensorElement: a report per measured value;
    the specification limits (no EPCIS term) as qledger: fields of the element."""
    kind = CHARACTERISTIC_BASE + _seg(c["type"])
    element: dict[str, Any] = {
        "sensorReport": [{"type": kind, "value": v, "uom": c["uom"]} for v in c["values"]]
    }
    for key in ("lsl", "usl"):
        if c.get(key) is not None:
            element[PREFIX + key] = c[key]
    element[PREFIX + "key"] = c["key"]
    return element


def document(events: list[dict[str, Any]], *, created: int | None = None) -> dict[str, Any]:
    """An EPCISDocument (schemaVersion 2.0) carrying ``events``."""
    now = int(datetime.now(UTC).timestamp()) if created is None else created
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": iso(now),
        "epcisBody": {"eventList": events},
    }


def export_document(records: list[SignedRecord], *, created: int | None = None) -> dict[str, Any]:
    return document([record_event(r) for r in records], created=created)


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


@dataclass
class ImportedEvent:
    """One event of a document: its draft (the record fields to sign) or why it has none."""

    index: int
    event_id: str | None
    kind: str | None = None
    draft: dict[str, Any] | None = None
    error: str | None = None
    ignored: list[str] = field(default_factory=list)

    @property
    def pointer(self) -> str:
        return f"/epcisBody/eventList/{self.index}"


def check_document(doc: Any, *, max_events: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The events of a valid EPCIS 2.0 EPCISDocument, or EpcisError (cheap checks first)."""
    if not isinstance(doc, dict) or doc.get("type") != "EPCISDocument":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise EpcisError("not an EPCIS document", expected="type EPCISDocument", got=got)
    if doc.get("schemaVersion") != SCHEMA_VERSION:
        raise EpcisError(
            "only EPCIS 2.0 documents are read",
            expected=SCHEMA_VERSION,
            got=doc.get("schemaVersion"),
        )
    body = doc.get("epcisBody")
    events = body.get("eventList") if isinstance(body, dict) else None
    if not isinstance(events, list) or not 1 <= len(events) <= max_events:
        raise EpcisError(
            "epcisBody.eventList holds 1 to max events",
            expected=f"1..{max_events}",
            got=len(events) if isinstance(events, list) else type(events).__name__,
        )
    # Before the schema: an eventType qledger does not read gets its own, plain answer.
    for i, event in enumerate(events):
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in SUPPORTED_EVENT_TYPES:
            raise EpcisError(
                f"/epcisBody/eventList/{i}: eventType {kind!r} is not imported",
                expected=list(SUPPORTED_EVENT_TYPES),
                got=kind,
                errors=[(f"/epcisBody/eventList/{i}/type", f"{kind!r} is not imported")],
            )
    errors = schema_errors(doc)
    if errors:
        first = "; ".join(f"{p or '/'}: {m}" for p, m in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise EpcisError(
            f"the document fails the EPCIS 2.0 JSON schema: {first}{more}", errors=errors
        )
    return events


def import_document(
    doc: Any,
    *,
    org: str,
    companies: Companies | None = None,
    kind_map: Mapping[str, RecordKind] | None = None,
    max_events: int = MAX_EVENTS,
) -> list[ImportedEvent]:
    """One record draft per event of ``doc`` for the signer's organisation ``org``; raises
    EpcisError for the document as a whole, and sets ``error`` on each event it cannot map."""
    events = check_document(doc, max_events=max_events)
    mapper = _Importer(org, companies or Companies(), {**DEFAULT_KIND_MAP, **(kind_map or {})})
    out = []
    for i, event in enumerate(events):
        item = ImportedEvent(i, event.get("eventID"))
        mapper.kind = None
        try:
            item.draft, item.ignored = mapper.event(event)
        except (LedgerError, ValidationError) as exc:
            item.error = _one_line(exc)
        item.kind = mapper.kind.value if mapper.kind is not None else None
        out.append(item)
    return out


def draft_nonce(draft: Mapping[str, Any]) -> int:
    """The nonce an imported draft is signed with: a hash of what it says (62 bits, below the
    store's signed 64-bit column). The same event imported again, from the same document or
    from a qledger export of it, gets the same nonce, and the ledger refuses a signer's second
    record with a used nonce (``nonce_replayed``): evidence is never counted twice by re-import.
    """
    digest = hashlib.sha256(canonical_json(dict(draft))).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        return f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}"
    return " ".join(str(exc).split())


def _time(value: str) -> int:
    # The schema checked RFC 3339 already (EPCIS times carry an offset); Python reads all of
    # it but a leap second or a lower-case "t"/"z".
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRecord("eventTime is not a time qledger can read", got=value) from exc
    if parsed.tzinfo is None:
        raise InvalidRecord("eventTime needs its UTC offset", got=value)
    return math.floor(parsed.timestamp())


def _bare(value: str, prefixes: tuple[str, ...]) -> str:
    for p in prefixes:
        if value.startswith(p):
            return value[len(p) :]
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidRecord(f"{what} must be a whole count", got=value)
    if not 0 <= value < 2**32:
        raise InvalidRecord(f"{what} out of range", expected="0..2^32-1", got=value)
    return int(value)


class _Importer:
    def __init__(self, org: str, companies: Companies, kind_map: Mapping[str, RecordKind]):
        if not is_identifier(org):
            raise InvalidRecord("the importing organisation is not an identifier", got=org)
        self.org = org
        self.kind: RecordKind | None = None  # of the event being mapped, once known
        self.companies = companies
        self.kind_map = kind_map

    # -- lots --------------------------------------------------------------------------------

    def _company(self, node: Node) -> Company | None:
        table = self.companies.prefixes
        if node.company_prefix is not None:
            return table.get(node.company_prefix)
        if node.gtin is not None:  # a Digital Link: the longest known prefix of the GTIN
            for n in range(12, 5, -1):
                if (found := table.get(node.gtin[1 : 1 + n])) is not None:
                    return found
        return None

    def lot(
        self,
        uri: str,
        lots: Mapping[str, Any],
        *,
        own: bool,
        quantity: int | None = None,
        uom: str | None = None,
    ) -> dict[str, Any]:
        """A LotRef for ``uri``; ``own``: a position only the signer's product may take (a
        parent, an output), whose maker defaults to the signer."""
        node = parse_epc(uri)
        entry = lots.get(uri)
        company = self._company(node)
        ref: dict[str, Any] = {"partNumber": node.part_number, "lotId": node.lot_id}
        if isinstance(entry, dict):
            ref |= {k: entry[k] for k in ("maker", "partNumber", "lotId", "bpn") if k in entry}
        maker = ref.get("maker") or node.maker or (company.org if company else None)
        if maker is None and own:
            maker = self.org
        if maker is None:
            raise InvalidRecord(
                f"no maker known for {uri!r}: map its GS1 company prefix to an organisation "
                "(--companies FILE) or name it in the qledger:lots extension"
            )
        ref["maker"] = maker
        if "bpn" not in ref and company is not None and company.bpn is not None:
            ref["bpn"] = company.bpn
        if node.digital_link is not None:
            ref["digitalLink"] = node.digital_link
        if quantity is not None:
            ref["quantity"] = quantity
            ref["uom"] = uom or "EA"
        return ref

    def lots_of(
        self, event: dict[str, Any], epcs: str, quantities: str, lots: Mapping[str, Any], own: bool
    ) -> list[dict[str, Any]]:
        refs = [self.lot(u, lots, own=own) for u in event.get(epcs, [])]
        for i, q in enumerate(event.get(quantities, [])):
            if "quantity" not in q:
                raise InvalidRecord(f"{quantities}[{i}]: a lot class needs its quantity")
            count = _count(q["quantity"], f"{quantities}[{i}].quantity")
            refs.append(self.lot(q["epcClass"], lots, own=own, quantity=count, uom=q.get("uom")))
        return refs

    # -- events ------------------------------------------------------------------------------

    def kind_of(self, event: dict[str, Any], ext: Mapping[str, Any]) -> RecordKind:
        etype = event["type"]
        if "kind" in ext:
            try:
                kind = RecordKind(ext["kind"])
            except ValueError as exc:
                raise InvalidRecord("qledger:record.kind is unknown", got=ext["kind"]) from exc
        elif etype in _EVENT_KINDS:
            kind = _EVENT_KINDS[etype]
        else:
            step = _bare(str(event.get("bizStep", "")), _BIZSTEP_PREFIXES)
            if step not in self.kind_map:
                raise InvalidRecord(
                    f"no record kind for an ObjectEvent with bizStep {step or None!r}",
                    expected=sorted(self.kind_map),
                    got=step or None,
                )
            kind = self.kind_map[step]
        want = PAYLOAD_MODELS[kind].model_fields["eventType"].default
        if want != etype:
            raise InvalidRecord(f"a {kind.value} record is an {want}", got=etype)
        return kind

    def event(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        ext = event.get(RECORD_EXT) or {}
        lots = event.get(LOTS_EXT) or {}
        if not isinstance(ext, dict) or not isinstance(lots, dict):
            raise InvalidRecord("qledger:record and qledger:lots are JSON objects")
        kind = self.kind = self.kind_of(event, ext)
        fields = PAYLOAD_MODELS[kind].model_fields
        used = {"type", "eventTime", "eventTimeZoneOffset", "recordTime", "eventID", "@context"}
        used |= _RECORD_LEVEL
        payload: dict[str, Any] = {}
        event_time = _time(event["eventTime"])
        for key, prefixes in (("bizStep", _BIZSTEP_PREFIXES), ("disposition", _DISP_PREFIXES)):
            if key in event and key in fields:
                payload[key] = _bare(event[key], prefixes)
                used.add(key)
        for key in ("readPoint", "bizLocation"):
            if key in event and key in fields:
                payload[key] = uri_id(LOC_BASE, event[key]["id"], f"{key}.id")
                used.add(key)
        if "action" in event:
            used.add("action")
        quantity: int | None = None
        if kind in GENEALOGY_KINDS:
            subject, part, lot, quantity = self._genealogy(kind, event, ext, lots, payload, used)
        else:
            subject, part, lot, quantity = self._object(kind, event, fields, payload, used)
            for fixed in ("deliveredTime", "receivedTime"):
                if fixed in fields:
                    payload[fixed] = event_time
        for key, value in event.items():
            if key.startswith(PREFIX) and key not in _RECORD_LEVEL:
                name = key[len(PREFIX) :]
                if name in payload:
                    raise InvalidRecord(f"{key} repeats a field EPCIS already carries")
                payload[name] = value
                used.add(key)
        model = PAYLOAD_MODELS[kind].model_validate(payload)
        payload = model.model_dump(mode="json", exclude_none=True)
        draft = {
            "subject": subject,
            "kind": kind.value,
            "partNumber": part,
            "lotId": lot,
            "eventTime": event_time,
            "quantity": _count(ext.get("quantity", quantity or 0), "quantity"),
            "defects": _count(ext.get("defects", _derived_defects(payload)), "defects"),
            "payload": payload,
        }
        return draft, sorted(set(event) - used)

    def _object(
        self,
        kind: RecordKind,
        event: dict[str, Any],
        fields: Mapping[str, Any],
        payload: dict[str, Any],
        used: set[str],
    ) -> tuple[str, str, str, int]:
        if event.get("action") != "OBSERVE":
            raise InvalidRecord(
                "an ObjectEvent imported as evidence observes a lot",
                expected="OBSERVE",
                got=event.get("action"),
            )
        own = Role.SUPPLIER in KIND_SIGNER_ROLES[kind]
        lots: dict[str, Any] = event.get(LOTS_EXT) or {}
        epcs, quantities = event.get("epcList", []), event.get("quantityList", [])
        used |= {"epcList", "quantityList"}
        if len(epcs) + len(quantities) != 1:
            raise InvalidRecord(
                "a record is about one lot: the event must name exactly one EPC or lot class",
                expected=1,
                got=len(epcs) + len(quantities),
            )
        if epcs:
            ref, count = self.lot(epcs[0], lots, own=own), 1
        else:
            q = quantities[0]
            if "quantity" not in q:
                raise InvalidRecord("quantityList[0]: the lot's quantity is missing")
            count = _count(q["quantity"], "quantityList[0].quantity")
            ref = self.lot(q["epcClass"], lots, own=own)
            if "uom" in q and "uom" in fields:
                payload["uom"] = q["uom"]
        if own and ref["maker"] != self.org:
            raise InvalidRecord(
                f"{kind.value} evidence is about the signer's own lot",
                expected=self.org,
                got=ref["maker"],
            )
        if "quantity" in fields:  # a goods receipt: the quantity received
            payload["quantity"] = count
        if "purchaseOrder" in fields:
            pos = [
                t["bizTransaction"]
                for t in event.get("bizTransactionList", [])
                if t.get("type") in _PO_TYPES
            ]
            if len(pos) > 1:
                raise InvalidRecord("more than one purchase order (bizTransaction type po)")
            if pos:
                payload["purchaseOrder"] = uri_id(PO_BASE, pos[0], "purchase order")
                used.add("bizTransactionList")
        if (
            "sensorElementList" in event
            and "sensorReport" in fields
            and kind is RecordKind.INSPECTION
        ):
            payload["sensorReport"] = [
                _characteristic(e, i) for i, e in enumerate(event["sensorElementList"])
            ]
            used.add("sensorElementList")
        return ref["maker"], ref["partNumber"], ref["lotId"], count

    def _genealogy(
        self,
        kind: RecordKind,
        event: dict[str, Any],
        ext: Mapping[str, Any],
        lots: Mapping[str, Any],
        payload: dict[str, Any],
        used: set[str],
    ) -> tuple[str, str, str, int]:
        if kind is RecordKind.AGGREGATION:
            if event.get("action") != "ADD":
                raise InvalidRecord(
                    "qledger records an assembly (action ADD); OBSERVE only observes an "
                    "aggregation and DELETE takes one apart",
                    expected="ADD",
                    got=event.get("action"),
                )
            if "parentID" not in event:
                raise InvalidRecord("an aggregation needs its parentID (the assembly)")
            parent = self.lot(event["parentID"], lots, own=True)
            payload["action"] = "ADD"
            payload["childEPCs"] = self.lots_of(
                event, "childEPCs", "childQuantityList", lots, False
            )
            if parent.get("bpn"):
                payload["parentBpn"] = parent["bpn"]
            if parent.get("digitalLink"):
                payload["parentDigitalLink"] = parent["digitalLink"]
            used |= {"parentID", "childEPCs", "childQuantityList"}
            own, count = parent, 1
        else:
            payload["inputs"] = self.lots_of(
                event, "inputEPCList", "inputQuantityList", lots, False
            )
            outputs = self.lots_of(event, "outputEPCList", "outputQuantityList", lots, True)
            payload["outputs"] = outputs
            if "transformationID" in event:
                payload["transformationID"] = uri_id(
                    TRANSFORMATION_BASE, event["transformationID"], "transformationID"
                )
            used |= {"inputEPCList", "inputQuantityList", "outputEPCList", "outputQuantityList"}
            used.add("transformationID")
            if not outputs:
                raise InvalidRecord("a transformation needs at least one output")
            named = (ext.get("partNumber"), ext.get("lotId"))
            own = next((o for o in outputs if (o["partNumber"], o["lotId"]) == named), outputs[0])
            count = own.get("quantity") or 1
        if own["maker"] != self.org:
            raise InvalidRecord(
                f"{kind.value}: {'/'.join((own['maker'], own['partNumber'], own['lotId']))} "
                "is not the signer's own product",
                expected=self.org,
                got=own["maker"],
            )
        return self.org, own["partNumber"], own["lotId"], count


def _characteristic(element: dict[str, Any], i: int) -> dict[str, Any]:
    reports = element["sensorReport"]
    types = {r["type"] for r in reports}
    uoms = {r.get("uom") for r in reports}
    if len(types) != 1 or len(uoms) != 1 or None in uoms:
        raise InvalidRecord(
            f"sensorElementList[{i}]: one characteristic per element, one type and one uom"
        )
    values = [r["value"] for r in reports if "value" in r]
    out: dict[str, Any] = {
        "type": uri_id(CHARACTERISTIC_BASE, types.pop(), f"sensorElementList[{i}] type"),
        "uom": uoms.pop(),
        "values": values,
    }
    for key in ("lsl", "usl", "key"):
        if PREFIX + key in element:
            out[key] = element[PREFIX + key]
    return out


def _derived_defects(payload: Mapping[str, Any]) -> int:
    """The record's defects as intake checks them against the payload (ledger/records.py)."""
    if "defectList" in payload:  # inspection
        return sum(int(d["count"]) for d in payload["defectList"])
    if "majorNonconformities" in payload:  # audit
        return int(payload["majorNonconformities"])
    incoming = payload.get("incomingInspection")
    if isinstance(incoming, dict):  # goods receipt
        return sum(int(d["count"]) for d in incoming.get("defectList", []))
    return 0
