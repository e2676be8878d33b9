"""A seeded supplier-population simulator that produces evidence the way suppliers would.

Each supplier has a latent *truth* (process capability, drift, delivery reliability, how fast it
answers complaints and closes 8Ds, how much it shares) that no feature sees directly. From it the
simulator produces, month by month:

* production lots of several parts, each with characteristics and spec limits; every sampled unit
  of the key characteristic is measured, so defects and Cpk are *computed from measurements*
  (a subgroup of the values is kept in the record, as an SPC subgroup would be);
* deliveries (promised vs actual), OEM complaints from escaped defectives, 8D corrective actions
  with D0..D8 dates, third-party audits with major/minor nonconformities and audit closures;
* field incidents, whose rate follows the defectives a supplier actually ships: the label the
  credit model learns to predict.

Two sinks share the one generator: ``simulate_population`` signs every record through
``ledger.signing.sign_record`` with one key per organisation (suppliers, an OEM, an auditor), and
``simulate_history`` skips signing (training needs ~10^6 records) but yields the same payloads,
so features are computed by the same code from the same structures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from eth_hash.auto import keccak

from ledger.evidence import DAY, EvidenceItem, item_from_signed
from ledger.keys import Signer
from ledger.records import KIND_SIGNER_ROLES, Domain, RecordKind, Role, SignedRecord
from ledger.signing import sign_record

MONTH = 30 * DAY  # the simulator's month; windows and horizons are stated in days anyway
SIM_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: a fixed start so seeded runs are identical
OEM_ID = "OEM-0001"
AUDITOR_ID = "AUD-0001"
# Anvil's default chain id and a fixed placeholder ledger address: the simulator signs for a
# domain the caller may override with the real deployment's.
SIM_DOMAIN = Domain(chainId=31337, verifyingContract="0x" + "5a" * 20)
# Values kept per characteristic and lot: an SPC subgroup (AIAG SPC manual uses 4-5; we keep 10
# so a single lot's mean and spread are usable for responsibility analysis).
SUBGROUP = 10
# ANSI/ASQ Z1.4 general inspection level II sample sizes by lot size (code letters J, K, L).
AQL_SAMPLE = ((1200, 80), (3200, 125), (10_000, 200))
LOT_SIZES = (800, 1500, 3000, 5000)
FL_ROUNDS_PER_MONTH = 4  # one federated round a week (federated/ schedules weekly rounds)
ANCHOR_DELAY = 600  # seconds from signing to a confirmed batch: the anchorer's 10-minute cadence


@dataclass(frozen=True)
class CharSpec:
    """A characteristic with its specification limits; ``key`` ones are scored by Cpk."""

    name: str
    uom: str
    lsl: float | None
    usl: float | None
    key: bool

    @property
    def center(self) -> float:
        if self.lsl is not None and self.usl is not None:
            return (self.lsl + self.usl) / 2
        # One-sided limit: the process is run at a nominal 4 half-widths inside it.
        if self.usl is not None:
            return self.usl - 4 * self.half_tol
        return self._lower_limit() + 4 * self.half_tol

    @property
    def half_tol(self) -> float:
        if self.lsl is not None and self.usl is not None:
            return (self.usl - self.lsl) / 2
        return abs(self.usl if self.usl is not None else self._lower_limit()) * 0.05

    def _lower_limit(self) -> float:
        if self.lsl is None:
            raise ValueError(f"characteristic {self.name} has neither an upper nor a lower limit")
        return self.lsl


# Part families: a key characteristic and a secondary one, with realistic limits and UN/CEFACT
# unit codes (MMT mm, CEL degC, NU N*m, 4H micrometre, C62 one/dimensionless).
PART_FAMILIES: tuple[tuple[str, tuple[CharSpec, ...]], ...] = (
    (
        "HSG",
        (
            CharSpec("bore_diameter", "MMT", 24.95, 25.05, True),
            CharSpec("flatness", "MMT", None, 0.05, False),
        ),
    ),
    (
        "BRK",
        (
            CharSpec("torque", "NU", 11.0, 13.0, True),
            CharSpec("coating_thickness", "4H", 8.0, 14.0, False),
        ),
    ),
    (
        "SEP",
        (
            CharSpec("separator_thickness", "4H", 11.4, 12.6, True),
            CharSpec("porosity", "C62", 0.38, 0.46, False),
        ),
    ),
    (
        "CAT",
        (
            CharSpec("sintering_temp", "CEL", 890.0, 910.0, True),
            CharSpec("particle_d50", "4H", 9.0, 13.0, False),
        ),
    ),
    (
        "PCB",
        (
            CharSpec("solder_height", "MMT", 0.08, 0.16, True),
            CharSpec("trace_width", "MMT", 0.18, 0.22, False),
        ),
    ),
    (
        "SHF",
        (
            CharSpec("shaft_diameter", "MMT", 11.98, 12.02, True),
            CharSpec("roundness", "MMT", None, 0.008, False),
        ),
    ),
)


@dataclass(frozen=True)
class PartSpec:
    part_number: str
    family: str
    characteristics: tuple[CharSpec, ...]
    capability: float  # latent Cpk of this part's key characteristic when centred


@dataclass(frozen=True)
class SupplierTruth:
    """What is really going on at a supplier. Features never read this; tests and labels do."""

    supplier_id: str
    culture: float  # latent quality culture, standard normal: drives response, sharing, audits
    capability: float  # latent Cpk of the key characteristics when the process is centred
    drift_per_month: float  # mean shift in sigma per month between resets (tool wear, kiln ageing)
    reset_months: int  # maintenance interval that re-centres the process
    drift_phase: float  # months since the last reset at month 0
    drift_sign: int
    on_time_prob: float
    response_hours_median: float
    closure_days_median: float
    sharing: float  # probability a lot's inspection record is submitted
    fl_rate: float  # probability of joining a federated round
    attr_ppm: float  # attribute (visual) defect rate
    lots_per_month: int
    parts: tuple[PartSpec, ...]
    drift_start: float = -math.inf  # no drift before this month (a scenario's sudden change)

    def offset_sigma(self, month: float) -> float:
        """Process-mean offset from centre, in sigma, at fractional ``month``."""
        if month < self.drift_start:
            return 0.0
        age = (self.drift_phase + month) % self.reset_months
        return self.drift_sign * self.drift_per_month * age

    def key_cpk(self, part: PartSpec, month: float) -> float:
        return part.capability - abs(self.offset_sigma(month)) / 3

    def out_of_spec(self, part: PartSpec, month: float) -> float:
        """True fraction of the key characteristic outside its limits at ``month``."""
        z = 3 * part.capability
        d = self.offset_sigma(month)
        return _phi(-(z - d)) + _phi(-(z + d))


@dataclass(frozen=True)
class FieldIncident:
    """A failure found in the field, caused by ``supplier_id``'s part (the simulator knows)."""

    incident_id: str
    supplier_id: str
    part_number: str
    lot_ids: tuple[str, ...]
    occurred_at: int


@dataclass
class Population:
    seed: int
    start: int
    months: int
    domain: Domain
    suppliers: list[SupplierTruth]
    signers: dict[str, Signer]
    roles: dict[str, Role]
    items: list[EvidenceItem]
    records: list[SignedRecord] = field(default_factory=list)
    field_incidents: list[FieldIncident] = field(default_factory=list)
    fl_rounds: dict[str, np.ndarray] = field(default_factory=dict)
    _nonces: dict[str, int] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + self.months * MONTH

    def truth(self, supplier_id: str) -> SupplierTruth:
        return next(s for s in self.suppliers if s.supplier_id == supplier_id)

    def fl_participation(self, supplier_id: str, as_of: int, window_days: int) -> float:
        """Share of the federated rounds in the window the supplier took part in."""
        rounds = self.fl_rounds.get(supplier_id)
        if rounds is None:
            return 0.0
        last = min(int((as_of - self.start) // MONTH), len(rounds))
        first = max(0, last - max(1, round(window_days / 30)))
        if last <= first:
            return 0.0
        return float(rounds[first:last].sum() / (FL_ROUNDS_PER_MONTH * (last - first)))

    def incident_label(self, supplier_id: str, window_end: int, horizon_days: int) -> bool:
        """Did a field incident caused by this supplier occur in (window_end, +horizon]?"""
        stop = window_end + horizon_days * DAY
        return any(
            f.supplier_id == supplier_id and window_end < f.occurred_at <= stop
            for f in self.field_incidents
        )

    def next_nonce(self, org: str) -> int:
        self._nonces[org] = self._nonces.get(org, 0) + 1
        return self._nonces[org]

    def sign(self, org: str, *, anchored: bool = True, **fields: Any) -> EvidenceItem:
        """Sign one more record as ``org`` (e.g. an improvement in a test) and add it."""
        signed = sign_record(
            self.signers[org],
            self.domain,
            nonce=self.next_nonce(org),
            salt="0x" + keccak(f"{org}:{len(self.items)}".encode()).hex(),
            **fields,
        )
        item = item_from_signed(
            signed,
            self.roles[org].value,
            anchored=anchored,
            anchored_at=signed.record.signedAt + ANCHOR_DELAY if anchored else None,
        )
        self.records.append(signed)
        self.items.append(item)
        return item


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def org_signer(seed: int, org: str) -> Signer:
    """Deterministic simulation key per organisation (never a real secret)."""
    return Signer(keccak(f"qledger-sim:{seed}:{org}".encode()))


def draw_truth(
    rng: np.random.Generator, supplier_id: str, n_parts: int | None = None
) -> SupplierTruth:
    """Draw one supplier's latent truth. Correlations follow the culture factor."""
    culture = float(rng.standard_normal())
    # Latent Cpk: median ~1.4 with a long lower tail; docs/domain.md's 1.33 ongoing requirement sits
    # near the middle so the population holds both capable and incapable lines.
    capability = float(
        np.clip(math.exp(math.log(1.4) + 0.22 * rng.standard_normal() + 0.06 * culture), 0.55, 2.6)
    )
    drifting = rng.random() < 0.45 - 0.1 * math.tanh(culture)
    n_parts = n_parts or int(rng.integers(2, 5))
    reset = int(rng.integers(4, 13))
    families = rng.choice(len(PART_FAMILIES), size=n_parts, replace=False)
    parts = tuple(
        PartSpec(
            part_number=f"{supplier_id}-{PART_FAMILIES[f][0]}{k + 1}",
            family=PART_FAMILIES[f][0],
            characteristics=PART_FAMILIES[f][1],
            capability=float(
                np.clip(capability * math.exp(0.08 * rng.standard_normal()), 0.5, 3.0)
            ),
        )
        for k, f in enumerate(families)
    )
    return SupplierTruth(
        supplier_id=supplier_id,
        culture=culture,
        capability=capability,
        # Tool wear / kiln ageing: the mean walks 0.5-2.5 sigma off centre before maintenance
        # re-centres it.
        drift_per_month=float(rng.uniform(0.5, 2.5)) / reset if drifting else 0.0,
        reset_months=reset,
        drift_phase=float(rng.uniform(0, 12)),
        drift_sign=1 if rng.random() < 0.5 else -1,
        on_time_prob=float(
            np.clip(0.93 + 0.04 * culture + 0.04 * rng.standard_normal(), 0.55, 0.999)
        ),
        # docs/domain.md: complaint response expected within 24-48 h; 8D closure industry average
        # ~11.7 days, best ~3, 30 days common practice. Medians spread around those figures.
        response_hours_median=float(
            np.clip(math.exp(math.log(26) - 0.45 * culture + 0.35 * rng.standard_normal()), 2, 400)
        ),
        closure_days_median=float(
            np.clip(math.exp(math.log(11.7) - 0.4 * culture + 0.35 * rng.standard_normal()), 2, 120)
        ),
        sharing=float(np.clip(0.88 + 0.08 * culture + 0.06 * rng.standard_normal(), 0.3, 1.0)),
        fl_rate=float(np.clip(0.55 + 0.25 * culture + 0.2 * rng.standard_normal(), 0.0, 1.0)),
        attr_ppm=float(math.exp(math.log(120) - 0.4 * culture + 0.5 * rng.standard_normal())),
        lots_per_month=int(rng.integers(2, 5)),
        parts=parts,
    )


# Emit callback: (org, kind, subject, part, lot, event_time, signed_at, quantity, defects,
# payload) -> struct hash of the new record.
Emit = Callable[[str, RecordKind, str, str, str, int, int, int, int, dict[str, Any]], str]

# OEM detection of escaped defectives per lot (complaints) and field-incident rate per shipped
# defective; tuned so a Cpk-1.33 line sees a complaint every few years and a Cpk-0.8 line several
# a month (docs/domain.md: Cpk 1.33 ~ 64 ppm; a poor line runs 800+ ppm).
COMPLAINT_PER_DEFECTIVE = 0.01
FIELD_RATE = 0.012
FIELD_EXPONENT = 0.6  # diminishing: many defectives in one lot are one incident, not many


def _sample_size(lot_size: int) -> int:
    for limit, n in AQL_SAMPLE:
        if lot_size <= limit:
            return n
    return AQL_SAMPLE[-1][1]


def _outside(values: np.ndarray, spec: CharSpec) -> int:
    """How many measured units fall outside the specification limits."""
    out = np.zeros(values.shape, dtype=bool)
    if spec.lsl is not None:
        out |= values < spec.lsl
    if spec.usl is not None:
        out |= values > spec.usl
    return int(out.sum())


def _round(values: np.ndarray, spec: CharSpec) -> list[float]:
    # Gauge resolution of 1/1000 of the tolerance, so values read like a gauge's.
    decimals = max(0, 3 - math.floor(math.log10(2 * spec.half_tol)))
    return [float(v) for v in np.round(values, decimals)]


def _simulate_supplier(
    truth: SupplierTruth,
    rng: np.random.Generator,
    start: int,
    months: int,
    emit: Emit,
    incidents: list[FieldIncident],
    fl_rounds: dict[str, np.ndarray],
) -> None:
    sid = truth.supplier_id
    # The OEM's draws (which lots it inspects at receipt, what it finds) come from their own
    # stream, so adding OEM-side evidence left every supplier-side draw as it was.
    oem_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])  # type: ignore[attr-defined]
    for part in truth.parts:
        _part_spec(emit, sid, part, start)
    fl_rounds[sid] = rng.binomial(FL_ROUNDS_PER_MONTH, truth.fl_rate, size=months)
    audit_phase = int(rng.integers(0, 6))
    lot_seq = 0
    complaint_seq = 0
    last_lots: dict[str, list[str]] = {}
    for month in range(months):
        m0 = start + month * MONTH
        shipped_defectives = 0.0
        for part in truth.parts:
            key, other = part.characteristics
            for _ in range(truth.lots_per_month):
                lot_seq += 1
                lot_id = f"{sid}-L{lot_seq:05d}"
                produced = m0 + int(rng.integers(0, MONTH - 2 * DAY))
                t_month = month + (produced - m0) / MONTH
                lot_size = LOT_SIZES[int(rng.integers(len(LOT_SIZES)))]
                n = _sample_size(lot_size)
                sigma = key.half_tol / (3 * part.capability)
                mean = key.center + truth.offset_sigma(t_month) * sigma
                key_values = rng.normal(mean, sigma, size=n)
                other_sigma = other.half_tol / (3 * part.capability * 1.3)
                other_values = rng.normal(other.center, other_sigma, size=SUBGROUP)
                key_out = _outside(key_values, key)
                other_out = _outside(other_values, other)
                attr = int(rng.binomial(n, min(1.0, truth.attr_ppm * 1e-6)))
                defect_list = [
                    {"code": f"DIM-{key.name}", "count": key_out, "severity": "major"},
                    {"code": f"DIM-{other.name}", "count": other_out, "severity": "minor"},
                    {"code": "VIS-SURFACE", "count": attr, "severity": "minor"},
                ]
                defect_list = [d for d in defect_list if d["count"]]
                defects = key_out + other_out + attr
                inspected = produced + DAY
                if rng.random() < truth.sharing:
                    payload = {
                        "disposition": "conformant" if defects == 0 else "non_conformant",
                        "inspectionType": "final",
                        "readPoint": f"{sid}-QA",
                        "lotSize": lot_size,
                        "sampleSize": n,
                        "defectList": defect_list,
                        "sensorReport": [
                            {
                                "type": key.name,
                                "uom": key.uom,
                                "lsl": key.lsl,
                                "usl": key.usl,
                                "key": True,
                                "values": _round(key_values[:SUBGROUP], key),
                            },
                            {
                                "type": other.name,
                                "uom": other.uom,
                                "lsl": other.lsl,
                                "usl": other.usl,
                                "key": False,
                                "values": _round(other_values, other),
                            },
                        ],
                    }
                    emit(
                        sid,
                        RecordKind.INSPECTION,
                        sid,
                        part.part_number,
                        lot_id,
                        inspected,
                        inspected + 3600,
                        n,
                        defects,
                        payload,
                    )
                promised = produced + 5 * DAY
                late = rng.random() > truth.on_time_prob
                delay = int(rng.integers(1, 11)) * DAY if late else -int(rng.integers(0, 3)) * DAY
                delivered = promised + delay + int(rng.integers(0, 8 * 3600))
                if delivered > promised and not late:
                    delivered = promised
                emit(
                    sid,
                    RecordKind.DELIVERY,
                    sid,
                    part.part_number,
                    lot_id,
                    delivered,
                    delivered + 1800,
                    lot_size,
                    0,
                    {
                        "bizStep": "shipping",
                        "disposition": "in_transit",
                        "readPoint": f"{sid}-DOCK",
                        "purchaseOrder": f"PO-{sid}-{month:03d}",
                        "promisedTime": promised,
                        "deliveredTime": delivered,
                    },
                )
                _goods_receipt(
                    emit,
                    oem_rng,
                    sid,
                    part,
                    lot_id,
                    f"PO-{sid}-{month:03d}",
                    promised,
                    delivered,
                    lot_size,
                    mean,
                    sigma,
                    truth.out_of_spec(part, t_month) + truth.attr_ppm * 1e-6,
                )
                # Defectives that left the plant: the line's true rate (inspection samples, it
                # does not sort) over the lot.
                p_defective = truth.out_of_spec(part, t_month) + truth.attr_ppm * 1e-6
                escaped = lot_size * p_defective
                shipped_defectives += escaped
                last_lots.setdefault(part.part_number, []).append(lot_id)
                if rng.random() < 1 - math.exp(-COMPLAINT_PER_DEFECTIVE * escaped):
                    complaint_seq += 1
                    found = max(1, min(lot_size, int(rng.poisson(max(1.0, escaped * 0.3)))))
                    disruption = rng.random() < 0.12 + 0.1 * min(1.0, escaped / 100)
                    severity = (
                        "critical" if disruption else ("major" if rng.random() < 0.5 else "minor")
                    )
                    _complaint(
                        truth,
                        rng,
                        emit,
                        f"CMP-{sid}-{complaint_seq:04d}",
                        part,
                        lot_id,
                        delivered + int(rng.integers(2, 20)) * DAY,
                        lot_size,
                        found,
                        severity,
                        disruption,
                        f"DIM-{key.name}",
                        "OEM-LINE",
                        start + months * MONTH,
                    )
        # Field incidents follow the defectives actually shipped this month, and recur more where
        # corrective action is weak (culture).
        rate = FIELD_RATE * shipped_defectives**FIELD_EXPONENT * math.exp(-0.35 * truth.culture)
        for _ in range(int(rng.poisson(rate))):
            part = truth.parts[int(rng.integers(len(truth.parts)))]
            lots = tuple(last_lots.get(part.part_number, [])[-2:])
            occurred = m0 + int(rng.integers(0, MONTH))
            complaint_seq += 1
            cid = f"CMP-{sid}-{complaint_seq:04d}"
            incidents.append(
                FieldIncident(
                    f"INC-{sid}-{complaint_seq:04d}", sid, part.part_number, lots, occurred
                )
            )
            _complaint(
                truth,
                rng,
                emit,
                cid,
                part,
                lots[-1] if lots else f"{sid}-FIELD",
                occurred,
                1,
                1,
                "critical",
                True,
                "FIELD-FAILURE",
                "FIELD",
                start + months * MONTH,
            )
        if month % 6 == audit_phase:
            _audit(truth, rng, emit, m0 + int(rng.integers(0, MONTH)), month)


def _complaint(
    truth: SupplierTruth,
    rng: np.random.Generator,
    emit: Emit,
    cid: str,
    part: PartSpec,
    lot_id: str,
    when: int,
    quantity: int,
    found: int,
    severity: str,
    disruption: bool,
    code: str,
    read_point: str,
    end: int,
) -> None:
    sid = truth.supplier_id
    base = {
        "complaintId": cid,
        "severity": severity,
        "defectCode": code,
        "customerDisruption": disruption,
        "readPoint": read_point,
    }
    emit(
        OEM_ID,
        RecordKind.COMPLAINT,
        sid,
        part.part_number,
        lot_id,
        when,
        when + 600,
        quantity,
        found,
        {**base, "status": "open"},
    )
    hours = truth.response_hours_median * math.exp(0.5 * rng.standard_normal())
    response = when + int(3600 * hours)
    closure_days = truth.closure_days_median * math.exp(0.45 * rng.standard_normal())
    planned = when + int(closure_days * DAY)
    # Disciplines spread over the closure time; D3 containment comes soon after D0. Nothing can
    # be done before the first response.
    fractions = (0.0, 0.02, 0.04, 0.08, 0.35, 0.6, 0.8, 0.95, 1.0)
    dates = {
        f"D{i}": max(response, when + int(f * (planned - when))) for i, f in enumerate(fractions)
    }
    closed = dates["D8"]
    # The first answer is an 8D record signed at the response: its anchoring is the response
    # time the score reads (chain time), whatever dates it carries.
    if response <= end:
        emit(
            sid,
            RecordKind.CORRECTIVE_ACTION,
            sid,
            part.part_number,
            lot_id,
            response,
            response + 600,
            0,
            0,
            {
                "complaintId": cid,
                "status": "open",
                "firstResponseTime": response,
                "eightD": {d: t for d, t in dates.items() if t <= response},
            },
        )
    if closed <= end:
        emit(
            sid,
            RecordKind.CORRECTIVE_ACTION,
            sid,
            part.part_number,
            lot_id,
            closed,
            closed + 600,
            0,
            0,
            {
                "complaintId": cid,
                "status": "closed",
                "firstResponseTime": response,
                "eightD": dates,
                "rootCause": "simulated root cause",
            },
        )
        accepted = closed + int(rng.integers(1, 4)) * DAY
        if accepted <= end:
            emit(
                OEM_ID,
                RecordKind.COMPLAINT,
                sid,
                part.part_number,
                lot_id,
                accepted,
                accepted + 600,
                quantity,
                found,
                {**base, "status": "closed"},
            )


# Share of received lots the OEM samples at its incoming inspection (skip-lot inspection, as
# ISO 2859-3 allows for suppliers with a record), its sample size and the key-characteristic
# values it keeps (an SPC subgroup of 5, AIAG SPC manual).
OEM_INSPECT_SHARE = 0.3
OEM_SAMPLE = 50
OEM_SUBGROUP = 5


def _part_spec(emit: Emit, sid: str, part: PartSpec, start: int) -> None:
    """The OEM's control plan for ``part``: limits and the key (SC) flag, effective from start."""
    chars = [
        {
            "type": c.name,
            "uom": c.uom,
            **({"lsl": c.lsl} if c.lsl is not None else {}),
            **({"usl": c.usl} if c.usl is not None else {}),
            **({"specialCharacteristic": "SC"} if c.key else {}),
        }
        for c in part.characteristics
    ]
    emit(
        OEM_ID,
        RecordKind.PART_SPEC,
        sid,
        part.part_number,
        "rev-A",
        start,
        start + 600,
        len(chars),
        0,
        {"revision": "rev-A", "effectiveTime": start, "characteristics": chars},
    )


def _goods_receipt(
    emit: Emit,
    rng: np.random.Generator,
    sid: str,
    part: PartSpec,
    lot_id: str,
    order: str,
    promised: int,
    received: int,
    quantity: int,
    key_mean: float,
    key_sigma: float,
    p_defective: float,
) -> None:
    """The OEM's goods receipt of a delivered lot, with an incoming inspection on some lots."""
    payload: dict[str, Any] = {
        "purchaseOrder": order,
        "promisedTime": promised,
        "receivedTime": received,
        "quantity": quantity,
        "readPoint": "OEM-DOCK",
    }
    defects = 0
    if rng.random() < OEM_INSPECT_SHARE:
        key = part.characteristics[0]
        defects = int(rng.binomial(OEM_SAMPLE, min(1.0, p_defective)))
        values = rng.normal(key_mean, key_sigma, size=OEM_SUBGROUP)
        payload["incomingInspection"] = {
            "sampleSize": OEM_SAMPLE,
            "defectList": (
                [{"code": f"DIM-{key.name}", "count": defects, "severity": "major"}]
                if defects
                else []
            ),
            "sensorReport": [{"type": key.name, "uom": key.uom, "values": _round(values, key)}],
        }
        payload["disposition"] = "non_conformant" if defects else "conformant"
    emit(
        OEM_ID,
        RecordKind.GOODS_RECEIPT,
        sid,
        part.part_number,
        lot_id,
        received,
        received + 1800,
        quantity,
        defects,
        payload,
    )


def _audit(
    truth: SupplierTruth, rng: np.random.Generator, emit: Emit, when: int, month: int
) -> None:
    sid = truth.supplier_id
    gap = max(0.0, 1.33 - min(truth.key_cpk(p, month) for p in truth.parts))
    majors = int(rng.poisson(0.08 + 1.2 * gap + 0.25 * max(0.0, -truth.culture)))
    minors = int(rng.poisson(0.8 + 2.5 * gap + 0.8 * max(0.0, -truth.culture)))
    findings = [
        {
            "id": f"F{k + 1}",
            "severity": "major" if k < majors else "minor",
            "clause": "8.5.1" if k < majors else "7.5.3",
        }
        for k in range(majors + minors)
    ]
    part = truth.parts[0]
    audit_hash = emit(
        AUDITOR_ID,
        RecordKind.AUDIT,
        sid,
        part.part_number,
        f"{sid}-AUDIT-{month}",
        when,
        when + DAY,
        majors + minors,
        majors,
        {
            "standard": "IATF16949",
            "auditType": "process",
            "majorNonconformities": majors,
            "minorNonconformities": minors,
            "findings": findings,
            "readPoint": f"{sid}-PLANT",
        },
    )
    # A supplier with a good culture gets its major findings closed and verified within ~2 months.
    if majors and rng.random() < 0.5 + 0.3 * math.tanh(truth.culture):
        closed_at = when + int(rng.integers(20, 70)) * DAY
        emit(
            AUDITOR_ID,
            RecordKind.IMPROVEMENT,
            sid,
            part.part_number,
            f"{sid}-AUDIT-{month}",
            closed_at,
            closed_at + 600,
            0,
            0,
            {
                "remedies": [audit_hash],
                "evidenceType": "audit_closure",
                "closesNonconformities": [f["id"] for f in findings if f["severity"] == "major"],
                "summary": "major nonconformities closed and verified on site",
            },
        )


def _run(
    truths: Sequence[SupplierTruth],
    rngs: Sequence[np.random.Generator],
    start: int,
    months: int,
    emit: Emit,
) -> tuple[list[FieldIncident], dict[str, np.ndarray]]:
    incidents: list[FieldIncident] = []
    fl_rounds: dict[str, np.ndarray] = {}
    for truth, rng in zip(truths, rngs, strict=True):
        _simulate_supplier(truth, rng, start, months, emit, incidents, fl_rounds)
    return incidents, fl_rounds


def _draw_population(
    seed: int, n_suppliers: int
) -> tuple[list[SupplierTruth], list[np.random.Generator]]:
    # One independent stream per supplier, so supplier k is the same whatever n_suppliers is.
    streams = np.random.SeedSequence(seed).spawn(n_suppliers)
    rngs = [np.random.default_rng(s) for s in streams]
    truths = [draw_truth(rng, f"SUP-{k + 1:05d}") for k, rng in enumerate(rngs)]
    return truths, rngs


def simulate_population(
    n_suppliers: int,
    months: int = 12,
    seed: int = 0,
    *,
    domain: Domain = SIM_DOMAIN,
    start: int = SIM_EPOCH,
    truths: Sequence[SupplierTruth] | None = None,
) -> Population:
    """Simulate ``n_suppliers`` over ``months`` and sign every record with the orgs' keys.

    Every record is anchored ``ANCHOR_DELAY`` seconds after signing (tests flip that per item).
    Pass ``truths`` to simulate hand-made suppliers (e.g. one that drifts).
    """
    if truths is None:
        truths, rngs = _draw_population(seed, n_suppliers)
    else:
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(truths))]
    orgs = [t.supplier_id for t in truths] + [OEM_ID, AUDITOR_ID]
    roles = {t.supplier_id: Role.SUPPLIER for t in truths}
    roles[OEM_ID] = Role.OEM
    roles[AUDITOR_ID] = Role.AUDITOR
    pop = Population(
        seed=seed,
        start=start,
        months=months,
        domain=domain,
        suppliers=list(truths),
        signers={o: org_signer(seed, o) for o in orgs},
        roles=roles,
        items=[],
    )
    salt_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))

    def emit(
        org: str,
        kind: RecordKind,
        subject: str,
        part: str,
        lot: str,
        event_time: int,
        signed_at: int,
        quantity: int,
        defects: int,
        payload: dict[str, Any],
    ) -> str:
        assert roles[org] in KIND_SIGNER_ROLES[kind], (kind, org)
        signed = sign_record(
            pop.signers[org],
            domain,
            subject=subject,
            kind=kind,
            part_number=part,
            lot_id=lot,
            event_time=event_time,
            signed_at=signed_at,
            quantity=quantity,
            defects=defects,
            nonce=pop.next_nonce(org),
            payload=payload,
            salt="0x" + salt_rng.bytes(32).hex(),
        )
        item = item_from_signed(
            signed, roles[org].value, anchored=True, anchored_at=signed_at + ANCHOR_DELAY
        )
        pop.records.append(signed)
        pop.items.append(item)
        return item.struct_hash

    pop.field_incidents, pop.fl_rounds = _run(truths, rngs, start, months, emit)
    return pop


def simulate_history(
    n_suppliers: int,
    months: int,
    seed: int,
    *,
    start: int = SIM_EPOCH,
) -> Population:
    """The same simulation without signatures, for training sets of thousands of suppliers.

    Items carry a synthetic struct hash (unique per record) and are all anchored; payloads,
    counts and times are exactly what ``simulate_population`` would sign.
    """
    truths, rngs = _draw_population(seed, n_suppliers)
    roles = {t.supplier_id: Role.SUPPLIER for t in truths}
    roles[OEM_ID] = Role.OEM
    roles[AUDITOR_ID] = Role.AUDITOR
    pop = Population(
        seed=seed,
        start=start,
        months=months,
        domain=SIM_DOMAIN,
        suppliers=list(truths),
        signers={},
        roles=roles,
        items=[],
    )
    counter = [0]

    def emit(
        org: str,
        kind: RecordKind,
        subject: str,
        part: str,
        lot: str,
        event_time: int,
        signed_at: int,
        quantity: int,
        defects: int,
        payload: dict[str, Any],
    ) -> str:
        counter[0] += 1
        struct_hash = f"0x{seed & 0xFFFFFFFF:08x}{counter[0]:056x}"
        pop.items.append(
            EvidenceItem(
                struct_hash,
                kind.value,
                subject,
                org,
                roles[org].value,
                part,
                lot,
                event_time,
                signed_at,
                quantity,
                defects,
                payload,
                True,
                signed_at + ANCHOR_DELAY,
            )
        )
        return struct_hash

    pop.field_incidents, pop.fl_rounds = _run(truths, rngs, start, months, emit)
    return pop


@dataclass(frozen=True)
class IncidentScenario:
    """A field incident on a product built from one lot of each of several suppliers."""

    population: Population
    incident_id: str
    product: str
    occurred_at: int
    lots: tuple[tuple[str, str, str], ...]  # (supplier id, part number, lot id)
    drifted: str  # the supplier whose lots drifted (ground truth)


def simulate_incident(
    n_suppliers: int = 10,
    seed: int = 0,
    *,
    drifted_index: int = 0,
    months: int = 3,
    domain: Domain = SIM_DOMAIN,
) -> IncidentScenario:
    """Suppliers of one product; one of them drifts badly in the last month before the incident.

    All suppliers are capable (latent Cpk 1.4-1.9) and share every lot, so the evidence alone
    must tell which one drifted.
    """
    if not 0 <= drifted_index < n_suppliers:
        raise ValueError(f"drifted_index {drifted_index} is not one of {n_suppliers} suppliers")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1C1D]))
    truths = []
    for k in range(n_suppliers):
        base = draw_truth(rng, f"SUP-{k + 1:05d}", n_parts=1)
        part = replace(base.parts[0], capability=float(rng.uniform(1.4, 1.9)))
        truth = replace(
            base,
            parts=(part,),
            capability=part.capability,
            sharing=1.0,
            drift_per_month=0.0,
            lots_per_month=3,
        )
        if k == drifted_index:
            # Drift starts just before the last month: the offset reaches ~3 sigma at the end.
            truth = replace(
                truth,
                drift_per_month=3.0,
                reset_months=months * 4,
                drift_start=months - 1.0,
                drift_phase=1.0 - months,
                drift_sign=1,
            )
        truths.append(truth)
    pop = simulate_population(n_suppliers, months, seed, domain=domain, truths=truths)
    lots = []
    for truth in truths:
        pn = truth.parts[0].part_number
        last = max(
            (it for it in pop.items if it.kind == "delivery" and it.part_number == pn),
            key=lambda it: it.event_time,
        )
        lots.append((truth.supplier_id, pn, last.lot_id))
    return IncidentScenario(
        pop, f"INC-{seed:04d}", "EV-PACK-A", pop.end, tuple(lots), truths[drifted_index].supplier_id
    )
