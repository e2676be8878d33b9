"""Small-sample bounds against published reference values."""

from __future__ import annotations

import math

import pytest

from credit.stats import capability, capability_lower_bound, ppm_upper_bound


def test_zero_defects_bound_is_the_exact_rule_of_three() -> None:
    # Clopper-Pearson with d = 0 has the closed form 1 - alpha**(1/n); ~3/n ("rule of three").
    assert ppm_upper_bound(0, 300) == pytest.approx(1e6 * (1 - 0.05 ** (1 / 300)), rel=1e-9)
    assert ppm_upper_bound(0, 300) == pytest.approx(9936, abs=1)
    assert ppm_upper_bound(0, 0) == 1e6


def test_clopper_pearson_matches_r_binom_test() -> None:
    # R: binom.test(2, 100)$conf.int -> 0.002431337 0.070383585 (two-sided 95%, i.e. the
    # one-sided 97.5% upper bound).
    assert ppm_upper_bound(2, 100, confidence=0.975) == pytest.approx(70383.585, abs=0.5)


def test_bound_shrinks_with_evidence_and_grows_with_defects() -> None:
    assert ppm_upper_bound(0, 1000) < ppm_upper_bound(0, 100)
    assert ppm_upper_bound(3, 1000) > ppm_upper_bound(1, 1000)


def test_cpk_bound_matches_montgomery_example() -> None:
    # Montgomery, Introduction to SQC: n = 20, Cpk = 1.33 -> approximate 95% two-sided
    # interval 0.88 <= Cpk <= 1.78 (Bissell's normal approximation); its lower end is the
    # one-sided 97.5% bound.
    assert capability_lower_bound(1.33, 20, confidence=0.975) == pytest.approx(0.88, abs=0.005)
    assert capability_lower_bound(1.33, 20) > capability_lower_bound(1.33, 20, confidence=0.975)


def test_ppk_replaces_cpk_when_lot_means_are_out_of_control() -> None:
    stable = [[10.0 + 0.1 * ((k * 7 + j) % 5 - 2) for j in range(5)] for k in range(8)]
    cap = capability(stable, 9.0, 11.0, min_df=18)
    assert cap is not None and cap.stable
    assert cap.lower_bound == pytest.approx(capability_lower_bound(cap.cpk, cap.n))
    shifted = [*stable, [v + 0.8 for v in stable[0]]]  # one lot's mean far off
    cap2 = capability(shifted, 9.0, 11.0, min_df=18)
    assert cap2 is not None and not cap2.stable
    assert cap2.ppk < cap2.cpk
    assert cap2.lower_bound == pytest.approx(capability_lower_bound(cap2.ppk, cap2.n))


def test_too_few_values_is_no_estimate() -> None:
    assert capability([[1.0, 1.1, 0.9]], 0.0, 2.0, min_df=18) is None
    assert capability_lower_bound(1.5, 1) == -math.inf
