"""lstmbench.stats against cases worked out by hand (the working is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmbench.stats import holm, mcnemar_exact, paired_bootstrap, t_interval

# --- t_interval -----------------------------------------------------------------------------------


def test_t_interval_three_values_by_hand() -> None:
    # x = [0.5, 0.6, 0.7]: mean 0.6; deviations -0.1, 0, 0.1; sum of squares 0.02;
    # sample variance 0.02 / (3 - 1) = 0.01, so sd = 0.1.
    # t_{0.975, df=2}: with 2 degrees of freedom the t CDF is F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    # F(t) = 0.975  <=>  t / sqrt(2 + t^2) = 0.95  <=>  t^2 = 2 * 0.95^2 / (1 - 0.95^2)
    #   = 1.805 / 0.0975 = 18.51282...,  t = 4.3026527...
    # half-width = t * sd / sqrt(3) = 4.3026527 * 0.1 / 1.7320508 = 0.2484138...
    t = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    assert t == pytest.approx(4.30265273, abs=1e-8)
    half = t * 0.1 / math.sqrt(3)
    assert half == pytest.approx(0.24841377, abs=1e-8)

    iv = t_interval([0.5, 0.6, 0.7])
    assert iv.n == 3
    assert iv.mean == pytest.approx(0.6, abs=1e-12)
    assert iv.std == pytest.approx(0.1, abs=1e-12)
    assert iv.lower == pytest.approx(0.6 - half, abs=1e-9)
    assert iv.upper == pytest.approx(0.6 + half, abs=1e-9)
    assert iv.lower <= iv.mean <= iv.upper


def test_t_interval_two_values_cauchy_quantile() -> None:
    # x = [0, 1]: mean 0.5, sd = sqrt(((-.5)^2 + .5^2) / 1) = sqrt(0.5) = 0.7071068.
    # With 1 degree of freedom t is Cauchy: t_{0.975} = tan(pi * (0.975 - 0.5)) = 12.7062047.
    # half-width = 12.7062047 * 0.7071068 / sqrt(2) = 12.7062047 * 0.5 = 6.3531024.
    t = math.tan(math.pi * 0.475)
    iv = t_interval(np.array([0.0, 1.0]))
    assert iv.std == pytest.approx(math.sqrt(0.5), rel=1e-12)
    assert iv.upper - iv.mean == pytest.approx(t * 0.5, rel=1e-9)
    assert iv.mean - iv.lower == pytest.approx(t * 0.5, rel=1e-9)
    assert t * 0.5 == pytest.approx(6.3531024, abs=1e-6)


def test_t_interval_other_confidence_is_narrower() -> None:
    # 90 %: t_{0.95, df=2} from the same closed form with 0.90: t^2 = 2 * 0.81 / 0.19 = 8.526316,
    # t = 2.9199856; half-width 2.9199856 * 0.1 / sqrt(3) = 0.1685854.
    t = math.sqrt(2 * 0.9**2 / (1 - 0.9**2))
    iv = t_interval([0.5, 0.6, 0.7], confidence=0.90)
    assert iv.upper - iv.mean == pytest.approx(t * 0.1 / math.sqrt(3), rel=1e-9)
    assert iv.upper - iv.mean == pytest.approx(0.1685854, abs=1e-6)
    assert iv.upper - iv.mean < t_interval([0.5, 0.6, 0.7]).upper - 0.6


def test_t_interval_one_value_has_no_spread() -> None:
    # One seed: the spread is unknown; a zero-width interval would be a lie.
    iv = t_interval([0.8])
    assert iv.mean == 0.8 and iv.n == 1
    assert math.isnan(iv.std) and math.isnan(iv.lower) and math.isnan(iv.upper)


def test_t_interval_empty_and_constant() -> None:
    empty = t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.lower)
    # Identical values: sd 0, so the interval collapses onto the mean (and still brackets it).
    same = t_interval([0.25, 0.25, 0.25, 0.25])
    assert (same.lower, same.mean, same.upper, same.std) == (0.25, 0.25, 0.25, 0.0)


# --- mcnemar_exact --------------------------------------------------------------------------------


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=bool), np.array(b, dtype=bool)


def test_mcnemar_by_hand() -> None:
    # Discordant b = 1 (only A right), c = 5 (only B right), n = 6, under H0 b ~ Bin(6, 1/2).
    # Two-sided exact p = 2 * P(X <= 1) = 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64 = 0.21875.
    a, b = _pairs(both=10, only_a=1, only_b=5, neither=4)
    assert mcnemar_exact(a, b) == pytest.approx(0.21875, abs=1e-12)
    assert mcnemar_exact(b, a) == pytest.approx(0.21875, abs=1e-12)  # symmetric
    # Concordant pairs do not matter: only the discordant ones carry information.
    a2, b2 = _pairs(both=0, only_a=1, only_b=5, neither=0)
    assert mcnemar_exact(a2, b2) == pytest.approx(0.21875, abs=1e-12)


def test_mcnemar_more_cases_by_hand() -> None:
    # b = 0, c = 5: 2 * P(X <= 0) = 2 / 32 = 0.0625.
    assert mcnemar_exact(*_pairs(3, 0, 5, 2)) == pytest.approx(0.0625, abs=1e-12)
    # b = c = 3: the observed count is the mode; every outcome is at least as extreme: p = 1.
    assert mcnemar_exact(*_pairs(3, 3, 3, 2)) == pytest.approx(1.0)
    # b = 2, c = 8, n = 10: 2 * (1 + 10 + 45) / 1024 = 112 / 1024 = 0.109375.
    assert mcnemar_exact(*_pairs(0, 2, 8, 0)) == pytest.approx(0.109375, abs=1e-12)
    # Order of the examples is irrelevant; 0/1 integers work like booleans.
    a, b = _pairs(0, 2, 8, 0)
    perm = np.random.default_rng(1).permutation(len(a))
    assert mcnemar_exact(a[perm].astype(int), b[perm].astype(int)) == pytest.approx(0.109375)


def test_mcnemar_no_discordant_pairs_is_one() -> None:
    a = np.array([1, 0, 1, 1, 0], dtype=bool)
    assert mcnemar_exact(a, a.copy()) == 1.0
    assert mcnemar_exact(np.zeros(4), np.zeros(4)) == 1.0


# --- holm -----------------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # Sorted: 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> kept monotone: 0.09),
    # 0.5 (x1 = 0.5). Back in input order: [0.04, 0.09, 0.09, 0.5].
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5], abs=1e-12)


def test_holm_is_monotone_and_capped() -> None:
    # [0.011, 0.02]: 0.011 x 2 = 0.022; 0.02 x 1 = 0.02 < 0.022, so step-down gives 0.022 too.
    assert holm([0.02, 0.011]) == pytest.approx([0.022, 0.022], abs=1e-12)
    # [0.5, 0.6]: 0.5 x 2 = 1.0 (capped at 1), then max(1.0, 0.6) = 1.0.
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])
    # Ties: [0.01, 0.01] -> 0.02 each.
    assert holm([0.01, 0.01]) == pytest.approx([0.02, 0.02])
    # In sorted order the adjusted values never decrease, and never fall below the raw value.
    raw = [0.003, 0.2, 0.04, 0.01, 0.041, 0.9]
    adjusted = holm(raw)
    order = np.argsort(raw)
    assert all(np.diff(np.array(adjusted)[order]) >= 0)
    assert all(adj >= p for adj, p in zip(adjusted, raw, strict=True))


def test_holm_nan_left_out_of_the_family() -> None:
    # The family is {0.01, 0.04}: m = 2. 0.01 x 2 = 0.02; 0.04 x 1 = 0.04. NaN stays NaN.
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm([]) == []
    assert all(math.isnan(p) for p in holm([math.nan, math.nan]))
    assert holm([0.3]) == [0.3]  # a family of one is not adjusted


# --- paired_bootstrap -----------------------------------------------------------------------------


def test_bootstrap_identical_inputs_one_seed() -> None:
    # One seed each and the same examples drawn for A and B: every bootstrap delta is exactly 0,
    # so both tails hold all 2000 resamples: p = min(1, 2 * (2000 + 1) / 2001) = 1, CI [0, 0].
    rng = np.random.default_rng(0)
    a = (rng.random(200) < 0.7).astype(float)
    result = paired_bootstrap(a, a.copy())
    assert result.delta == 0.0
    assert (result.lower, result.upper) == (0.0, 0.0)
    assert result.p_value == 1.0


def test_bootstrap_identical_inputs_several_seeds() -> None:
    # Three different seeds, the same for A and B. Seeds are resampled independently for A and
    # for B, so resample deltas vary around 0 (the interval is not degenerate), but the observed
    # delta is 0 and nothing is significant.
    rng = np.random.default_rng(0)
    a = (rng.random((3, 200)) < 0.7).astype(float)
    result = paired_bootstrap(a, a.copy())
    assert result.delta == 0.0
    assert result.lower < 0.0 < result.upper
    assert result.p_value >= 0.5


def test_bootstrap_all_correct_vs_all_wrong() -> None:
    # A is right everywhere, B nowhere: every resample gives delta 1, so the interval is [1, 1]
    # and no resample is <= 0: p = 2 * (0 + 1) / (n_boot + 1) = 2 / 2001.
    a, b = np.ones((2, 50)), np.zeros((2, 50))
    result = paired_bootstrap(a, b, n_boot=2000)
    assert result.delta == 1.0
    assert (result.lower, result.upper) == (1.0, 1.0)
    assert result.p_value == pytest.approx(2 / 2001)
    assert result.p_value < 0.01
    flipped = paired_bootstrap(b, a, n_boot=2000)
    assert flipped.delta == -1.0 and (flipped.lower, flipped.upper) == (-1.0, -1.0)
    assert flipped.p_value == pytest.approx(2 / 2001)


def test_bootstrap_known_delta() -> None:
    # 100 examples, one seed each: A right on the first 60, B on the first 50 (a subset).
    # Observed delta = 60/100 - 50/100 = 0.1. Per resample, delta = (share of resampled examples
    # from indices 50..59), a Bin(100, 0.1)/100 variable: mean 0.1, sd 0.03, never negative.
    a = np.zeros(100)
    a[:60] = 1
    b = np.zeros(100)
    b[:50] = 1
    result = paired_bootstrap(a, b, n_boot=4000, seed=3)
    assert result.delta == pytest.approx(0.1, abs=1e-12)
    assert result.lower <= 0.1 <= result.upper
    # 95 % of Bin(100, .1)/100 lies in about [0.05, 0.16].
    assert 0.02 <= result.lower <= 0.07 and 0.13 <= result.upper <= 0.19
    # Only resamples with no example from 50..59 have delta <= 0: P = 0.9^100 = 2.7e-5, about
    # 0.1 of 4000 expected, so p = 2 * (k + 1) / 4001 with k (almost always 0) such resamples.
    assert result.p_value < 0.01
    assert result.p_value >= 2 / 4001  # the +1 keeps p above 0


def test_bootstrap_known_delta_several_seeds() -> None:
    # Two seeds each, same examples (200): A right on 60 % and 70 % (mean 0.65), B on 50 % twice.
    # Observed delta = 0.65 - 0.5 = 0.15 exactly (up to rounding).
    a = np.zeros((2, 200))
    a[0, :120] = 1
    a[1, :140] = 1
    b = np.zeros((2, 200))
    b[:, :100] = 1
    result = paired_bootstrap(a, b, seed=11)
    assert result.delta == pytest.approx(0.15, abs=1e-12)
    assert result.lower < 0.15 < result.upper
    assert result.lower > 0  # B is never right where A is wrong: every resample delta > 0


def test_bootstrap_resamples_seeds_too() -> None:
    # A's two seeds disagree completely (all right / all wrong), B is right on half.
    # Observed delta = 0.5 - 0.5 = 0. Resampling seeds picks {right, right} with prob 1/4
    # (delta ~ +0.5) and {wrong, wrong} with prob 1/4 (delta ~ -0.5), so a two-level bootstrap
    # must give an interval reaching to about -0.5 and +0.5; resampling examples alone would not.
    a = np.vstack([np.ones(100), np.zeros(100)])
    b = np.tile(np.r_[np.ones(50), np.zeros(50)], (2, 1))
    result = paired_bootstrap(a, b, seed=5)
    assert result.delta == 0.0
    assert result.lower <= -0.4 and result.upper >= 0.4
    assert result.p_value > 0.5


def test_bootstrap_is_deterministic_under_its_seed() -> None:
    rng = np.random.default_rng(42)
    a = (rng.random((3, 150)) < 0.6).astype(float)
    b = (rng.random((2, 150)) < 0.5).astype(float)  # different numbers of seeds are fine
    first = paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) == first
    other = paired_bootstrap(a, b, seed=8)
    assert other.delta == first.delta  # the observed difference does not depend on the seed
    assert (other.lower, other.upper, other.p_value) != (first.lower, first.upper, first.p_value)


def test_bootstrap_accepts_one_dimensional_inputs() -> None:
    # A 1-D vector is one seed: same as the (1, n) array.
    a = np.r_[np.ones(30), np.zeros(10)]
    b = np.r_[np.ones(20), np.zeros(20)]
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(a[None], b[None], seed=1)
    assert paired_bootstrap(a, b).delta == pytest.approx(0.25)  # 30/40 - 20/40


def test_bootstrap_mismatched_examples_is_an_error() -> None:
    with pytest.raises(ValueError, match="same test examples"):
        paired_bootstrap(np.ones((2, 100)), np.ones((2, 99)))
    with pytest.raises(ValueError, match="same test examples"):
        paired_bootstrap(np.ones(10), np.ones(11))
