"""One set of words and colours for credit, wherever it is shown.

The dashboard (``api/ui``), the waterfall PNG (``credit.waterfall``, served by the API and
written by ``qledger credit show --plot``) and the demo report (``cli/demo.py``) all read these
tables, so a feature has one readable name and a colour means one thing everywhere
(docs/credit.md, "Labels and colours"):

- a **score** is coloured by its **band** (A best ... E), never by the gate's outcome;
- a **contribution** is green when it adds points and red when it removes them;
- the **gate** outcome is a labelled badge or text ("pass" / "fail"), never a colour alone.

The machine names (the API's ``feature`` fields, the policy files' ``fact``) stay as they are.
"""

from __future__ import annotations

# What purchasing calls each credit feature and gate fact.
FEATURE_LABELS: dict[str, str] = {
    "defect_ppm": "Defect rate",
    "cpk_min": "Lowest Cpk",
    "cpk_trend": "Cpk trend",
    "on_time_delivery": "On-time delivery",
    "complaints_per_month": "Complaints",
    "complaint_response_hours": "Complaint response",
    "eight_d_closure_days": "8D closure",
    "audit_major_nc": "Open major NCs",
    "audit_minor_nc": "Open minor NCs",
    "evidence_completeness": "Evidence completeness",
    "fl_participation": "Federated participation",
    # gate facts (credit.features.GateFacts)
    "open_critical_complaints": "Open critical complaints",
    "open_major_nonconformities": "Open major NCs",
    "oem_received_lots": "OEM-received lots",
    "oem_evidence_months": "Months with OEM receipts",
    "anchored_records": "Anchored records",
    "inspection_disagreements": "Inspection disagreements",
}

# Score bands (credit.model.BANDS) and their points; the dashboard's CSS (--band-A ... in
# api/ui/static/ui.css) uses the same colours (tests/credit/test_labels.py checks it).
BAND_MEANING: dict[str, str] = {
    "A": "85-100",
    "B": "70-85",
    "C": "55-70",
    "D": "40-55",
    "E": "0-40",
}
BAND_COLOURS: dict[str, str] = {
    "A": "#1e7a46",
    "B": "#5b9a2f",
    "C": "#c99a12",
    "D": "#d9712b",
    "E": "#b3261e",
}
NO_BAND_COLOUR = "#8a939e"  # a thin file: no number, no band
ADDS_COLOUR = "#1e7a46"  # a contribution that adds points (the CSS's --ok)
REMOVES_COLOUR = "#b3261e"  # one that removes points (the CSS's --bad)


def feature_label(name: str) -> str:
    return FEATURE_LABELS.get(name, name.replace("_", " "))


def band_colour(band: str) -> str:
    return BAND_COLOURS.get(band, NO_BAND_COLOUR)


def contribution_colour(points: float) -> str:
    return ADDS_COLOUR if points >= 0 else REMOVES_COLOUR
