"""One set of labels and one meaning per colour (issue 20, item 6): the dashboard's CSS, the
waterfall PNG and the demo report read credit.labels."""

from __future__ import annotations

import re

from api.ui import fmt
from credit.features import FEATURE_NAMES, GateFacts
from credit.labels import (
    ADDS_COLOUR,
    BAND_COLOURS,
    BAND_MEANING,
    FEATURE_LABELS,
    REMOVES_COLOUR,
    band_colour,
    contribution_colour,
    feature_label,
)
from credit.model import BANDS
from tests.helpers import ROOT

CSS = (ROOT / "api" / "ui" / "static" / "ui.css").read_text()


def _css_var(name: str) -> str:
    found = re.search(rf"--{re.escape(name)}:\s*(#[0-9a-fA-F]{{6}})\s*;", CSS)
    assert found, f"--{name} is not in ui.css"
    return found.group(1).lower()


def test_every_feature_and_gate_fact_has_a_readable_label() -> None:
    for name in (*FEATURE_NAMES, *GateFacts.__dataclass_fields__):
        assert name in FEATURE_LABELS, name
        assert "_" not in feature_label(name) and not feature_label(name)[0].islower()
    # The dashboard reads the same table (not a copy).
    assert fmt.FEATURE_LABELS is FEATURE_LABELS and fmt.feature_label is feature_label


def test_band_colours_are_the_dashboards() -> None:
    assert [name for name, _ in BANDS] == list(BAND_COLOURS) == list(BAND_MEANING)
    for band, colour in BAND_COLOURS.items():
        assert _css_var(f"band-{band}") == colour.lower(), band
        assert band_colour(band) == colour
    # A thin file has no band: its colour is none of the bands'.
    assert band_colour("insufficient_evidence") not in BAND_COLOURS.values()


def test_contribution_colours_are_the_dashboards_and_never_a_band_meaning() -> None:
    assert _css_var("ok") == ADDS_COLOUR.lower() and _css_var("bad") == REMOVES_COLOUR.lower()
    assert contribution_colour(0.5) == ADDS_COLOUR and contribution_colour(-0.5) == REMOVES_COLOUR
    # The dashboard's waterfall steps are coloured with those same variables.
    assert re.search(r"\.step\.pos\s*\{\s*fill:\s*var\(--ok\)", CSS)
    assert re.search(r"\.step\.neg\s*\{\s*fill:\s*var\(--bad\)", CSS)
