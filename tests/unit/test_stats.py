"""The experiment's statistics against textbook values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from image_search_service.services.rollout.stats import (
    bootstrap_mean_difference,
    histogram_quantile,
    mean_difference_test,
    sample_size_two_proportions,
    sign_test,
    two_proportion_test,
)


class TestTwoProportions:
    def test_matches_the_unpooled_z_test(self) -> None:
        # One standard error for the test and the interval, so they agree (issue 19).
        result = two_proportion_test(100, 1000, 130, 1000)
        se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
        assert result.difference == pytest.approx(0.03)
        assert result.p_value == pytest.approx(math.erfc(0.03 / se / math.sqrt(2)), rel=1e-9)
        assert result.p_value == pytest.approx(0.0353, abs=5e-4)
        assert result.significant
        assert (result.ci_low, result.ci_high) == pytest.approx(
            (0.03 - 1.96 * se, 0.03 + 1.96 * se), abs=1e-4
        )

    def test_equal_rates_and_empty_arms_are_not_significant(self) -> None:
        assert two_proportion_test(50, 100, 50, 100).p_value == pytest.approx(1.0)
        assert two_proportion_test(0, 0, 5, 10).p_value == 1.0
        assert two_proportion_test(0, 10, 0, 10).p_value == 1.0


class TestSampleSize:
    def test_matches_the_standard_formula(self) -> None:
        # 10% -> 12% at alpha 0.05 and power 0.8: 3841 per group (Fleiss, no correction).
        assert sample_size_two_proportions(0.10, 0.02) == 3841
        assert sample_size_two_proportions(0.5, 0.1) == 388

    def test_smaller_effects_need_more(self) -> None:
        sizes = [sample_size_two_proportions(0.3, e) or 0 for e in (0.1, 0.05, 0.02, 0.01)]
        assert sizes == sorted(sizes)
        assert sizes[-1] > 30_000

    def test_impossible_effects(self) -> None:
        assert sample_size_two_proportions(0.3, 0.0) is None
        assert sample_size_two_proportions(0.95, 0.1) is None


class TestSignTest:
    def test_exact_binomial_tail(self) -> None:
        # 9 wins, 1 loss: 2 * (C(10,0) + C(10,1)) / 2^10
        assert sign_test(9, 1).p_value == pytest.approx(22 / 1024)
        assert sign_test(1, 9, ties=5).p_value == pytest.approx(22 / 1024)

    def test_balanced_and_empty(self) -> None:
        assert sign_test(10, 10).p_value == 1.0
        assert sign_test(0, 0).p_value == 1.0

    def test_large_counts_stay_finite(self) -> None:
        p = sign_test(5300, 4700).p_value
        assert 0 < p < 1e-8


class TestBootstrap:
    values = np.array([0.0, 1.0, 0.5, 1 / 3])

    def test_detects_a_real_difference_reproducibly(self) -> None:
        a = np.array([600, 200, 100, 100])
        b = np.array([400, 400, 100, 100])
        first = bootstrap_mean_difference(self.values, a, b, seed=1)
        again = bootstrap_mean_difference(self.values, a, b, seed=1)
        assert first == again
        assert first.difference == pytest.approx((0.4 + 0.05 + 1 / 30) - (0.2 + 0.05 + 1 / 30))
        assert first.ci_low > 0
        assert first.significant

    def test_no_difference_is_not_significant(self) -> None:
        a = np.array([500, 300, 100, 100])
        result = bootstrap_mean_difference(self.values, a, a.copy(), seed=2)
        assert result.ci_low < 0 < result.ci_high
        assert result.p_value > 0.3

    def test_agrees_with_the_welch_test_on_a_large_sample(self) -> None:
        # 10,000 searches an arm: the bootstrap's two-sided p-value and 95% interval are
        # the normal approximation's, within Monte Carlo error (a one-sided p-value
        # would be half; a 90% interval 16% narrower).
        a = np.array([6000, 2000, 1000, 1000])
        b = np.array([5900, 2100, 1000, 1000])
        boot = bootstrap_mean_difference(self.values, a, b)
        welch = mean_difference_test(self.values, a, b)
        assert boot.p_value == pytest.approx(welch.p_value, rel=0.25)
        assert not boot.significant
        half = (welch.ci_high - welch.ci_low) / 2
        assert boot.ci_low == pytest.approx(welch.ci_low, abs=0.04 * half)
        assert boot.ci_high == pytest.approx(welch.ci_high, abs=0.04 * half)
        assert (boot.ci_low + boot.ci_high) / 2 == pytest.approx(boot.difference, abs=1e-3)
        assert (boot.a, boot.b, boot.confidence) == (welch.a, welch.b, 0.95)

    def test_the_defaults_are_2000_replicates_from_seed_0(self) -> None:
        a, b = np.array([600, 200, 100, 100]), np.array([550, 250, 100, 100])
        assert bootstrap_mean_difference(self.values, a, b) == bootstrap_mean_difference(
            self.values, a, b, replicates=2000, seed=0
        )

    @pytest.mark.parametrize("flip", [False, True])
    def test_replicates_tied_at_zero_count_on_both_sides(self, flip: bool) -> None:
        # One arm always 0, the other 0 in a quarter of the replicates: the share on
        # the far side counts the ties, so p is about 2 * 1/4, in either direction.
        always, half = np.array([2, 0, 0, 0]), np.array([1, 1, 0, 0])
        a, b = (half, always) if flip else (always, half)
        p = bootstrap_mean_difference(self.values, a, b).p_value
        assert 0.4 < p < 0.6

    def test_the_p_value_is_never_below_one_over_the_replicates(self) -> None:
        a = np.array([900, 100, 0, 0])
        b = np.array([100, 900, 0, 0])
        assert bootstrap_mean_difference(self.values, a, b, replicates=500).p_value == 1 / 500

    def test_a_difference_without_spread_is_exact(self) -> None:
        ones, zeros = np.array([0, 10, 0, 0]), np.array([10, 0, 0, 0])
        same = bootstrap_mean_difference(self.values, ones, ones.copy(), replicates=100)
        assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
        apart = bootstrap_mean_difference(self.values, zeros, ones, replicates=100)
        assert (apart.difference, apart.ci_low, apart.ci_high) == (1.0, 1.0, 1.0)
        assert apart.p_value == 1 / 100

    def test_empty_arm(self) -> None:
        result = bootstrap_mean_difference(
            self.values, np.zeros(4, dtype=np.int64), np.array([1, 2, 3, 4])
        )
        assert (result.ci_low, result.ci_high, result.p_value) == (-1.0, 1.0, 1.0)
        mean_b = (2 * 1.0 + 3 * 0.5 + 4 / 3) / 10
        assert (result.a, result.b, result.confidence) == pytest.approx((0.0, mean_b, 0.95))
        assert result.difference == pytest.approx(mean_b)
        other = bootstrap_mean_difference(
            self.values, np.array([1, 2, 3, 4]), np.zeros(4, dtype=np.int64)
        )
        assert (other.b, other.difference) == pytest.approx((0.0, -mean_b))


def test_histogram_quantile() -> None:
    values = np.array([30.0, 10.0, 20.0])
    counts = np.array([10, 50, 40])
    assert histogram_quantile(values, counts, 0.5) == 10.0
    assert histogram_quantile(values, counts, 0.95) == 30.0
    assert histogram_quantile(values, np.zeros(3, dtype=np.int64), 0.5) is None
