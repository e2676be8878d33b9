"""Evidence records: the signed struct, the detail payload of each kind, and the signed envelope.

The signed struct (``QualityRecord``) carries what the chain and the score need; the detail
payload is committed by ``payloadHash`` (keccak256 of its RFC 8785 canonical JSON). Payload field
names follow GS1 EPCIS 2.0 / CBV where a term exists (``bizStep``, ``disposition``,
``readPoint``, ``sensorReport`` with ``uom`` as UN/CEFACT common codes).
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ledger._address import is_valid_checksum, to_checksum
from ledger._hash import keccak
from ledger.canonical import canonical_json, canonical_json_fast
from ledger.errors import InvalidRecord, LedgerError

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
# Free-text identifiers are kept short and printable: they are hashed on chain, shown in UIs and
# used in URLs. One pattern wherever an id enters (records, incidents, participants, paths):
# printable ASCII only (no NUL or control characters), never two dots in a row (no ``../``).
# Written without look-around so pydantic's (Rust) regex engine and OpenAPI clients accept it.
ID_MAX_LENGTH = 64
ID_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_:/#-]|\.[A-Za-z0-9_:/#-])*\.?$"
HEX32_PATTERN = r"^0x[0-9a-fA-F]{64}$"


class RecordKind(StrEnum):
    INSPECTION = "inspection"
    DELIVERY = "delivery"
    COMPLAINT = "complaint"
    CORRECTIVE_ACTION = "corrective_action"
    AUDIT = "audit"
    IMPROVEMENT = "improvement"
    # OEM-side counter-evidence (issue 16): the supplier's key cannot write these.
    PART_SPEC = "part_spec"
    GOODS_RECEIPT = "goods_receipt"
    # Genealogy (issue 19), in GS1 EPCIS 2.0 terms: signed by the party that did the assembly or
    # transformation, about itself. They carry no quality claim and move no score.
    AGGREGATION = "aggregation"
    TRANSFORMATION = "transformation"
    # Quality notifications (issue 19, docs/notifications.md): one record per transition of an
    # investigation or alert, signed by the party whose turn it is, about itself. A notification
    # is a message, not a finding: it moves no score (the complaint it may lead to does).
    NOTIFICATION = "notification"


class Role(StrEnum):
    """On-chain roles. Role ids are ``keccak256("<NAME>_ROLE")``; ADMIN is AccessControl's 0x00."""

    ADMIN = "ADMIN"
    ANCHORER = "ANCHORER"
    SUPPLIER = "SUPPLIER"
    OEM = "OEM"
    AUDITOR = "AUDITOR"


# Who may sign which kind (docs/design.md): a score resting only on self-reports could be gamed.
_SUPPLIER, _OEM, _AUDITOR = (
    frozenset({Role.SUPPLIER}),
    frozenset({Role.OEM}),
    frozenset({Role.AUDITOR}),
)
KIND_SIGNER_ROLES: dict[RecordKind, frozenset[Role]] = {
    RecordKind.INSPECTION: _SUPPLIER,
    RecordKind.DELIVERY: _SUPPLIER,
    RecordKind.CORRECTIVE_ACTION: _SUPPLIER,
    RecordKind.COMPLAINT: _OEM,
    RecordKind.AUDIT: _AUDITOR,
    RecordKind.IMPROVEMENT: _AUDITOR,
    RecordKind.PART_SPEC: _OEM,
    RecordKind.GOODS_RECEIPT: _OEM,
    # Suppliers assemble sub-assemblies and OEMs assemble vehicles: both sign genealogy.
    RecordKind.AGGREGATION: _SUPPLIER | _OEM,
    RecordKind.TRANSFORMATION: _SUPPLIER | _OEM,
    # Investigations go down the chain (an OEM, or a supplier as its own supplier's customer) and
    # alerts go up: the parties of a notification are OEMs and suppliers, never auditors.
    RecordKind.NOTIFICATION: _SUPPLIER | _OEM,
}
# Kinds whose subject is always the signer's own organisation, whatever its role: only the party
# that did the assembly or transformation may say what went into its product. (A supplier's
# records are always about itself; this extends the rule to OEM-signed genealogy.)
# A notification transition is likewise about its signer (docs/notifications.md, "subject"): it
# is that party's own statement in a conversation, not evidence about the other party.
GENEALOGY_KINDS: frozenset[RecordKind] = frozenset(
    {RecordKind.AGGREGATION, RecordKind.TRANSFORMATION}
)
SELF_SUBJECT_KINDS: frozenset[RecordKind] = GENEALOGY_KINDS | {RecordKind.NOTIFICATION}


def allowed_roles_text(kind: RecordKind) -> str:
    """The roles that may sign ``kind``, for messages (e.g. ``"OEM or SUPPLIER"``)."""
    return " or ".join(sorted(r.value for r in KIND_SIGNER_ROLES[kind]))


Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=ID_MAX_LENGTH)]
Hex32 = Annotated[str, Field(pattern=HEX32_PATTERN)]
# Signed integers have one canonical form, a JSON number (strict: never a boolean, a float such
# as 50.0 or -0.0, or a decimal string such as "50"): two encodings of one value would give two
# payload hashes, and another parser could read another value.
Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX, strict=True)]
Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX, strict=True)]
UnixTime = Annotated[
    int, Field(ge=0, le=UINT64_MAX, strict=True, description="seconds since 1970-01-01 UTC")
]


def is_identifier(value: object) -> bool:
    """Whether ``value`` is an id by the one pattern (for ids that enter outside a model)."""
    return (
        isinstance(value, str)
        and len(value) <= ID_MAX_LENGTH
        and re.fullmatch(ID_PATTERN, value) is not None
    )


def new_salt() -> str:
    """A fresh random 32-byte salt, so the on-chain leaf reveals nothing about the record."""
    return "0x" + os.urandom(32).hex()


class QualityRecord(BaseModel):
    """The EIP-712 struct ``QualityRecord`` exactly as signed. Field order is the type's order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signer: str
    subject: Identifier = Field(description="organisation id of the supplier the evidence is about")
    kind: RecordKind
    partNumber: Identifier
    lotId: Identifier
    eventTime: UnixTime = Field(description="when the evidence happened (EPCIS eventTime)")
    signedAt: UnixTime = Field(description="when the signer signed; roles are checked at this time")
    quantity: Uint32
    defects: Uint32
    nonce: Uint64
    salt: Hex32
    payloadHash: Hex32

    @field_validator("signer")
    @classmethod
    def _checksum(cls, value: str) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError("signer must be a 20-byte hex address")
        if not is_valid_checksum(value):
            raise ValueError("signer has a mixed-case address with a wrong EIP-55 checksum")
        return to_checksum(value)

    @field_validator("salt", "payloadHash")
    @classmethod
    def _lower_hex(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _counts(self) -> QualityRecord:
        if self.kind in (
            RecordKind.INSPECTION,
            RecordKind.DELIVERY,
            RecordKind.COMPLAINT,
            RecordKind.GOODS_RECEIPT,
        ) and (self.defects > self.quantity):
            raise ValueError(f"defects ({self.defects}) exceed quantity ({self.quantity})")
        return self


# ---------------------------------------------------------------------------------------------
# Detail payloads, one model per kind. Unknown fields are refused so that a typo is an error,
# not silently hashed-but-ignored evidence.
# ---------------------------------------------------------------------------------------------


class _EventPayload(BaseModel):
    """What every detail payload has, whatever its EPCIS event type."""

    # strict: the payload is hashed as sent, so a value the model would coerce ("50" for 50,
    # 1 for true) is refused rather than read as something else than what was signed.
    model_config = ConfigDict(extra="forbid", strict=True)

    readPoint: Identifier | None = Field(None, description="EPCIS readPoint: where it happened")
    attachments: list[Attachment] = Field(default_factory=list, max_length=32)


class _Payload(_EventPayload):
    """An EPCIS ObjectEvent about the record's lot (every quality-evidence kind)."""

    eventType: Literal["ObjectEvent"] = "ObjectEvent"


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    mediaType: Annotated[str, Field(max_length=100)] = "application/octet-stream"
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


Severity = Literal["critical", "major", "minor"]


class DefectCount(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    code: Identifier
    count: Uint32
    severity: Severity = "minor"


class Characteristic(BaseModel):
    """A measured characteristic (EPCIS sensorReport element) with its specification limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Identifier = Field(description="characteristic name, e.g. bore_diameter")
    uom: Annotated[str, Field(min_length=1, max_length=8)] = Field(
        description="UN/CEFACT unit code, e.g. MMT (mm), CEL (degC), NU (N*m)"
    )
    lsl: float | None = Field(None, description="lower specification limit")
    usl: float | None = Field(None, description="upper specification limit")
    key: bool = Field(False, description="a key (special) characteristic whose Cpk is scored")
    values: Annotated[list[float], Field(min_length=1, max_length=2000)]

    @model_validator(mode="after")
    def _limits(self) -> Characteristic:
        if self.lsl is None and self.usl is None:
            raise ValueError(f"characteristic {self.type!r} needs lsl, usl or both")
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"characteristic {self.type!r}: lsl {self.lsl} >= usl {self.usl}")
        return self


class InspectionPayload(_Payload):
    bizStep: Literal["inspecting"] = "inspecting"
    disposition: Literal["conformant", "non_conformant", "partially_conformant"]
    inspectionType: Literal["incoming", "in_process", "final"]
    lotSize: Uint32
    sampleSize: Uint32
    defectList: list[DefectCount] = Field(default_factory=list, max_length=200)
    sensorReport: list[Characteristic] = Field(default_factory=list, max_length=50)


class DeliveryPayload(_Payload):
    bizStep: Literal["shipping"] = "shipping"
    disposition: Literal["in_transit", "in_progress", "conformant", "non_conformant"] = "in_transit"
    purchaseOrder: Identifier
    promisedTime: UnixTime
    deliveredTime: UnixTime
    uom: Annotated[str, Field(min_length=1, max_length=8)] = "EA"


class ComplaintPayload(_Payload):
    bizStep: Literal["inspecting", "receiving", "repairing"] = "inspecting"
    complaintId: Identifier
    status: Literal["open", "closed"] = "open"
    severity: Severity
    defectCode: Identifier
    customerDisruption: bool = Field(False, description="yard hold, line stop or stop-ship")
    description: Annotated[str, Field(max_length=2000)] = ""


EIGHT_D = ("D0", "D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8")


class CorrectiveActionPayload(_Payload):
    bizStep: Literal["repairing"] = "repairing"
    complaintId: Identifier
    status: Literal["open", "closed"]
    firstResponseTime: UnixTime | None = Field(None, description="first answer to the complaint")
    eightD: dict[str, UnixTime] = Field(description="completion time of each discipline D0..D8")
    rootCause: Annotated[str, Field(max_length=2000)] = ""

    @model_validator(mode="after")
    def _disciplines(self) -> CorrectiveActionPayload:
        unknown = set(self.eightD) - set(EIGHT_D)
        if unknown:
            raise ValueError(f"unknown 8D disciplines {sorted(unknown)}; expected {EIGHT_D}")
        done = [self.eightD[d] for d in EIGHT_D if d in self.eightD]
        if done != sorted(done):
            raise ValueError("8D discipline dates must not go backwards (D0 <= D1 <= ... <= D8)")
        if self.status == "closed" and "D8" not in self.eightD:
            raise ValueError("a closed 8D needs its D8 (closure) date")
        return self


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Identifier
    severity: Literal["major", "minor", "observation"]
    clause: Annotated[str, Field(max_length=40)] = ""
    description: Annotated[str, Field(max_length=2000)] = ""


class AuditPayload(_Payload):
    bizStep: Literal["inspecting"] = "inspecting"
    standard: Literal["IATF16949", "ISO9001", "ISO13485", "VDA6.3", "customer", "other"]
    auditType: Literal["announced", "unannounced", "process", "product"]
    majorNonconformities: Uint32
    minorNonconformities: Uint32
    findings: list[Finding] = Field(default_factory=list, max_length=500)


class ImprovementPayload(_Payload):
    bizStep: Literal["inspecting"] = "inspecting"
    remedies: Annotated[list[Hex32], Field(min_length=1, max_length=100)] = Field(
        description="struct hashes of the records this evidence remedies"
    )
    evidenceType: Literal[
        "process_capability_study", "process_stability_report", "audit_closure", "8d_verification"
    ]
    summary: Annotated[str, Field(max_length=2000)] = ""
    verifiedCpk: float | None = Field(None, ge=0, le=20)
    closesNonconformities: list[Identifier] = Field(default_factory=list, max_length=100)


# -- OEM-side evidence (issue 16) -------------------------------------------------------------


class SpecCharacteristic(BaseModel):
    """One characteristic of an OEM control plan: its limits and whether it is key (CC/SC)."""

    model_config = ConfigDict(extra="forbid")

    type: Identifier = Field(description="characteristic name, e.g. bore_diameter")
    uom: Annotated[str, Field(min_length=1, max_length=8)]
    lsl: float | None = None
    usl: float | None = None
    # AIAG/IATF 16949: CC = critical characteristic (safety/regulation), SC = significant
    # characteristic (fit/function). Either makes it a key characteristic whose Cpk is scored.
    specialCharacteristic: Literal["CC", "SC"] | None = None

    @model_validator(mode="after")
    def _limits(self) -> SpecCharacteristic:
        if self.lsl is None and self.usl is None:
            raise ValueError(f"characteristic {self.type!r} needs lsl, usl or both")
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise ValueError(f"characteristic {self.type!r}: lsl {self.lsl} >= usl {self.usl}")
        return self


class PartSpecPayload(_Payload):
    """The OEM's signed part specification (control plan) for one part number.

    The record's ``lotId`` is the revision and its ``eventTime`` the ``effectiveTime``: the
    revision in force at a lot's time is the latest one effective by then. EPCIS has no bizStep
    for a specification, so none is claimed; ``documentType`` says what it is.
    """

    documentType: Literal["control_plan"] = "control_plan"
    revision: Identifier
    effectiveTime: UnixTime
    characteristics: Annotated[list[SpecCharacteristic], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _unique(self) -> PartSpecPayload:
        names = [c.type for c in self.characteristics]
        if len(set(names)) != len(names):
            raise ValueError("characteristic types must be unique within a specification")
        return self


class Measurement(BaseModel):
    """Measured values of one characteristic without limits (the limits are the OEM's spec)."""

    model_config = ConfigDict(extra="forbid")

    type: Identifier
    uom: Annotated[str, Field(min_length=1, max_length=8)]
    values: Annotated[list[float], Field(min_length=1, max_length=2000)]


class IncomingInspection(BaseModel):
    """The OEM's incoming inspection of a received lot (sampled units, defects found)."""

    model_config = ConfigDict(extra="forbid")

    sampleSize: Uint32
    defectList: list[DefectCount] = Field(default_factory=list, max_length=200)
    sensorReport: list[Measurement] = Field(default_factory=list, max_length=50)

    @property
    def defects(self) -> int:
        return sum(d.count for d in self.defectList)


class GoodsReceiptPayload(_Payload):
    """The OEM's signed goods receipt of one supplier lot (EPCIS bizStep ``receiving``).

    ``promisedTime`` comes from the OEM's own order/schedule, so on-time delivery is measured
    against a date the supplier did not write. The record's ``quantity`` is the quantity received
    and its ``defects`` the incoming inspection's defects (0 when the lot was not inspected).
    """

    bizStep: Literal["receiving"] = "receiving"
    disposition: Literal["in_progress", "conformant", "non_conformant", "damaged"] = "in_progress"
    purchaseOrder: Identifier
    promisedTime: UnixTime
    receivedTime: UnixTime
    quantity: Uint32
    uom: Annotated[str, Field(min_length=1, max_length=8)] = "EA"
    incomingInspection: IncomingInspection | None = None

    @model_validator(mode="after")
    def _sample(self) -> GoodsReceiptPayload:
        insp = self.incomingInspection
        if insp is not None:
            if insp.sampleSize > self.quantity:
                raise ValueError(
                    f"incoming sample {insp.sampleSize} larger than received {self.quantity}"
                )
            if insp.defects > insp.sampleSize:
                raise ValueError(f"incoming defects {insp.defects} exceed {insp.sampleSize}")
        return self


# -- genealogy (issue 19) --------------------------------------------------------------------

# Catena-X business partner numbers: BPNL (legal entity), BPNS (site), BPNA (address), then 12
# upper-case alphanumerics (Catena-X standard CX-0010 "Business Partner Number").
BPN_PATTERN = r"^BPN[LSA][0-9A-Z]{12}$"
# A GS1 Digital Link URI for a batch/lot (AI 10) or a serial (AI 21) of a GTIN (AI 01), on any
# resolver host (GS1 Digital Link standard 1.2, section 4): https://id.gs1.org/01/<gtin14>/10/<lot>.
# The AI 10/21 value is up to 20 characters of GS1's character set 82, URI-safe subset here.
DIGITAL_LINK_PATTERN = (
    r"^https://[A-Za-z0-9.-]+(?:/[A-Za-z0-9._~-]+)*/01/[0-9]{14}/(?:10|21)/[A-Za-z0-9._~%-]{1,20}$"
)
BusinessPartnerNumber = Annotated[str, Field(pattern=BPN_PATTERN)]
DigitalLink = Annotated[str, Field(pattern=DIGITAL_LINK_PATTERN, max_length=200)]
MAX_GENEALOGY_LINKS = 1000  # children or inputs/outputs of one event: a pallet, a vehicle's BOM


class LotRef(BaseModel):
    """One lot (or serial) of one part made by one organisation: a node of the genealogy.

    A node is named by ``(maker, partNumber, lotId)``: lot numbers are unique only within a
    maker and part. ``digitalLink`` and ``bpn`` are the GS1 / Catena-X names of the same node,
    carried so that EPCIS and Trace-X partners can match it without a lookup table.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    maker: Identifier = Field(description="organisation id of the party that made it")
    partNumber: Identifier
    lotId: Identifier = Field(description="lot number, or serial number of a serialised part")
    quantity: Uint32 | None = Field(None, description="how many went in (EPCIS quantityList)")
    uom: Annotated[str, Field(min_length=1, max_length=8)] = "EA"
    bpn: BusinessPartnerNumber | None = Field(None, description="the maker's business partner id")
    digitalLink: DigitalLink | None = None

    @property
    def node(self) -> tuple[str, str, str]:
        return (self.maker, self.partNumber, self.lotId)


def _unique_nodes(refs: list[LotRef], what: str) -> None:
    nodes = [r.node for r in refs]
    if len(set(nodes)) != len(nodes):
        dup = next(n for n in nodes if nodes.count(n) > 1)
        raise ValueError(f"{what} lists {'/'.join(dup)} twice (a duplicate link)")


class AggregationPayload(_EventPayload):
    """Child lots or serials assembled into the parent the record names (EPCIS 2.0
    AggregationEvent, action ADD). The parent is ``(subject, partNumber, lotId)`` of the record:
    the signer's own product."""

    eventType: Literal["AggregationEvent"] = "AggregationEvent"
    action: Literal["ADD"] = "ADD"
    bizStep: Literal["assembling", "packing"] = "assembling"
    bizLocation: Identifier | None = Field(None, description="site where it was assembled")
    parentBpn: BusinessPartnerNumber | None = None
    parentDigitalLink: DigitalLink | None = None
    childEPCs: Annotated[list[LotRef], Field(min_length=1, max_length=MAX_GENEALOGY_LINKS)]

    @model_validator(mode="after")
    def _children(self) -> AggregationPayload:
        _unique_nodes(self.childEPCs, "childEPCs")
        return self


class TransformationPayload(_EventPayload):
    """Input lots consumed to make output lots (EPCIS 2.0 TransformationEvent), e.g. a resin lot
    moulded into housing lots. Every output is the signer's own product and the record's
    ``(partNumber, lotId)`` is one of them."""

    eventType: Literal["TransformationEvent"] = "TransformationEvent"
    bizStep: Literal["commissioning", "assembling", "other"] = "commissioning"
    transformationID: Identifier | None = None
    bizLocation: Identifier | None = Field(None, description="site where it was made")
    inputs: Annotated[list[LotRef], Field(min_length=1, max_length=MAX_GENEALOGY_LINKS)]
    outputs: Annotated[list[LotRef], Field(min_length=1, max_length=MAX_GENEALOGY_LINKS)]

    @model_validator(mode="after")
    def _links(self) -> TransformationPayload:
        _unique_nodes(self.inputs, "inputs")
        _unique_nodes(self.outputs, "outputs")
        both = {r.node for r in self.inputs} & {r.node for r in self.outputs}
        if both:
            raise ValueError(f"{'/'.join(sorted(both)[0])} is both input and output (a cycle)")
        # Every input is linked to every output (EPCIS: the inputs went into all outputs), so
        # the link count of one record is the product; bounded like an aggregation's children.
        links = len(self.inputs) * len(self.outputs)
        if links > MAX_GENEALOGY_LINKS:
            raise ValueError(
                f"inputs x outputs is {links} links; at most {MAX_GENEALOGY_LINKS} per record"
            )
        return self


# -- quality notifications (issue 19, docs/notifications.md) ----------------------------------

# Trace-X's quality-notification states (Eclipse Tractus-X Trace-X, "notification status"):
# CREATED -> SENT -> RECEIVED -> ACKNOWLEDGED -> ACCEPTED | DECLINED -> CLOSED. Each is one
# signed record here, by the party whose turn it is.
NotificationTransition = Literal[
    "created", "sent", "received", "acknowledged", "accepted", "declined", "closed"
]
NOTIFICATION_TRANSITIONS: tuple[str, ...] = (
    "created",
    "sent",
    "received",
    "acknowledged",
    "accepted",
    "declined",
    "closed",
)
# Whose turn each transition is: the sender opens, sends and closes; the recipient answers.
NOTIFICATION_ACTOR: dict[str, Literal["sender", "recipient"]] = {
    "created": "sender",
    "sent": "sender",
    "received": "recipient",
    "acknowledged": "recipient",
    "accepted": "recipient",
    "declined": "recipient",
    "closed": "sender",
}
# Trace-X severities (MINOR, MAJOR, CRITICAL, LIFE-THREATENING), in this ledger's spelling.
NotificationSeverity = Literal["minor", "major", "critical", "life_threatening"]
MAX_AFFECTED_PARTS = 1000  # one notification per partner; a recall scope beyond this is split
MAX_NOTIFICATION_LINKS = 100


class NotificationScope(BaseModel):
    """Where and when the suspect parts were made: the site, the shift, a time range."""

    model_config = ConfigDict(extra="forbid", strict=True)

    site: Identifier | None = None
    shift: Identifier | None = None
    fromTime: UnixTime | None = None
    toTime: UnixTime | None = None

    @model_validator(mode="after")
    def _range(self) -> NotificationScope:
        if self.fromTime is not None and self.toTime is not None and self.fromTime > self.toTime:
            raise ValueError(f"scope fromTime {self.fromTime} is after toTime {self.toTime}")
        return self


class NotificationLinks(BaseModel):
    """What a notification refers to: the incident whose responsibility matrix it belongs to,
    and the complaint and 8D (corrective_action) records, by struct hash, that answer it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    incidentId: Identifier | None = None
    complaints: Annotated[list[Hex32], Field(max_length=MAX_NOTIFICATION_LINKS)] = Field(
        default_factory=list
    )
    correctiveActions: Annotated[list[Hex32], Field(max_length=MAX_NOTIFICATION_LINKS)] = Field(
        default_factory=list, description="struct hashes of the 8D records that answer it"
    )


class NotificationPayload(_EventPayload):
    """One transition of a quality notification: an investigation (customer -> supplier) or an
    alert (supplier -> customer). The terms of the notification (parts, deadline, severity,
    scope, origin) are stated once, by ``created``; every later transition repeats only the
    thread's names (id, type, sender, recipient) so that each record alone says who did what.

    EPCIS has no notification event: exported, a transition is an ObjectEvent about its thread
    (docs/epcis.md), so the field names that EPCIS does not know travel in qledger's namespace."""

    eventType: Literal["ObjectEvent"] = "ObjectEvent"
    notificationId: Identifier
    type: Literal["investigation", "alert"]
    transition: NotificationTransition
    sender: Identifier = Field(description="organisation id of the party that opened it")
    recipient: Identifier = Field(description="organisation id of the party that answers")
    originId: Identifier | None = Field(
        None, description="the notification this one forwards to another tier"
    )
    affectedParts: Annotated[list[LotRef], Field(max_length=MAX_AFFECTED_PARTS)] = Field(
        default_factory=list
    )
    deadline: UnixTime | None = Field(None, description="answer (accept/decline) due by")
    severity: NotificationSeverity | None = None
    scope: NotificationScope | None = None
    description: Annotated[str, Field(max_length=2000)] = ""
    reason: Annotated[str, Field(max_length=2000)] = ""
    links: NotificationLinks | None = None

    @model_validator(mode="after")
    def _terms(self) -> NotificationPayload:
        if self.sender == self.recipient:
            raise ValueError("sender and recipient are the same organisation")
        if self.originId == self.notificationId:
            raise ValueError("a notification cannot forward itself")
        _unique_nodes(self.affectedParts, "affectedParts")
        if self.transition == "created":
            if not self.affectedParts:
                raise ValueError("a created notification lists at least one affected part")
            if self.severity is None:
                raise ValueError("a created notification states its severity")
        else:
            stated = [
                name
                for name, value in (
                    ("affectedParts", self.affectedParts),
                    ("originId", self.originId),
                    ("deadline", self.deadline),
                    ("severity", self.severity),
                    ("scope", self.scope),
                )
                if value is not None and value != []
            ]
            if stated:
                raise ValueError(
                    f"{stated[0]} is stated once, by the created transition, not by "
                    f"{self.transition}"
                )
        if self.transition == "declined" and not self.reason.strip():
            raise ValueError("a declined notification gives its reason")
        return self

    @property
    def actor(self) -> str:
        """The organisation whose turn this transition is (and who must sign it)."""
        return self.sender if NOTIFICATION_ACTOR[self.transition] == "sender" else self.recipient


PAYLOAD_MODELS: dict[RecordKind, type[_EventPayload]] = {
    RecordKind.INSPECTION: InspectionPayload,
    RecordKind.DELIVERY: DeliveryPayload,
    RecordKind.COMPLAINT: ComplaintPayload,
    RecordKind.CORRECTIVE_ACTION: CorrectiveActionPayload,
    RecordKind.AUDIT: AuditPayload,
    RecordKind.IMPROVEMENT: ImprovementPayload,
    RecordKind.PART_SPEC: PartSpecPayload,
    RecordKind.GOODS_RECEIPT: GoodsReceiptPayload,
    RecordKind.AGGREGATION: AggregationPayload,
    RecordKind.TRANSFORMATION: TransformationPayload,
    RecordKind.NOTIFICATION: NotificationPayload,
}


class SignedFields(Protocol):
    """The signed struct's values as the checks hold them: a QualityRecord, or the plain
    values of a screened record (:class:`ScreenedRecord`). The count rules read them here, and
    intake builds a stored row from them (``api.intake.checked_row``)."""

    @property
    def signer(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def kind(self) -> RecordKind: ...
    @property
    def partNumber(self) -> str: ...
    @property
    def lotId(self) -> str: ...
    @property
    def eventTime(self) -> int: ...
    @property
    def quantity(self) -> int: ...
    @property
    def defects(self) -> int: ...
    @property
    def signedAt(self) -> int: ...
    @property
    def nonce(self) -> int: ...
    @property
    def salt(self) -> str: ...
    @property
    def payloadHash(self) -> str: ...


def _check_genealogy(record: SignedFields, payload: _EventPayload) -> None:
    """A genealogy record names the signer's own product and carries no defect count."""
    if record.defects != 0:
        raise InvalidRecord(
            f"{record.kind.value} records carry no defects", expected=0, got=record.defects
        )
    own = (record.subject, record.partNumber, record.lotId)
    if isinstance(payload, AggregationPayload):
        if own in {c.node for c in payload.childEPCs}:
            raise InvalidRecord(
                "an aggregation cannot contain its own parent (a cycle)", got="/".join(own)
            )
    elif isinstance(payload, TransformationPayload):
        outputs = {o.node for o in payload.outputs}
        if own not in outputs:
            raise InvalidRecord(
                "a transformation record names one of its outputs",
                expected=sorted("/".join(n) for n in outputs),
                got="/".join(own),
            )
        foreign = sorted(o.maker for o in payload.outputs if o.maker != record.subject)
        if foreign:
            raise InvalidRecord(
                "every output of a transformation is made by the signer",
                expected=record.subject,
                got=foreign[0],
            )


def _check_notification(record: SignedFields, payload: NotificationPayload) -> None:
    """The signed struct names the thread and the step: lotId = notificationId, partNumber =
    transition, quantity = affected parts, defects = 0. Its subject is the signer's own
    organisation (SELF_SUBJECT_KINDS): whether that is the party whose turn it is, is the
    state machine's question (traceability/notifications.py), answered from the record alone."""
    want = (payload.notificationId, payload.transition, len(payload.affectedParts), 0)
    got = (record.lotId, record.partNumber, record.quantity, record.defects)
    if want != got:
        raise InvalidRecord(
            "notification: lotId = notificationId, partNumber = transition, quantity = "
            "affected parts, defects = 0",
            expected=want,
            got=got,
        )


def _check_counts(record: SignedFields, payload: _EventPayload) -> None:
    """The signed counts must agree with the detail they summarise."""
    if isinstance(payload, NotificationPayload):
        _check_notification(record, payload)
    elif record.kind in GENEALOGY_KINDS:
        _check_genealogy(record, payload)
    elif isinstance(payload, InspectionPayload):
        if payload.sampleSize != record.quantity:
            raise InvalidRecord(
                "quantity must be the sample size", expected=payload.sampleSize, got=record.quantity
            )
        found = sum(d.count for d in payload.defectList)
        if found != record.defects:
            raise InvalidRecord(
                "defects must be the sum of defectList counts", expected=found, got=record.defects
            )
        if payload.sampleSize > payload.lotSize:
            raise InvalidRecord(
                "sample larger than lot", expected=f"<= {payload.lotSize}", got=payload.sampleSize
            )
    elif isinstance(payload, AuditPayload):
        total = payload.majorNonconformities + payload.minorNonconformities
        if (record.quantity, record.defects) != (total, payload.majorNonconformities):
            raise InvalidRecord(
                "audit counts: quantity = all nonconformities, defects = major ones",
                expected=(total, payload.majorNonconformities),
                got=(record.quantity, record.defects),
            )
    elif isinstance(payload, GoodsReceiptPayload):
        insp = payload.incomingInspection
        want = (payload.receivedTime, payload.quantity, insp.defects if insp else 0)
        got = (record.eventTime, record.quantity, record.defects)
        if want != got:
            raise InvalidRecord(
                "goods receipt: eventTime = receivedTime, quantity = quantity received, "
                "defects = incoming-inspection defects",
                expected=want,
                got=got,
            )
    elif isinstance(payload, PartSpecPayload):
        want_spec = (payload.effectiveTime, payload.revision)
        if (record.eventTime, record.lotId) != want_spec:
            raise InvalidRecord(
                "part spec: eventTime = effectiveTime, lotId = revision",
                expected=want_spec,
                got=(record.eventTime, record.lotId),
            )
    elif isinstance(payload, DeliveryPayload) and payload.deliveredTime != record.eventTime:
        raise InvalidRecord(
            "a delivery's eventTime is its deliveredTime",
            expected=payload.deliveredTime,
            got=record.eventTime,
        )


# -- time discipline (issue 16) ----------------------------------------------------------------

# How long before its signature an event may have happened. 30 days covers a monthly quality
# report and a late goods-receipt booking; anything older would let a signer date evidence into
# (or out of) a scoring window after the fact. Deployments set their own bound in Settings.
DEFAULT_MAX_EVENT_AGE_SECONDS = 30 * 86_400


class EventTimeOutOfBounds(InvalidRecord):
    """``eventTime`` lies too long before ``signedAt``, or after it beyond the clock skew."""

    code = "event_time_out_of_bounds"


def check_event_time(
    record: QualityRecord,
    *,
    max_age_seconds: int = DEFAULT_MAX_EVENT_AGE_SECONDS,
    skew_seconds: int = 300,
) -> None:
    """eventTime must lie in [signedAt - max_age, signedAt + skew] (raises EventTimeOutOfBounds)."""
    lo, hi = record.signedAt - max_age_seconds, record.signedAt + skew_seconds
    if not lo <= record.eventTime <= hi:
        raise EventTimeOutOfBounds(
            "eventTime must lie within the policy bound before signedAt and never after it "
            "beyond the clock skew",
            expected=f"{lo} <= eventTime <= {hi}",
            got=record.eventTime,
        )


def parse_payload(kind: RecordKind, payload: dict[str, Any]) -> _EventPayload:
    """Validate a detail payload against its kind's model (raises InvalidRecord)."""
    try:
        return PAYLOAD_MODELS[kind].model_validate(payload)
    except ValidationError as exc:
        raise InvalidRecord(f"{kind.value} payload: {_first_error(exc)}") from exc


def validated_payload(kind: RecordKind | str, payload: dict[str, Any]) -> dict[str, Any]:
    """A stored payload as every reader must see it: validated by its kind's model with the
    schema's defaults applied (an optional field left out reads as its default, never as a
    missing key). The stored payload itself stays exactly as signed. Raises InvalidRecord."""
    return parse_payload(RecordKind(kind), payload).model_dump(mode="json")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where}: {err['msg']}"


class Domain(BaseModel):
    """EIP-712 domain of every record: one ledger contract on one chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["QualityLedger"] = "QualityLedger"
    version: Literal["1"] = "1"
    chainId: Annotated[int, Field(gt=0, le=UINT64_MAX, strict=True)]
    verifyingContract: str

    @field_validator("verifyingContract")
    @classmethod
    def _address(cls, value: str) -> str:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            raise ValueError("verifyingContract must be a 20-byte hex address")
        return to_checksum(value)


class SignedRecord(BaseModel):
    """What a party submits: domain, signed struct, full detail payload and the signature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: Domain
    record: QualityRecord
    payload: dict[str, Any]
    signature: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]
    _payload_size: int = PrivateAttr(0)

    @property
    def payload_size(self) -> int:
        """Bytes of the payload's canonical JSON (what the intake size limit applies to)."""
        return self._payload_size

    @model_validator(mode="after")
    def _payload_matches(self) -> SignedRecord:
        canonical = canonical_json(self.payload)
        self._payload_size = len(canonical)
        expected = "0x" + keccak(canonical).hex()
        if expected != self.record.payloadHash:
            raise ValueError(
                f"payloadHash does not match the payload's canonical JSON "
                f"(expected {expected}, got {self.record.payloadHash})"
            )
        _check_counts(self.record, parse_payload(self.record.kind, self.payload))
        return self


def load_signed_record(data: dict[str, Any]) -> SignedRecord:
    """Validate a signed envelope from JSON, raising InvalidRecord with the first problem.

    The domain's name and version are part of what was signed: on the wire they must be
    present, never defaulted (the model's defaults are for building a domain in code)."""
    domain = data.get("domain") if isinstance(data, dict) else None
    if isinstance(domain, dict):
        missing = [
            f for f in ("name", "version", "chainId", "verifyingContract") if f not in domain
        ]
        if missing:
            raise InvalidRecord(
                f"domain.{missing[0]}: field required",
                expected=["name", "version", "chainId", "verifyingContract"],
                got=sorted(domain),
            )
    try:
        return SignedRecord.model_validate(data)
    except ValidationError as exc:
        raise InvalidRecord(_first_error(exc)) from exc


# -- the fast screen (intake, issue #21) --------------------------------------------------------
#
# ``load_signed_record`` builds four pydantic models per record (~40 us on this project's
# machines); intake spends most of its Python there. ``screen_signed_record`` answers the same
# question for the common case with plain type checks, the same compiled patterns, the same
# address helpers and the same payload models, and builds no envelope. It is conservative: it
# accepts only what ``load_signed_record`` accepts, with the very same values, and answers None
# for everything else, including every record the models would refuse: the caller then runs
# ``load_signed_record``, which says why with its own typed error. The two are compared on a
# hostile corpus in tests/ledger/test_record_screen.py and tests/api/test_intake_fast.py.

_RECORD_FIELDS = frozenset(QualityRecord.model_fields)
_ENVELOPE_FIELDS = frozenset(SignedRecord.model_fields)
_DOMAIN_FIELDS = frozenset(Domain.model_fields)
_KINDS: dict[str, RecordKind] = {kind.value: kind for kind in RecordKind}
# The patterns of the models' fields, compiled once for Python's engine. They use no construct
# whose meaning differs between it and pydantic's Rust engine (ASCII classes, no look-around),
# and fullmatch stands for the ^...$ anchors (Python's $ would also match before a final "\n").
_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_HEX32 = re.compile(HEX32_PATTERN.removeprefix("^").removesuffix("$"))
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
# Kinds whose struct must not claim more defects than units (QualityRecord._counts).
_DEFECTS_WITHIN_QUANTITY = frozenset(
    {RecordKind.INSPECTION, RecordKind.DELIVERY, RecordKind.COMPLAINT, RecordKind.GOODS_RECEIPT}
)


class ScreenedRecord(NamedTuple):
    """A signed envelope that ``load_signed_record`` accepts, as the values its models hold
    (``signer`` in EIP-55 form, ``salt`` and ``payloadHash`` lower-case), plus the canonical
    JSON of the payload. The domain is the one the screen was asked about."""

    signer: str
    subject: str
    kind: RecordKind
    partNumber: str
    lotId: str
    eventTime: int
    signedAt: int
    quantity: int
    defects: int
    nonce: int
    salt: str
    payloadHash: str
    payload: dict[str, Any]
    signature: str
    canonical_payload: bytes

    @property
    def payload_size(self) -> int:
        return len(self.canonical_payload)


def _identifier(value: object) -> bool:
    return (
        type(value) is str and 0 < len(value) <= ID_MAX_LENGTH and _ID.fullmatch(value) is not None
    )


def _uint(value: object, upper: int) -> bool:
    # type() and not isinstance(): a bool is an int, and the models refuse it (strict).
    return type(value) is int and 0 <= value <= upper


def screen_signed_record(data: object, domain: Domain) -> ScreenedRecord | None:
    """The record's values if ``load_signed_record(data)`` would accept it and its domain is
    ``domain``; None otherwise (then ask ``load_signed_record`` and compare domains: they give
    the answer and its typed error). Never raises for any input."""
    if type(data) is not dict or data.keys() != _ENVELOPE_FIELDS:
        return None
    dom, rec, payload, signature = (
        data["domain"],
        data["record"],
        data["payload"],
        data["signature"],
    )
    if (
        type(dom) is not dict
        or dom.keys() != _DOMAIN_FIELDS
        or type(rec) is not dict
        or rec.keys() != _RECORD_FIELDS
        or type(payload) is not dict
        or type(signature) is not str
        or _SIGNATURE.fullmatch(signature) is None
    ):
        return None
    # The domain: exactly this deployment's, in any letter case of the contract address (the
    # model checksums it; the deployment's address is already in EIP-55 form).
    name, version, chain_id, contract = (
        dom["name"],
        dom["version"],
        dom["chainId"],
        dom["verifyingContract"],
    )
    if (
        type(name) is not str
        or name != domain.name
        or type(version) is not str
        or version != domain.version
        or type(chain_id) is not int
        or chain_id != domain.chainId
        or type(contract) is not str
        or not contract.isascii()
        or len(contract) != 42
        or not contract.startswith("0x")
        or contract[2:].lower() != domain.verifyingContract[2:].lower()
    ):
        return None
    signer, kind_name, salt, payload_hash = (
        rec["signer"],
        rec["kind"],
        rec["salt"],
        rec["payloadHash"],
    )
    subject, part_number, lot_id = rec["subject"], rec["partNumber"], rec["lotId"]
    event_time, signed_at, nonce = rec["eventTime"], rec["signedAt"], rec["nonce"]
    quantity, defects = rec["quantity"], rec["defects"]
    if (
        type(signer) is not str
        or _HEX40.fullmatch(signer) is None
        or not is_valid_checksum(signer)
        or type(kind_name) is not str
        or kind_name not in _KINDS
        or not _identifier(subject)
        or not _identifier(part_number)
        or not _identifier(lot_id)
        or not _uint(event_time, UINT64_MAX)
        or not _uint(signed_at, UINT64_MAX)
        or not _uint(nonce, UINT64_MAX)
        or not _uint(quantity, UINT32_MAX)
        or not _uint(defects, UINT32_MAX)
        or type(salt) is not str
        or _HEX32.fullmatch(salt) is None
        or type(payload_hash) is not str
        or _HEX32.fullmatch(payload_hash) is None
    ):
        return None
    kind = _KINDS[kind_name]
    if kind in _DEFECTS_WITHIN_QUANTITY and defects > quantity:
        return None
    try:
        canonical = canonical_json_fast(payload)
    except (LedgerError, ValueError, RecursionError):
        # What the exact path refuses (a non-finite number, a lone surrogate, nesting deeper
        # than the interpreter's stack): load_signed_record says so in its own way.
        return None
    payload_hash = payload_hash.lower()
    if keccak(canonical).hex() != payload_hash[2:]:
        return None
    screened = ScreenedRecord(
        to_checksum(signer),
        subject,
        kind,
        part_number,
        lot_id,
        event_time,
        signed_at,
        quantity,
        defects,
        nonce,
        salt.lower(),
        payload_hash,
        payload,
        signature,
        canonical,
    )
    try:
        _check_counts(screened, PAYLOAD_MODELS[kind].model_validate(payload))
    except (ValidationError, InvalidRecord):
        return None
    return screened
