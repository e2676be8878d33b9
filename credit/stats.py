"""Small-sample bounds for the rates and capability indices a score rests on.

A score must not reward a supplier for having shown little: a rate from 300 sampled units with no
defect is not "0 ppm", and a Cpk from 20 values is not known to two decimals. The score therefore
reads one-sided 95% bounds, the side that is unfavourable to the supplier:

* **PPM**: the Clopper-Pearson (exact binomial) upper bound, ``Beta(1 - a; d + 1, n - d)``
  (Clopper & Pearson 1934, Biometrika 26:404; the interval R's ``binom.test`` reports). With
  ``d = 0`` it is ``1 - a**(1/n)``, about the "rule of three" 3/n.
* **Cpk / Ppk**: Bissell's normal-approximation lower bound,
  ``C - z(1-a) * sqrt(1/(9n) + C**2 / (2(n-1)))`` (Bissell 1990, J. Quality Technology 22(2);
  Montgomery, *Introduction to Statistical Quality Control*, 8th ed., section 8.3.5).
* **Stability before capability**: an X-bar check of the lot subgroups against
  ``grand mean +/- 3 sigma_within / sqrt(k)`` (Shewhart limits, Montgomery ch. 6). A process with a
  subgroup mean outside its limits is not in statistical control, so its Cpk (within-lot sigma)
  would overstate it; the score then uses Ppk (overall sigma) instead (AIAG PPAP/SPC manuals:
  capability indices assume a stable process).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import beta, norm

CONFIDENCE = 0.95  # one-sided: the score reads the bound unfavourable to the supplier
Z_ONE_SIDED = float(norm.ppf(CONFIDENCE))  # 1.6449


def ppm_upper_bound(defects: float, sampled: float, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of the defect rate, in ppm (1e6 with no sample)."""
    if sampled <= 0:
        return 1e6
    defects = min(max(defects, 0.0), sampled)
    if defects >= sampled:
        return 1e6
    return 1e6 * float(beta.ppf(confidence, defects + 1, sampled - defects))


def capability_lower_bound(index: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Bissell's lower confidence bound of a Cpk or Ppk estimated from ``n`` values."""
    if n < 2:
        return -math.inf
    z = float(norm.ppf(confidence))
    return index - z * math.sqrt(1 / (9 * n) + index**2 / (2 * (n - 1)))


@dataclass(frozen=True)
class Capability:
    cpk: float  # within-lot sigma
    ppk: float  # overall sigma
    n: int
    stable: bool
    lower_bound: float  # Bissell bound of Cpk when stable, of Ppk when not

    @property
    def scored(self) -> float:
        return self.lower_bound


def _index(mean: float, sigma: float, lsl: float | None, usl: float | None) -> float:
    sides = []
    if usl is not None:
        sides.append(usl - mean)
    if lsl is not None:
        sides.append(mean - lsl)
    if sigma == 0:
        return 5.0 if min(sides) > 0 else -1.0
    return min(sides) / (3 * sigma)


def capability(
    subgroups: Sequence[Sequence[float]],
    lsl: float | None,
    usl: float | None,
    min_df: int,
) -> Capability | None:
    """Cpk, Ppk, stability and the scored lower bound from lot subgroups (None if too few)."""
    groups = [list(g) for g in subgroups if len(g) >= 2]
    df = sum(len(g) - 1 for g in groups)
    if df < min_df:
        return None
    values = [v for g in groups for v in g]
    n = len(values)
    grand = math.fsum(values) / n
    within_ss = math.fsum(math.fsum((v - math.fsum(g) / len(g)) ** 2 for v in g) for g in groups)
    sigma_within = math.sqrt(within_ss / df)
    sigma_overall = math.sqrt(math.fsum((v - grand) ** 2 for v in values) / (n - 1))
    stable = all(
        abs(math.fsum(g) / len(g) - grand) <= 3 * sigma_within / math.sqrt(len(g)) for g in groups
    )
    cpk = _index(grand, sigma_within, lsl, usl)
    ppk = _index(grand, sigma_overall, lsl, usl)
    bound = capability_lower_bound(cpk if stable else ppk, n)
    return Capability(cpk=cpk, ppk=ppk, n=n, stable=stable, lower_bound=bound)
