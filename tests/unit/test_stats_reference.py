"""Every field of every test's result against the textbook formula, computed here from
the raw sample (``np.repeat`` of the histogram), including the empty and the spread-less
edge cases: the report reads all of them (means, difference, interval, p-value)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from image_search_service.services.rollout.stats import (
    CTR_MIXING_SD,
    WIN_SHARE_MIXING_SD,
    Comparison,
    bootstrap_mean_difference,
    mean_difference_test,
    msprt,
    sequential_mean_difference,
    sequential_two_proportions,
    sequential_win_share,
    sign_test,
    two_proportion_test,
)

Z95 = 1.959963984540054
VALUES = np.array([0.0, 1.0, 0.5, 0.25])
COUNTS_A = np.array([50, 20, 20, 10])
COUNTS_B = np.array([30, 40, 10, 20])


def fields(c: Comparison) -> tuple[float, ...]:
    return (c.a, c.b, c.difference, c.ci_low, c.ci_high, c.p_value, c.confidence)


def mixture(d: float, variance: float, tau: float, alpha: float = 0.05) -> tuple[float, float]:
    """The mSPRT p-value and confidence-sequence half-width (Johari et al. 2017)."""
    ratio = math.sqrt(variance / (variance + tau**2)) * math.exp(
        tau**2 * d**2 / (2 * variance * (variance + tau**2))
    )
    half = math.sqrt(
        variance
        * (variance + tau**2)
        / tau**2
        * (2 * math.log(1 / alpha) + math.log((variance + tau**2) / variance))
    )
    return min(1.0, 1 / ratio), half


def sample_moments(counts: np.ndarray) -> tuple[float, float, int]:
    sample = np.repeat(VALUES, counts)
    return float(sample.mean()), float(sample.var()), len(sample)


class TestFixedHorizon:
    def test_two_proportions_every_field(self) -> None:
        se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 200)
        expected = (0.1, 0.13, 0.03, 0.03 - Z95 * se, 0.03 + Z95 * se)
        result = two_proportion_test(100, 1000, 26, 200)
        assert fields(result) == pytest.approx(
            (*expected, math.erfc(0.03 / se / math.sqrt(2)), 0.95), rel=1e-9
        )

    def test_two_proportions_at_90_percent(self) -> None:
        result = two_proportion_test(100, 1000, 130, 1000, confidence=0.9)
        se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
        assert (result.ci_low, result.confidence) == pytest.approx((0.03 - 1.644854 * se, 0.9))

    @pytest.mark.parametrize(
        ("counts", "expected"),
        [
            ((0, 0, 5, 10), (0.0, 0.5, 0.5, -1.0, 1.0, 1.0, 0.95)),
            ((5, 10, 0, 0), (0.5, 0.0, -0.5, -1.0, 1.0, 1.0, 0.95)),
            ((0, 10, 0, 20), (0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.95)),  # no spread, no change
            ((0, 10, 20, 20), (0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.95)),  # no spread, exact
        ],
    )
    def test_two_proportions_edges(
        self, counts: tuple[int, int, int, int], expected: tuple[float, ...]
    ) -> None:
        assert fields(two_proportion_test(*counts)) == expected

    def test_mean_difference_is_welch_on_the_raw_sample(self) -> None:
        mean_a, var_a, n_a = sample_moments(COUNTS_A)
        mean_b, var_b, n_b = sample_moments(COUNTS_B)
        se = math.sqrt(var_a / n_a + var_b / n_b)
        d = mean_b - mean_a
        expected = (mean_a, mean_b, d, d - Z95 * se, d + Z95 * se)
        assert fields(mean_difference_test(VALUES, COUNTS_A, COUNTS_B)) == pytest.approx(
            (*expected, math.erfc(abs(d) / se / math.sqrt(2)), 0.95), rel=1e-9
        )

    def test_mean_difference_with_an_empty_arm(self) -> None:
        empty = np.zeros(4, dtype=np.int64)
        mean_a = sample_moments(COUNTS_A)[0]
        assert fields(mean_difference_test(VALUES, COUNTS_A, empty)) == pytest.approx(
            (mean_a, 0.0, -mean_a, -1.0, 1.0, 1.0, 0.95)
        )
        assert fields(mean_difference_test(VALUES, empty, COUNTS_A)) == pytest.approx(
            (0.0, mean_a, mean_a, -1.0, 1.0, 1.0, 0.95)
        )


class TestSequential:
    def test_two_proportions_every_field(self) -> None:
        variance = 0.3 * 0.7 / 1000 + 0.345 * 0.655 / 2000
        p, half = mixture(0.045, variance, CTR_MIXING_SD)
        result = sequential_two_proportions(300, 1000, 690, 2000)
        expected = (0.3, 0.345, 0.045, 0.045 - half, 0.045 + half, p, 0.95)
        assert fields(result) == pytest.approx(expected, rel=1e-9)

    def test_two_proportions_edges(self) -> None:
        assert fields(sequential_two_proportions(0, 0, 3, 10)) == pytest.approx(
            (0.0, 0.3, 0.3, -1.0, 1.0, 1.0, 0.95)
        )
        assert fields(sequential_two_proportions(3, 10, 0, 0)) == pytest.approx(
            (0.3, 0.0, -0.3, -1.0, 1.0, 1.0, 0.95)
        )
        # 0 of 10 against 0 of 40: no spread, so the variance of a coin flip is assumed.
        p, half = mixture(0.0, 0.25 / 10 + 0.25 / 40, CTR_MIXING_SD)
        assert fields(sequential_two_proportions(0, 10, 0, 40)) == pytest.approx(
            (0.0, 0.0, 0.0, max(-1.0, -half), min(1.0, half), p, 0.95)
        )
        assert fields(sequential_two_proportions(0, 10, 40, 40)) == (
            0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.95,
        )  # fmt: skip

    def test_mean_difference_every_field(self) -> None:
        mean_a, var_a, n_a = sample_moments(COUNTS_A)
        mean_b, var_b, n_b = sample_moments(COUNTS_B)
        d = mean_b - mean_a
        p, half = mixture(d, var_a / n_a + var_b / n_b, CTR_MIXING_SD)
        result = sequential_mean_difference(VALUES, COUNTS_A, COUNTS_B)
        expected = (mean_a, mean_b, d, max(-1.0, d - half), min(1.0, d + half), p, 0.95)
        assert fields(result) == pytest.approx(expected, rel=1e-9)

    def test_mean_difference_edges(self) -> None:
        empty = np.zeros(4, dtype=np.int64)
        mean_a = sample_moments(COUNTS_A)[0]
        assert fields(sequential_mean_difference(VALUES, COUNTS_A, empty)) == pytest.approx(
            (mean_a, 0.0, -mean_a, -1.0, 1.0, 1.0, 0.95)
        )
        assert fields(sequential_mean_difference(VALUES, empty, COUNTS_A)) == pytest.approx(
            (0.0, mean_a, mean_a, -1.0, 1.0, 1.0, 0.95)
        )
        ones_a, ones_b = np.array([0, 10, 0, 0]), np.array([0, 40, 0, 0])
        p, half = mixture(0.0, 0.25 / 10 + 0.25 / 40, CTR_MIXING_SD)
        assert fields(sequential_mean_difference(VALUES, ones_a, ones_b)) == pytest.approx(
            (1.0, 1.0, 0.0, max(-1.0, -half), min(1.0, half), p, 0.95)
        )
        zeros = np.array([10, 0, 0, 0])
        assert fields(sequential_mean_difference(VALUES, zeros, ones_b)) == (
            0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.95,
        )  # fmt: skip

    def test_win_share_every_field(self) -> None:
        p, half = mixture(0.25, 0.25 / 40, WIN_SHARE_MIXING_SD)
        expected = (0.5, 0.75, 0.25, 0.25 - half, min(0.5, 0.25 + half), p, 0.95)
        assert fields(sequential_win_share(30, 10)) == pytest.approx(expected, rel=1e-9)
        assert fields(sequential_win_share(0, 0)) == (0.5, 0.5, 0.0, -0.5, 0.5, 1.0, 0.95)
        few = sequential_win_share(3, 0)  # little data: clipped to what a share can be
        assert (few.ci_low, few.ci_high) == (-0.5, 0.5)

    def test_msprt_edges(self) -> None:
        widest = (-0.5, 0.25)
        for variance in (0.0, -1.0, math.inf, math.nan):
            result = msprt(0.2, 0.2, variance, mixing_sd=0.1, widest=widest)
            assert fields(result) == (0.2, 0.2, 0.0, -0.5, 0.25, 1.0, 0.95)
        assert fields(msprt(0.2, 0.3, 0.0, mixing_sd=0.1, confidence=0.9)) == pytest.approx(
            (0.2, 0.3, 0.1, 0.1, 0.1, 0.0, 0.9)
        )
        assert msprt(0.2, 0.3, -1.0, mixing_sd=0.1).p_value == 1.0  # no variance: no evidence
        p, half = mixture(0.1, 0.001, 0.1, alpha=0.1)
        at_90 = msprt(0.2, 0.3, 0.001, mixing_sd=0.1, confidence=0.9)
        assert fields(at_90) == pytest.approx((0.2, 0.3, 0.1, 0.1 - half, 0.1 + half, p, 0.9))

    def test_msprt_without_evidence_has_p_one(self) -> None:
        # A tiny difference on a large variance: the mixture ratio is below 1.
        assert msprt(0.5, 0.5001, 0.01, mixing_sd=0.02).p_value == 1.0


def test_sign_test_keeps_its_counts() -> None:
    result = sign_test(9, 1, ties=4)
    assert (result.wins, result.losses, result.ties) == (9, 1, 4)
    assert sign_test(9, 1).ties == 0
    empty = sign_test(0, 0, ties=3)
    assert (empty.wins, empty.losses, empty.ties, empty.p_value) == (0, 0, 3, 1.0)
    assert sign_test(2, 0).p_value == pytest.approx(0.5)


@pytest.mark.parametrize(
    "compute",
    [
        lambda c: two_proportion_test(10, 100, 20, 100, confidence=c),
        lambda c: two_proportion_test(0, 0, 20, 100, confidence=c),
        lambda c: two_proportion_test(0, 10, 10, 10, confidence=c),
        lambda c: mean_difference_test(VALUES, COUNTS_A, COUNTS_B, confidence=c),
        lambda c: mean_difference_test(VALUES, COUNTS_A, 0 * COUNTS_B, confidence=c),
        lambda c: sequential_two_proportions(10, 100, 20, 100, confidence=c),
        lambda c: sequential_two_proportions(0, 0, 20, 100, confidence=c),
        lambda c: sequential_mean_difference(VALUES, COUNTS_A, COUNTS_B, confidence=c),
        lambda c: sequential_mean_difference(VALUES, 0 * COUNTS_A, COUNTS_B, confidence=c),
        lambda c: sequential_win_share(30, 10, confidence=c),
        lambda c: sequential_win_share(0, 0, confidence=c),
        lambda c: msprt(0.2, 0.2, 0.0, mixing_sd=0.1, confidence=c),
        lambda c: bootstrap_mean_difference(VALUES, COUNTS_A, COUNTS_B, confidence=c),
        lambda c: bootstrap_mean_difference(VALUES, 0 * COUNTS_A, COUNTS_B, confidence=c),
    ],
)
def test_every_result_says_its_confidence(compute: Any) -> None:
    assert compute(0.9).confidence == 0.9


class TestVarianceFloor:
    """With no spread and no difference, the variance of a fair coin is assumed: on
    10,000 searches an arm the interval is then a couple of points wide, not [-1, 1]."""

    def test_two_proportions(self) -> None:
        p, half = mixture(0.0, 0.25 / 10_000 + 0.25 / 20_000, CTR_MIXING_SD)
        result = sequential_two_proportions(0, 10_000, 0, 20_000)
        assert half < 0.05
        assert (result.ci_low, result.ci_high, result.p_value) == pytest.approx((-half, half, p))

    def test_mean_difference(self) -> None:
        a, b = np.array([0, 10_000, 0, 0]), np.array([0, 20_000, 0, 0])
        p, half = mixture(0.0, 0.25 / 10_000 + 0.25 / 20_000, CTR_MIXING_SD)
        result = sequential_mean_difference(VALUES, a, b)
        assert (result.ci_low, result.ci_high, result.p_value) == pytest.approx((-half, half, p))

    def test_equal_means_with_spread_keep_their_variance(self) -> None:
        _, var_a, n_a = sample_moments(COUNTS_A)
        p, half = mixture(0.0, 2 * var_a / n_a, CTR_MIXING_SD)
        result = sequential_mean_difference(VALUES, COUNTS_A, COUNTS_A.copy())
        assert (result.ci_low, result.ci_high, result.p_value) == pytest.approx(
            (max(-1.0, -half), min(1.0, half), p)
        )
