"""Each DP run's ε comes with a plain reading; the bands are the documented ones."""

from __future__ import annotations

import math

import pytest

from federated.privacy import epsilon_reading


@pytest.mark.parametrize(
    ("epsilon", "words"),
    [
        (0.5, "strong"),
        (1.0, "strong"),
        (4.0, "moderate"),
        (10.0, "moderate"),
        (30.0, "no meaningful"),
    ],
)
def test_the_reading_names_the_band(epsilon: float, words: str) -> None:
    assert words in epsilon_reading(epsilon, 1e-5)


def test_the_reading_states_the_factor_a_supplier_should_read() -> None:
    # e^ε bounds how much one supplier's participation changes any outcome's probability.
    assert f"{math.exp(2.0):,.3g}x" in epsilon_reading(2.0, 1e-5)
    # The DP rows (ε ~ 30-244 for 8 suppliers) read as no formal guarantee.
    for epsilon in (30.0, 244.0, 5000.0):
        assert "no meaningful formal guarantee" in epsilon_reading(epsilon, 1e-5)
