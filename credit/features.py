"""Credit features from anchored evidence over a window, with units, direction and definitions.

Only evidence that *counts* enters (``credit.evidence.counts_as_of``: anchored, confirmed by the
scoring instant, signed by the role allowed for its kind). Improvement records are applied first
(``credit.repair``). Missing evidence is never read as perfect: each feature states what value it
takes when its evidence is absent and why, and the vector lists which features were missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from credit.evidence import DAY, EvidenceItem, evidence_root, usable_evidence
from credit.repair import ALL_FINDINGS, RepairView, repair_view

FEATURE_SCHEMA_VERSION = "credit-features/1"
DEFAULT_WINDOW_DAYS = 180  # two quarters: long enough for Cpk from >= 18 subgroups per part
AUDIT_LOOKBACK_DAYS = 365  # IATF 16949 surveillance audits are yearly; the latest one counts
TREND_SHARE = 1 / 3  # the trend compares the last third of the window with the first two thirds
MIN_CPK_DF = 18  # degrees of freedom for a Cpk estimate: two subgroups of 10 (AIAG asks >= 25
# subgroups for a *study*; a rolling score takes what the window holds and says so)
RESPONSE_DUE_HOURS = 48.0  # docs/domain.md: complaint response expected within 24-48 h
CLOSURE_DUE_DAYS = 30.0  # docs/domain.md: 8D closure within 30 days is common practice

Direction = Literal["higher_is_better", "lower_is_better"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: what it measures, in which unit, and which way is good.

    ``monotone`` is the sign of its effect on the *score*: +1 means a higher value can never lower
    the score, -1 that it can never raise it. Every feature is constrained.
    ``missing_value`` is what the model sees when the evidence is absent (``missing_policy`` says
    why); ``lo``/``hi`` bound the what-if search to values that make sense.
    """

    name: str
    unit: str
    direction: Direction
    definition: str
    missing_policy: str
    missing_value: float
    lo: float
    hi: float

    @property
    def monotone(self) -> int:
        return 1 if self.direction == "higher_is_better" else -1


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "defect_ppm",
        "ppm",
        "lower_is_better",
        "Defective units per million inspected: 1e6 * sum(defects) / sum(sample size) over the "
        "inspection records in the window (all defect codes; every sampled unit counts once).",
        "no inspection in the window: 800 ppm, docs/domain.md's 'a poor line runs 800+'",
        800.0,
        0.0,
        1e6,
    ),
    FeatureSpec(
        "cpk_min",
        "1",
        "higher_is_better",
        "Lowest Cpk over the key characteristics of the supplier's parts: min(USL - mean, "
        "mean - LSL) / (3 sigma_within), mean over the window's measurements, sigma pooled within "
        "lots; an auditor-verified capability study replaces the lots it supersedes.",
        "no estimable key characteristic: 1.0 (spread = tolerance, ~2700 ppm), below "
        "docs/domain.md's 1.33 requirement",
        1.0,
        -1.0,
        5.0,
    ),
    FeatureSpec(
        "cpk_trend",
        "1",
        "higher_is_better",
        "Change of cpk_min: the last third of the window minus the first two thirds (negative = "
        "the process is drifting).",
        "fewer than two periods with an estimate: 0 (no trend evidence either way)",
        0.0,
        -3.0,
        3.0,
    ),
    FeatureSpec(
        "on_time_delivery",
        "ratio",
        "higher_is_better",
        "Share of deliveries in the window with deliveredTime <= promisedTime.",
        "no delivery in the window: 0.85, below the usual >= 95% OEM delivery target (an "
        "assumption, not a docs/domain.md figure)",
        0.85,
        0.0,
        1.0,
    ),
    FeatureSpec(
        "complaints_per_month",
        "1/month",
        "lower_is_better",
        "OEM-signed complaints opened in the window (field incidents included) per 30 days.",
        "never missing: complaints are signed by the OEM, so none anchored means none filed",
        0.0,
        0.0,
        100.0,
    ),
    FeatureSpec(
        "complaint_response_hours",
        "h",
        "lower_is_better",
        "Mean hours from complaint to the supplier's first response (8D firstResponseTime) over "
        "the window's complaints; an unanswered complaint older than 48 h counts at its age.",
        "no complaint due: 24 h, the lower end of docs/domain.md's 24-48 h expectation (meets it, "
        "no better)",
        24.0,
        0.0,
        24.0 * 365,
    ),
    FeatureSpec(
        "eight_d_closure_days",
        "d",
        "lower_is_better",
        "Mean days from complaint to 8D closure (D8) over the window's complaints; an open 8D "
        "older than 30 days counts at its age; an auditor-verified fix closes it.",
        "no 8D due: 11.7 days, docs/domain.md's industry average (average, not best)",
        11.7,
        0.0,
        365.0,
    ),
    FeatureSpec(
        "audit_major_nc",
        "count",
        "lower_is_better",
        "Open major nonconformities from the latest third-party audit in the last 365 days "
        "(findings closed by an auditor-signed improvement are not open).",
        "no audit in 365 days: 1 (an unaudited system is treated as one open major finding)",
        1.0,
        0.0,
        50.0,
    ),
    FeatureSpec(
        "audit_minor_nc",
        "count",
        "lower_is_better",
        "Open minor nonconformities from the latest third-party audit in the last 365 days.",
        "no audit in 365 days: 3 (about the population's worse-than-median audit)",
        3.0,
        0.0,
        200.0,
    ),
    FeatureSpec(
        "evidence_completeness",
        "ratio",
        "higher_is_better",
        "Share of the window's delivered lots that have an anchored inspection record with "
        "key-characteristic measurements (data sharing of the basic layer).",
        "never missing: no delivery records means nothing can be checked, i.e. 0",
        0.0,
        0.0,
        1.0,
    ),
    FeatureSpec(
        "fl_participation",
        "ratio",
        "higher_is_better",
        "Share of the window's federated-learning rounds the supplier took part in (sensitive "
        "layer shared through protected updates).",
        "not reported: 0 (no participation is credited without the round records)",
        0.0,
        0.0,
        1.0,
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: dict[str, int] = {n: i for i, n in enumerate(FEATURE_NAMES)}
SPECS: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}


@dataclass(frozen=True)
class GateFacts:
    """Facts from the evidence that gates check besides the score."""

    open_critical_complaints: int
    open_major_nonconformities: int
    anchored_records: int


@dataclass(frozen=True)
class FeatureVector:
    """Features of one supplier at one instant, in model column order, plus their provenance."""

    supplier_id: str
    as_of: int
    window_days: int
    values: tuple[float, ...]
    observed: dict[str, float | None]  # None where the evidence was missing
    evidence_ids: tuple[str, ...]
    facts: GateFacts
    evidence_root: str
    repairs: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)  # e.g. which characteristic is worst
    schema_version: str = FEATURE_SCHEMA_VERSION

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n in FEATURE_NAMES if self.observed.get(n) is None)

    def value(self, name: str) -> float:
        return self.values[FEATURE_INDEX[name]]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)


# ------------------------------------------------------------------------------------------
# Capability
# ------------------------------------------------------------------------------------------


@dataclass
class _Subgroups:
    """Sufficient statistics of one characteristic's subgroups (one per lot)."""

    lsl: float | None
    usl: float | None
    n: int = 0
    total: float = 0.0
    within_ss: float = 0.0
    df: int = 0

    def add(self, values: Sequence[float]) -> None:
        k = len(values)
        if k < 2:
            return
        mean = math.fsum(values) / k
        self.n += k
        self.total += mean * k
        self.within_ss += math.fsum((v - mean) ** 2 for v in values)
        self.df += k - 1

    def cpk(self) -> float | None:
        if self.df < MIN_CPK_DF:
            return None
        sigma = math.sqrt(self.within_ss / self.df)
        mean = self.total / self.n
        sides = []
        if self.usl is not None:
            sides.append(self.usl - mean)
        if self.lsl is not None:
            sides.append(mean - self.lsl)
        if sigma == 0:
            return SPECS["cpk_min"].hi if min(sides) > 0 else SPECS["cpk_min"].lo
        return min(sides) / (3 * sigma)


def _capability(
    inspections: Iterable[EvidenceItem], repairs: RepairView, lo: int, hi: int
) -> tuple[float | None, str]:
    """Lowest key-characteristic Cpk over (lo, hi] and which part/characteristic it is."""
    groups: dict[tuple[str, str], _Subgroups] = {}
    for it in inspections:
        if not lo < it.event_time <= hi or it.struct_hash.lower() in repairs.superseded:
            continue
        for char in it.payload.get("sensorReport", ()):
            if not char.get("key"):
                continue
            g = groups.get((it.part_number, char["type"]))
            if g is None:
                g = groups[(it.part_number, char["type"])] = _Subgroups(
                    char.get("lsl"), char.get("usl")
                )
            g.add(char["values"])
    per_part: dict[str, tuple[float, str]] = {}
    for (part, char_name), g in groups.items():
        cpk = g.cpk()
        if cpk is not None and (part not in per_part or cpk < per_part[part][0]):
            per_part[part] = (cpk, f"{part} {char_name}")
    for part, studies in repairs.verified_cpk.items():
        in_range = [c for t, c in studies if lo < t <= hi]
        if in_range:
            study = (in_range[-1], f"{part} (verified study)")
            # Lots the auditor did not supersede still count: the study cannot hide later lots.
            per_part[part] = min(per_part.get(part, study), study)
    if not per_part:
        return None, ""
    cpk, where = min(per_part.values())
    return cpk, where


# ------------------------------------------------------------------------------------------
# Complaints, 8D, audits
# ------------------------------------------------------------------------------------------


@dataclass
class _Complaint:
    opened: int
    severity: str
    status: str
    last_update: tuple[int, int]
    records: list[str]
    first_response: int | None = None
    closed_8d: int | None = None


def _complaints(items: Iterable[EvidenceItem], repairs: RepairView) -> dict[str, _Complaint]:
    out: dict[str, _Complaint] = {}
    actions: list[EvidenceItem] = []
    for it in items:
        if it.kind == "corrective_action":
            actions.append(it)
            continue
        if it.kind != "complaint":
            continue
        cid = it.payload["complaintId"]
        c = out.get(cid)
        stamp = (it.event_time, it.signed_at)
        if c is None:
            out[cid] = _Complaint(
                it.event_time, it.payload["severity"], it.payload["status"], stamp, [it.struct_hash]
            )
            continue
        c.records.append(it.struct_hash)
        c.opened = min(c.opened, it.event_time)
        if stamp >= c.last_update:
            c.last_update, c.status = stamp, it.payload["status"]
            c.severity = it.payload["severity"]
    for it in actions:
        c = out.get(it.payload["complaintId"])
        if c is None:
            continue  # an 8D without an anchored complaint answers nothing we can score
        c.records.append(it.struct_hash)
        resp = it.payload.get("firstResponseTime")
        if resp is not None:
            c.first_response = resp if c.first_response is None else min(c.first_response, resp)
        if it.payload["status"] == "closed" and "D8" in it.payload["eightD"]:
            d8 = it.payload["eightD"]["D8"]
            c.closed_8d = d8 if c.closed_8d is None else min(c.closed_8d, d8)
    for cid, when in repairs.closed_complaints.items():
        c = out.get(cid)
        if c is not None:
            c.status = "closed"
            if c.closed_8d is None:
                c.closed_8d = when
    return out


def _open_findings(audit: EvidenceItem, repairs: RepairView) -> tuple[int, int]:
    """(major, minor) nonconformities of ``audit`` still open after repairs."""
    closed = repairs.closed_findings.get(audit.struct_hash.lower(), frozenset())
    if ALL_FINDINGS in closed:
        return 0, 0
    payload = audit.payload
    findings = payload.get("findings", ())
    closed_major = sum(1 for f in findings if f["severity"] == "major" and f["id"] in closed)
    closed_minor = sum(1 for f in findings if f["severity"] == "minor" and f["id"] in closed)
    return (
        max(0, payload["majorNonconformities"] - closed_major),
        max(0, payload["minorNonconformities"] - closed_minor),
    )


# ------------------------------------------------------------------------------------------


def compute_features(
    items: Iterable[EvidenceItem],
    supplier_id: str,
    window_end: int,
    window_days: int = DEFAULT_WINDOW_DAYS,
    *,
    fl_participation: float | None = None,
) -> FeatureVector:
    """Features of ``supplier_id`` over (window_end - window_days, window_end].

    ``items`` may hold anything (other suppliers', unanchored records); only what counts at
    ``window_end`` is read. ``fl_participation`` is the share of federated rounds joined in the
    window, from the federated service; None means unknown and is scored as no participation.
    """
    usable = usable_evidence(items, supplier_id, window_end)
    repairs = repair_view(usable)
    start = window_end - window_days * DAY
    recent = window_end - int(window_days * TREND_SHARE) * DAY
    used: set[str] = set(repairs.applied)
    observed: dict[str, float | None] = {}
    details: dict[str, str] = {}

    by_kind: dict[str, list[EvidenceItem]] = defaultdict(list)
    for it in usable:
        by_kind[it.kind].append(it)

    inspections = by_kind["inspection"]
    in_window = [it for it in inspections if start < it.event_time <= window_end]
    used.update(it.struct_hash for it in in_window)
    sampled = sum(it.quantity for it in in_window)
    observed["defect_ppm"] = (
        1e6 * sum(it.defects for it in in_window) / sampled if sampled else None
    )

    cpk, where = _capability(in_window, repairs, start, window_end)
    observed["cpk_min"] = cpk
    if where:
        details["cpk_min"] = where
    cpk_recent, _ = _capability(in_window, repairs, recent, window_end)
    cpk_before, _ = _capability(in_window, repairs, start, recent)
    observed["cpk_trend"] = (
        cpk_recent - cpk_before if cpk_recent is not None and cpk_before is not None else None
    )

    deliveries = [it for it in by_kind["delivery"] if start < it.event_time <= window_end]
    used.update(it.struct_hash for it in deliveries)
    observed["on_time_delivery"] = (
        sum(1 for it in deliveries if it.payload["deliveredTime"] <= it.payload["promisedTime"])
        / len(deliveries)
        if deliveries
        else None
    )

    complaints = _complaints(by_kind["complaint"] + by_kind["corrective_action"], repairs)
    window_complaints = [c for c in complaints.values() if start < c.opened <= window_end]
    observed["complaints_per_month"] = len(window_complaints) * 30.0 / window_days
    hours: list[float] = []
    days: list[float] = []
    for c in window_complaints:
        used.update(c.records)
        if c.first_response is not None:
            hours.append(max(0, c.first_response - c.opened) / 3600)
        elif (window_end - c.opened) / 3600 > RESPONSE_DUE_HOURS:
            hours.append((window_end - c.opened) / 3600)  # overdue: at least this long
        if c.closed_8d is not None and c.closed_8d <= window_end:
            days.append(max(0, c.closed_8d - c.opened) / DAY)
        elif (window_end - c.opened) / DAY > CLOSURE_DUE_DAYS:
            days.append((window_end - c.opened) / DAY)
    observed["complaint_response_hours"] = sum(hours) / len(hours) if hours else None
    observed["eight_d_closure_days"] = sum(days) / len(days) if days else None

    audits = [
        it
        for it in by_kind["audit"]
        if window_end - AUDIT_LOOKBACK_DAYS * DAY < it.event_time <= window_end
    ]
    latest = max(audits, key=lambda it: (it.event_time, it.signed_at), default=None)
    if latest is not None:
        used.add(latest.struct_hash)
        major, minor = _open_findings(latest, repairs)
        observed["audit_major_nc"], observed["audit_minor_nc"] = float(major), float(minor)
    else:
        observed["audit_major_nc"] = observed["audit_minor_nc"] = None

    delivered = {(it.part_number, it.lot_id) for it in deliveries}
    measured = {
        (it.part_number, it.lot_id)
        for it in inspections
        if any(ch.get("key") for ch in it.payload.get("sensorReport", ()))
    }
    observed["evidence_completeness"] = (
        len(delivered & measured) / len(delivered) if delivered else 0.0
    )
    observed["fl_participation"] = (
        None if fl_participation is None else min(1.0, max(0.0, float(fl_participation)))
    )

    values = tuple(
        f.missing_value if (value := observed[f.name]) is None else float(value) for f in FEATURES
    )
    open_critical = sum(
        1 for c in complaints.values() if c.severity == "critical" and c.status == "open"
    )
    used.update(
        r
        for c in complaints.values()
        if c.severity == "critical" and c.status == "open"
        for r in c.records
    )
    facts = GateFacts(
        open_critical_complaints=open_critical,
        open_major_nonconformities=int(observed["audit_major_nc"] or 0),
        anchored_records=len(usable),
    )
    return FeatureVector(
        supplier_id=supplier_id,
        as_of=window_end,
        window_days=window_days,
        values=values,
        observed=observed,
        evidence_ids=tuple(sorted(used)),
        facts=facts,
        evidence_root=evidence_root(tuple(used)),
        repairs=repairs.applied,
        details=details,
    )


def feature_matrix(vectors: Sequence[FeatureVector]) -> np.ndarray:
    """Stack vectors into the model's (n, n_features) float64 input."""
    if not vectors:
        return np.zeros((0, len(FEATURES)))
    return np.asarray([v.values for v in vectors], dtype=np.float64)


def schema_document() -> dict[str, object]:
    """The feature schema as JSON-able data (served with the model version, hashed into it)."""
    return {
        "version": FEATURE_SCHEMA_VERSION,
        "window_days_default": DEFAULT_WINDOW_DAYS,
        "audit_lookback_days": AUDIT_LOOKBACK_DAYS,
        "features": [
            {
                "name": f.name,
                "unit": f.unit,
                "direction": f.direction,
                "monotone": f.monotone,
                "definition": f.definition,
                "missing_policy": f.missing_policy,
                "missing_value": f.missing_value,
                "range": [f.lo, f.hi],
            }
            for f in FEATURES
        ],
    }
