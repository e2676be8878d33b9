"""Number, unit, time and hash formatting shared by the templates and the charts."""

from __future__ import annotations

import math
from datetime import UTC, datetime

# One table of feature names and band meanings for the dashboard, the PNG and the report.
from credit.labels import BAND_MEANING as BAND_MEANING
from credit.labels import FEATURE_LABELS as FEATURE_LABELS
from credit.labels import feature_label as feature_label

KIND_LABELS: dict[str, str] = {
    "inspection": "Inspections",
    "delivery": "Deliveries",
    "complaint": "Complaints",
    "corrective_action": "Corrective actions (8D)",
    "audit": "Audits",
    "improvement": "Improvements (repair)",
    "notification": "Notification steps",
}

KIND_ONE: dict[str, str] = {
    "inspection": "Inspection",
    "delivery": "Delivery",
    "complaint": "Complaint",
    "corrective_action": "Corrective action (8D)",
    "audit": "Audit",
    "improvement": "Improvement (repair)",
    "notification": "Notification step",
}

# ledger.verify.Check values, in words (the id is shown beside them).
CHECK_LABELS: dict[str, str] = {
    "receipt_format": "Receipt is well formed",
    "record_format": "Record is well formed",
    "record_matches_receipt": "Record equals the receipt's",
    "signature": "EIP-712 signature",
    "struct_hash": "Struct hash (the leaf)",
    "domain_matches_contract": "Signed for this contract",
    "chain_id": "Chain id",
    "signer_role_at_signing": "Signer held a role when signing",
    "kind_allowed_for_role": "Kind allowed for that role",
    "supplier_files_about_itself": "Supplier filed about itself",
    "merkle_proof": "Merkle proof (checked on chain too)",
    "root_anchored": "Root anchored on chain",
    "anchor_matches_receipt": "Anchor details match the receipt",
    "signed_before_anchor": "Signed before it was anchored",
}


def num(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, no exponent for everyday magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10**digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def with_unit(value: float | None, unit: str, *, signed: bool = False) -> str:
    """A feature value in its unit: ratios as percent, dimensionless values bare."""
    if value is None:
        return "–"
    sign = "+" if signed and value > 0 else ""
    if unit == "ratio":
        return f"{sign}{num(100 * value)} %"
    if unit in ("1", ""):
        return f"{sign}{num(value)}"
    if unit == "count":
        return f"{sign}{num(value)}"
    if unit == "1/month":
        return f"{sign}{num(value)} /month"
    return f"{sign}{num(value)} {unit}"


def points(value: float | None, *, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.{digits}f} %"


def ppm(value: float | None) -> str:
    """A probability or fraction as parts per million."""
    if value is None:
        return "–"
    return f"{num(1e6 * value)} ppm"


def utc(ts: int | float | None, *, seconds: bool = False) -> str:
    if ts is None:
        return "–"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(int(ts), UTC).strftime(fmt) + " UTC"


def day(ts: int | float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d")


def short_hash(value: str | None, keep: int = 6) -> str:
    """0x1234ab…cdef: enough to tell hashes apart on screen (the title shows it whole)."""
    if not value:
        return "–"
    if len(value) <= 2 + 2 * keep + 1:
        return value
    return f"{value[: 2 + keep]}…{value[-keep:]}"
