"""What a differential-privacy budget means, said plainly for the people who rely on it.

A run's (ε, δ) bounds how much any one supplier's whole participation can change what the OEM
sees: every outcome's probability by at most a factor e^ε (plus δ). That factor is the number a
supplier should read, so the reading states it. The bands follow common practice in the DP
literature and in deployed systems (NIST SP 800-226, "Guidelines for Evaluating Differential
Privacy Guarantees", 2025, and the survey of deployed budgets it draws on): ε <= 1 is a strong
guarantee, up to about 10 is what deployments use when they accept a weaker one, and above 10
the bound (e^10 ~ 22,000) no longer says anything useful about an individual participant.
"""

from __future__ import annotations

import math

STRONG_EPSILON = 1.0
MEANINGFUL_EPSILON = 10.0


def epsilon_reading(epsilon: float, delta: float) -> str:
    """One sentence a supplier can act on, for a run's spent (ε, δ)."""
    factor = math.exp(min(epsilon, 700.0))
    bound = f"changes the probability of anything the OEM sees by at most {factor:,.3g}x"
    if epsilon <= STRONG_EPSILON:
        return f"ε = {epsilon:.2f} (δ = {delta:g}): strong; one supplier's participation {bound}"
    if epsilon <= MEANINGFUL_EPSILON:
        return (
            f"ε = {epsilon:.2f} (δ = {delta:g}): moderate; one supplier's participation {bound}, "
            "a weaker but still meaningful bound"
        )
    return (
        f"ε = {epsilon:.1f} (δ = {delta:g}): above {MEANINGFUL_EPSILON:g}, no meaningful formal "
        "guarantee for an individual supplier; rely on SecAgg+ (the server sees only sums) and "
        "on clipping, or add noise / train fewer rounds"
    )
