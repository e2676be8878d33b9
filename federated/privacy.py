"""What a differential-privacy budget means, said plainly for the people who rely on it.

A run's (ε, δ) bounds how much any one supplier's whole participation can change what the OEM
sees: every outcome's probability by at most a factor e^ε (plus δ). That factor is the number a
supplier should read, so the reading states it. The bands follow common practice in the DP
literature and in deployed systems (NIST SP 800-226, "Guidelines for Evaluating Differential
Privacy Guarantees", 2025, and the survey of deployed budgets it draws on): ε <= 1 is a strong
guarantee, up to about 10 is what deployments use when they accept a weaker one, and above 10
the bound (e^10 ~ 22,000) no longer says anything useful about an individual participant.

Two units of privacy are offered (docs/federated.md, "Differential privacy"): *client-level*
(a supplier's whole shot log; central noise on the mean of clipped updates, Flower's RDP
accountant) and *sample-level* (one shot record; each supplier's own DP-SGD, opacus). The same
bands read both; the sentence names the unit, because "one shot" is a much smaller thing to hide
than "one supplier".
"""

from __future__ import annotations

import math
from typing import Literal

STRONG_EPSILON = 1.0
MEANINGFUL_EPSILON = 10.0

Level = Literal["client", "sample"]
# What one unit of privacy is, as the reading names it.
_UNIT: dict[str, tuple[str, str]] = {
    "client": ("one supplier's participation", "an individual supplier"),
    "sample": ("any one shot record in a supplier's log", "an individual shot record"),
}


def epsilon_reading(epsilon: float, delta: float, level: Level = "client") -> str:
    """One sentence a supplier can act on, for a run's spent (ε, δ) at the given unit."""
    if level not in _UNIT:
        raise ValueError(f"level must be 'client' or 'sample', got {level!r}")
    who, individual = _UNIT[level]
    factor = math.exp(min(epsilon, 700.0))
    bound = f"changes the probability of anything the OEM sees by at most {factor:,.3g}x"
    if epsilon <= STRONG_EPSILON:
        return f"ε = {epsilon:.2f} (δ = {delta:g}): strong; {who} {bound}"
    if epsilon <= MEANINGFUL_EPSILON:
        return (
            f"ε = {epsilon:.2f} (δ = {delta:g}): moderate; {who} {bound}, "
            "a weaker but still meaningful bound"
        )
    return (
        f"ε = {epsilon:.1f} (δ = {delta:g}): above {MEANINGFUL_EPSILON:g}, no meaningful formal "
        f"guarantee for {individual}; rely on SecAgg+ (the server sees only sums) and "
        "on clipping, or add noise / train fewer rounds"
    )


def sample_level_epsilon(
    noise_multiplier: float, steps_per_epoch: int, steps: int, delta: float
) -> float:
    """ε of ``steps`` DP-SGD steps, each on a Poisson sample at rate ``1 / steps_per_epoch``.

    Opacus's RDP analysis of the subsampled Gaussian mechanism (Mironov et al. 2019), at its
    default orders: the accountant opacus's own ``PrivacyEngine`` uses. It depends only on the
    run's settings, not on a supplier's data size (the rate is fixed, the batch size varies), so
    the OEM and every supplier compute the same number.
    """
    if steps <= 0 or noise_multiplier <= 0:
        return 0.0 if steps <= 0 else math.inf
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(
        q=1.0 / steps_per_epoch, noise_multiplier=noise_multiplier, steps=steps, orders=orders
    )
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)
