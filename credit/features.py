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
from credit.stats import capability as stats_capability
from credit.stats import ppm_upper_bound

FEATURE_SCHEMA_VERSION = "credit-features/3"  # 3: unreported lots weigh on cpk_min
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
    # Whether the supplier's own records supply the values (its measurements, its filings):
    # what-ifs never propose moving such a feature (issue 16), only evidence others sign.
    self_written: bool = False

    @property
    def monotone(self) -> int:
        return 1 if self.direction == "higher_is_better" else -1


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "defect_ppm",
        "ppm",
        "lower_is_better",
        "One-sided 95% Clopper-Pearson upper bound of the defect rate over the OEM's incoming "
        "samples of the lots it received in the window (goods receipts). A lot's rate is the "
        "larger of the OEM's defects over its sample and the share of its measured values "
        "outside the OEM's spec limits.",
        "the OEM inspected no received lot: 9936 ppm, the bound of a clean 300-unit sample "
        "(~3/n); only the OEM's sampling decides whether it is missing",
        9936.0,
        0.0,
        1e6,
    ),
    FeatureSpec(
        "cpk_min",
        "1",
        "higher_is_better",
        "Lowest capability over the key (CC/SC) characteristics of the OEM's part specification "
        "in force, with the OEM's limits: Bissell's one-sided 95% lower bound of Cpk (sigma pooled "
        "within lots) when the lot means pass an X-bar stability check, of Ppk (overall sigma) "
        "when not. Values from the supplier's timely outgoing inspections and the OEM's incoming "
        "measurements of received lots; received lots whose values the supplier did not report "
        "count at the stand-in, weighted by their share; an auditor-verified study replaces the "
        "lots it supersedes, for that part only.",
        "no estimable key characteristic: 0 (the process mean at a spec limit), below any "
        "capable line",
        0.0,
        -1.0,
        5.0,
        self_written=True,
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
        self_written=True,
    ),
    FeatureSpec(
        "on_time_delivery",
        "ratio",
        "higher_is_better",
        "Share of the OEM's goods receipts in the window with receivedTime <= promisedTime, both "
        "written by the OEM (its order's date, its dock's time).",
        "no goods receipt in the window: 0.85, below the usual >= 95% OEM delivery target (an "
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
        "Mean hours, on chain time, from the anchoring of the OEM's complaint to the anchoring of "
        "the supplier's first 8D record for it; an unanswered complaint older than 48 h counts at "
        "its age. Dates written inside the 8D are not read.",
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
        "Mean days, on chain time, from the anchoring of the complaint to the anchoring of the "
        "closed 8D (D8); an open 8D older than 30 days counts at its age; an auditor-verified fix "
        "closes it.",
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
        "Share of the lots the OEM received in the window (goods receipts) that carry the "
        "supplier's outgoing inspection, anchored no later than the receipt, measuring every key "
        "characteristic of the OEM's spec (a withheld inspection counts against).",
        "never missing: no goods receipt means nothing can be checked, i.e. 0",
        0.0,
        0.0,
        1.0,
        self_written=True,
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
    oem_received_lots: int = 0  # OEM goods receipts in the window (the thin-file test)
    oem_evidence_months: int = 0  # distinct 30-day periods with a goods receipt (received date)
    inspection_disagreements: int = 0  # lots the OEM found defective, the supplier called clean


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
    superseded: tuple[str, ...] = ()  # records replaced by a later one about the same lot
    schema_version: str = FEATURE_SCHEMA_VERSION

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n in FEATURE_NAMES if self.observed.get(n) is None)

    def value(self, name: str) -> float:
        return self.values[FEATURE_INDEX[name]]

    def as_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)


# ------------------------------------------------------------------------------------------
# Which evidence a score reads: anchoring time, supersession, the OEM's spec in force
# ------------------------------------------------------------------------------------------

# Kinds where a record about the same (subject, kind, part, lot) replaces an earlier one: the
# later counts, once. Complaints and 8Ds are grouped by complaintId instead (their updates are
# steps of one story, not copies).
SUPERSEDING_KINDS = frozenset({"inspection", "delivery", "goods_receipt", "part_spec", "audit"})
# A supplier's outgoing inspection of a lot counts towards completeness and capability only if it
# was anchored no later than the OEM's goods receipt of that lot: an inspection filed after the
# OEM's incoming result is known could be written to match it. 0 s: the certificate of conformance
# travels with the goods.
OUTGOING_GRACE_SECONDS = 0


def anchor_time(it: EvidenceItem) -> int:
    """When the chain first saw ``it`` (its batch's block time); signedAt where unknown."""
    return it.anchored_at if it.anchored_at is not None else it.signed_at


def _order(it: EvidenceItem) -> tuple[int, int, str]:
    return (anchor_time(it), it.signed_at, it.struct_hash)


def supersede(items: Iterable[EvidenceItem]) -> tuple[list[EvidenceItem], set[str]]:
    """Keep the latest-anchored record per (subject, kind, part, lot); return kept, superseded."""
    latest: dict[tuple[str, str, str, str], EvidenceItem] = {}
    kept: list[EvidenceItem] = []
    for it in items:
        if it.kind not in SUPERSEDING_KINDS:
            kept.append(it)
            continue
        key = (it.subject, it.kind, it.part_number, it.lot_id)
        prev = latest.get(key)
        if prev is None or _order(it) > _order(prev):
            latest[key] = it
    kept.extend(latest.values())
    kept_ids = {it.struct_hash for it in kept}
    return kept, {it.struct_hash for it in items if it.struct_hash not in kept_ids}


@dataclass(frozen=True)
class _SpecChar:
    lsl: float | None
    usl: float | None
    key: bool


class _Specs:
    """The OEM's part specifications; ``at(part, t)`` is the revision in force at ``t``."""

    def __init__(self, specs: Iterable[EvidenceItem]) -> None:
        self._by_part: dict[str, list[tuple[int, tuple[int, int, str], dict[str, _SpecChar]]]] = (
            defaultdict(list)
        )
        for it in specs:
            chars = {
                c["type"]: _SpecChar(
                    c.get("lsl"), c.get("usl"), c.get("specialCharacteristic") in ("CC", "SC")
                )
                for c in it.payload.get("characteristics", ())
            }
            self._by_part[it.part_number].append((it.event_time, _order(it), chars))
        for revisions in self._by_part.values():
            revisions.sort(key=lambda r: (r[0], r[1]))

    def at(self, part: str, t: int) -> dict[str, _SpecChar] | None:
        found = None
        for effective, _, chars in self._by_part.get(part, ()):
            if effective <= t:
                found = chars
        return found


def _out_of_spec_fraction(chars: Iterable[dict], spec: dict[str, _SpecChar]) -> float:
    """Largest share of measured values outside the OEM's limits over the characteristics."""
    worst = 0.0
    for ch in chars:
        sc = spec.get(ch.get("type", ""))
        values = ch.get("values") or ()
        if sc is None or not values:
            continue
        out = sum(
            1
            for v in values
            if (sc.lsl is not None and v < sc.lsl) or (sc.usl is not None and v > sc.usl)
        )
        worst = max(worst, out / len(values))
    return worst


@dataclass
class _Lot:
    """What the evidence says about one received lot."""

    part: str
    lot: str
    receipt: EvidenceItem
    spec: dict[str, _SpecChar] | None
    outgoing: list[EvidenceItem]  # every version the supplier signed, oldest first
    timely: EvidenceItem | None  # the latest version anchored by the goods receipt
    first: EvidenceItem | None  # the earliest version anchored by the goods receipt

    @property
    def incoming(self) -> dict | None:
        return self.receipt.payload.get("incomingInspection")

    def complete(self) -> bool:
        """A timely outgoing inspection measuring every key characteristic of the OEM's spec."""
        if self.timely is None:
            return False
        measured = {
            c.get("type") for c in self.timely.payload.get("sensorReport", ()) if c.get("values")
        }
        keys = {name for name, c in (self.spec or {}).items() if c.key}
        return keys <= measured

    def defect_rate(self) -> tuple[float, float] | None:
        """(defect fraction, OEM sample size), or None when the OEM did not inspect the lot.

        Only the OEM's incoming inspection counts: a supplier's own sample could be claimed at
        any size and any result, and a self-report that could only raise a rate would make
        withholding it pay. The fraction is the larger of the OEM's defects over its sample and
        the share of its measured values outside the OEM's spec limits.
        """
        incoming = self.incoming
        if not incoming or not incoming.get("sampleSize"):
            return None
        n = incoming["sampleSize"]
        rates = [self.receipt.defects / n]
        if self.spec:
            rates.append(_out_of_spec_fraction(incoming.get("sensorReport", ()), self.spec))
        return max(rates), float(n)

    def disagrees(self) -> bool:
        """The OEM found defects in a lot the supplier's timely outgoing report called clean."""
        incoming = self.incoming
        return bool(
            incoming
            and self.receipt.defects > 0
            and self.timely is not None
            and self.timely.defects == 0
        )


def _received_lots(
    receipts: Iterable[EvidenceItem], inspections: Iterable[EvidenceItem], specs: _Specs
) -> list[_Lot]:
    by_lot: dict[tuple[str, str], list[EvidenceItem]] = defaultdict(list)
    for it in inspections:
        by_lot[(it.part_number, it.lot_id)].append(it)
    lots = []
    for r in receipts:
        versions = sorted(by_lot.get((r.part_number, r.lot_id), ()), key=_order)
        deadline = anchor_time(r) + OUTGOING_GRACE_SECONDS
        timely = [it for it in versions if anchor_time(it) <= deadline]
        lots.append(
            _Lot(
                r.part_number,
                r.lot_id,
                r,
                specs.at(r.part_number, r.event_time),
                versions,
                timely[-1] if timely else None,
                timely[0] if timely else None,
            )
        )
    return lots


# ------------------------------------------------------------------------------------------
# Capability against the OEM's spec
# ------------------------------------------------------------------------------------------


def _capability(
    lots: Iterable[_Lot], repairs: RepairView, lo: int, hi: int
) -> tuple[float | None, str, bool]:
    """Lowest key-characteristic capability bound over lots received in (lo, hi].

    The flag says whether a part took the stand-in because lots went unreported.

    Values come from the supplier's timely outgoing inspection and the OEM's incoming
    measurements; limits and the key flag only from the OEM's specification in force.
    """
    groups: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    limits: dict[tuple[str, str], _SpecChar] = {}
    superseded_parts: set[str] = set()
    withheld_parts: set[str] = set()  # parts with a received lot lacking its outgoing inspection
    received: dict[str, int] = defaultdict(int)
    # Lots of a part received whose key characteristic the supplier's timely outgoing
    # inspection did not measure, per (part, characteristic).
    unreported: dict[tuple[str, str], int] = defaultdict(int)
    for lot in lots:
        if not lo < anchor_time(lot.receipt) <= hi or not lot.spec:
            continue
        received[lot.part] += 1
        if not lot.complete():
            withheld_parts.add(lot.part)
            shown = {
                c.get("type")
                for c in (lot.timely.payload.get("sensorReport", ()) if lot.timely else ())
                if c.get("values")
            }
            for name, sc_ in lot.spec.items():
                if sc_.key and name not in shown:
                    unreported[(lot.part, name)] += 1
        sources = []
        # The measurements are the lot's first timely statement: a later version of the same
        # lot counts once, but cannot rewrite the values the lot was first reported with.
        if any(v.struct_hash.lower() in repairs.superseded for v in lot.outgoing):
            # An auditor-verified study replaces this lot's measurements (the supplier's and the
            # OEM's alike: both show the process before the fix) for capability only.
            superseded_parts.add(lot.part)
            continue
        if lot.first is not None:
            sources.append(lot.first.payload.get("sensorReport", ()))
        if lot.incoming:
            sources.append(lot.incoming.get("sensorReport", ()))
        for chars in sources:
            for ch in chars:
                sc = lot.spec.get(ch.get("type", ""))
                if sc is None or not sc.key:
                    continue
                key = (lot.part, ch["type"])
                limits[key] = sc
                groups[key].append(list(ch["values"]))
    per_part: dict[str, tuple[float, str]] = {}
    # A part whose capability cannot be estimated while lots went unreported takes the
    # missing-evidence stand-in: withholding a bad part's inspections never hides it.
    estimated = {p for (p, _), g in groups.items() if sum(len(x) - 1 for x in g) >= MIN_CPK_DF}
    for part in withheld_parts - estimated - superseded_parts:
        per_part[part] = (
            SPECS["cpk_min"].missing_value,
            f"{part} (not estimable: lots unreported)",
        )
    missing = SPECS["cpk_min"].missing_value
    for (part, char_name), subgroups in groups.items():
        sc = limits[(part, char_name)]
        cap = stats_capability(subgroups, sc.lsl, sc.usl, MIN_CPK_DF)
        if cap is None:
            continue
        value = max(SPECS["cpk_min"].lo, min(SPECS["cpk_min"].hi, cap.scored))
        label = f"{part} {char_name}" + ("" if cap.stable else " (unstable: Ppk)")
        hidden = unreported[(part, char_name)]
        if hidden and value > missing:
            # The received lots whose values the supplier did not show count at the stand-in (a
            # process mean at a spec limit), weighted by their share: withholding the lots of a
            # drifting process never shows a better one.
            value = missing + (1.0 - hidden / received[part]) * (value - missing)
            label += f"; {hidden}/{received[part]} lots unreported"
        if part not in per_part or value < per_part[part][0]:
            per_part[part] = (value, label)
    for part, studies in repairs.verified_cpk.items():
        # A verified study speaks only for the part whose lots it superseded.
        in_range = [c for t, c in studies if lo < t <= hi]
        if in_range and (part in superseded_parts or part in per_part):
            study = (in_range[-1], f"{part} (verified study)")
            per_part[part] = min(per_part.get(part, study), study)
    if not per_part:
        return None, "", False
    cpk, where = min(per_part.values())
    return cpk, where, bool(withheld_parts - estimated - superseded_parts)


# ------------------------------------------------------------------------------------------
# Complaints and 8D on chain time, audits
# ------------------------------------------------------------------------------------------


@dataclass
class _Complaint:
    opened: int  # anchoring time of the OEM's first record of it
    severity: str
    status: str
    last_update: tuple[int, int]
    records: list[str]
    first_response: int | None = None  # anchoring time of the first 8D record
    closed_8d: int | None = None  # anchoring time of the first closed 8D


def _complaints(items: Iterable[EvidenceItem], repairs: RepairView) -> dict[str, _Complaint]:
    out: dict[str, _Complaint] = {}
    actions: list[EvidenceItem] = []
    for it in sorted(items, key=_order):
        if it.kind == "corrective_action":
            actions.append(it)
            continue
        if it.kind != "complaint":
            continue
        cid = it.payload["complaintId"]
        c = out.get(cid)
        stamp = (anchor_time(it), it.signed_at)
        if c is None:
            out[cid] = _Complaint(
                anchor_time(it),
                it.payload["severity"],
                it.payload["status"],
                stamp,
                [it.struct_hash],
            )
            continue
        c.records.append(it.struct_hash)
        if stamp >= c.last_update:
            c.last_update, c.status = stamp, it.payload["status"]
            c.severity = it.payload["severity"]
    for it in actions:
        c = out.get(it.payload["complaintId"])
        if c is None:
            continue  # an 8D without an anchored complaint answers nothing we can score
        c.records.append(it.struct_hash)
        # Chain time: the supplier's dates inside the 8D are ignored; only when the chain saw
        # the answer counts, and an answer anchored before the complaint answers nothing.
        seen = anchor_time(it)
        if seen < c.opened:
            continue
        if c.first_response is None:
            c.first_response = seen
        if (
            it.payload["status"] == "closed"
            and "D8" in it.payload["eightD"]
            and c.closed_8d is None
        ):
            c.closed_8d = seen
    for cid, when in repairs.closed_complaints.items():
        c = out.get(cid)
        if c is not None and when >= c.opened:
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
    """Features of ``supplier_id`` over (window_end - window_days, window_end] of anchoring time.

    ``items`` may hold anything (other suppliers', unanchored records); only what counts at
    ``window_end`` is read. ``fl_participation`` is the share of federated rounds joined in the
    window, from the federated service; None means unknown and is scored as no participation.
    """
    usable_all = usable_evidence(items, supplier_id, window_end)
    usable, superseded = supersede(usable_all)
    repairs = repair_view(usable)
    start = window_end - window_days * DAY
    recent = window_end - int(window_days * TREND_SHARE) * DAY
    used: set[str] = set(repairs.applied)
    observed: dict[str, float | None] = {}
    details: dict[str, str] = {}

    def in_window(it: EvidenceItem) -> bool:
        return start < anchor_time(it) <= window_end

    by_kind: dict[str, list[EvidenceItem]] = defaultdict(list)
    for it in usable:
        by_kind[it.kind].append(it)
    # Self-reported inspections: every version, so a correction can only raise a rate.
    all_inspections = [it for it in usable_all if it.kind == "inspection"]

    specs = _Specs(by_kind["part_spec"])
    receipts = [it for it in by_kind["goods_receipt"] if in_window(it)]
    lots = _received_lots(receipts, all_inspections, specs)
    used.update(it.struct_hash for it in receipts)
    used.update(it.struct_hash for lot in lots for it in lot.outgoing)
    used.update(it.struct_hash for it in by_kind["part_spec"])

    rated = [r for r in (lot.defect_rate() for lot in lots) if r is not None]
    if rated:
        defective = math.fsum(f * w for f, w in rated)
        sampled = math.fsum(w for _, w in rated)
        observed["defect_ppm"] = ppm_upper_bound(defective, sampled)
        details["defect_ppm"] = f"95% upper bound from {sampled:.0f} sampled units"
    else:
        observed["defect_ppm"] = None

    cpk, where, _ = _capability(lots, repairs, start, window_end)
    observed["cpk_min"] = cpk
    if where:
        details["cpk_min"] = where
    cpk_recent, _, hid_recent = _capability(lots, repairs, recent, window_end)
    cpk_before, _, hid_before = _capability(lots, repairs, start, recent)
    observed["cpk_trend"] = (
        cpk_recent - cpk_before if cpk_recent is not None and cpk_before is not None else None
    )
    if hid_recent or hid_before:
        # A trend over a part whose lots went unreported is not evidence of improvement.
        observed["cpk_trend"] = SPECS["cpk_trend"].lo
        details["cpk_trend"] = "lots unreported: the trend cannot be shown"

    observed["on_time_delivery"] = (
        sum(1 for it in receipts if it.payload["receivedTime"] <= it.payload["promisedTime"])
        / len(receipts)
        if receipts
        else None
    )

    complaints = _complaints(by_kind["complaint"] + by_kind["corrective_action"], repairs)
    window_complaints = [c for c in complaints.values() if start < c.opened <= window_end]
    observed["complaints_per_month"] = len(window_complaints) * 30.0 / window_days
    hours: list[float] = []
    days: list[float] = []
    for c in window_complaints:
        used.update(c.records)
        if c.first_response is not None and c.first_response <= window_end:
            hours.append((c.first_response - c.opened) / 3600)
        elif (window_end - c.opened) / 3600 > RESPONSE_DUE_HOURS:
            hours.append((window_end - c.opened) / 3600)  # overdue: at least this long
        if c.closed_8d is not None and c.closed_8d <= window_end:
            days.append((c.closed_8d - c.opened) / DAY)
        elif (window_end - c.opened) / DAY > CLOSURE_DUE_DAYS:
            days.append((window_end - c.opened) / DAY)
    observed["complaint_response_hours"] = sum(hours) / len(hours) if hours else None
    observed["eight_d_closure_days"] = sum(days) / len(days) if days else None

    audits = [
        it
        for it in by_kind["audit"]
        if window_end - AUDIT_LOOKBACK_DAYS * DAY < anchor_time(it) <= window_end
    ]
    latest = max(audits, key=_order, default=None)
    if latest is not None:
        used.add(latest.struct_hash)
        major, minor = _open_findings(latest, repairs)
        observed["audit_major_nc"], observed["audit_minor_nc"] = float(major), float(minor)
    else:
        observed["audit_major_nc"] = observed["audit_minor_nc"] = None

    complete = sum(1 for lot in lots if lot.complete())
    observed["evidence_completeness"] = complete / len(lots) if lots else 0.0
    disagreements = sum(1 for lot in lots if lot.disagrees())
    if disagreements:
        details["inspection_disagreements"] = (
            f"{disagreements} lot(s): OEM incoming found defects the supplier's outgoing "
            "inspection did not report"
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
    # Months of receiving: by the OEM's own received date (an OEM-signed time, bounded at intake),
    # so a ledger that anchored a backlog at once still shows when the lots arrived.
    months = {it.event_time // (30 * DAY) for it in receipts}
    facts = GateFacts(
        open_critical_complaints=open_critical,
        open_major_nonconformities=int(observed["audit_major_nc"] or 0),
        anchored_records=len(usable),
        oem_received_lots=len(lots),
        oem_evidence_months=len(months),
        inspection_disagreements=disagreements,
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
        superseded=tuple(sorted(superseded)),
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
                "self_written": f.self_written,
            }
            for f in FEATURES
        ],
    }
