"""The few statistics the experiment report needs, in plain Python and numpy.

Normal quantiles come from :class:`statistics.NormalDist` and binomial tails from
exact sums, so the service needs no SciPy. Each function says which test it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Comparison:
    """``b - a`` with a two-sided confidence interval and p-value."""

    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - self.confidence


def two_proportion_test(
    successes_a: int, n_a: int, successes_b: int, n_b: int, *, confidence: float = 0.95
) -> Comparison:
    """Two-proportion z-test (pooled standard error for the p-value, unpooled for the
    Wald interval of the difference ``p_b - p_a``)."""
    p_a = successes_a / n_a if n_a else 0.0
    p_b = successes_b / n_b if n_b else 0.0
    diff = p_b - p_a
    if not n_a or not n_b:
        return Comparison(p_a, p_b, diff, -1.0, 1.0, 1.0, confidence)
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se_pooled == 0:
        p_value = 1.0
    else:
        # erfc keeps precision far into the tail, where 1 - cdf rounds to 0.
        p_value = math.erfc(abs(diff) / se_pooled / math.sqrt(2))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    return Comparison(p_a, p_b, diff, diff - z * se, diff + z * se, min(1.0, p_value), confidence)


def bootstrap_mean_difference(
    values: np.ndarray,
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    *,
    replicates: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Bootstrap of ``mean_b - mean_a`` for samples given as histograms over ``values``
    (how many searches of each arm had each value, e.g. reciprocal rank of the first
    click). Resampling a histogram is a multinomial draw, so the cost does not grow with
    the number of searches. Percentile interval; the p-value is twice the share of
    replicates on the far side of zero (at least 1 / replicates)."""
    n_a, n_b = int(counts_a.sum()), int(counts_b.sum())
    mean_a = float(values @ counts_a) / n_a if n_a else 0.0
    mean_b = float(values @ counts_b) / n_b if n_b else 0.0
    diff = mean_b - mean_a
    if not n_a or not n_b:
        # No sample, no knowledge: the widest interval for values in [0, 1].
        return Comparison(mean_a, mean_b, diff, -1.0, 1.0, 1.0, confidence)
    rng = np.random.default_rng(seed)
    draws_a = rng.multinomial(n_a, counts_a / n_a, size=replicates) @ values / n_a
    draws_b = rng.multinomial(n_b, counts_b / n_b, size=replicates) @ values / n_b
    diffs = draws_b - draws_a
    alpha = 1 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    if np.all(diffs == diffs[0]):
        p_value = 1.0 if diffs[0] == 0 else 1.0 / replicates
    else:
        far = min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
        p_value = min(1.0, max(2 * far, 1.0 / replicates))
    return Comparison(mean_a, mean_b, diff, float(low), float(high), p_value, confidence)


def sample_size_two_proportions(
    p_a: float, effect: float, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Searches per arm for a two-sided two-proportion z-test to detect ``p_a`` moving
    to ``p_a + effect`` (absolute), at significance ``alpha`` with ``power``. None when
    no such proportion exists (effect zero or past 0 / 1)."""
    p_b = p_a + effect
    if effect == 0 or not 0 < p_b < 1 or not 0 <= p_a < 1:
        return None
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_beta = _NORMAL.inv_cdf(power)
    mean = (p_a + p_b) / 2
    numerator = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(
        p_a * (1 - p_a) + p_b * (1 - p_b)
    )
    try:
        return math.ceil((numerator / effect) ** 2)
    except OverflowError:  # an effect too small to ever detect
        return None


@dataclass(frozen=True)
class SignTest:
    wins: int
    losses: int
    ties: int
    p_value: float


def sign_test(wins: int, losses: int, ties: int = 0) -> SignTest:
    """Exact two-sided sign test of wins against losses (ties dropped): the binomial
    probability, under p = 1/2, of a split at least as uneven as the one seen."""
    n = wins + losses
    if n == 0:
        return SignTest(wins, losses, ties, 1.0)
    k = min(wins, losses)
    # Sum in log space: exact enough and safe for large n.
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(_log_comb(n, i) + log_half_n) for i in range(k + 1))
    return SignTest(wins, losses, ties, min(1.0, 2 * tail))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def histogram_quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a sample given as counts per sorted value."""
    total = int(counts.sum())
    if total == 0:
        return None
    order = np.argsort(values)
    cumulative = np.cumsum(counts[order])
    index = int(np.searchsorted(cumulative, q * total, side="left"))
    return float(values[order][min(index, len(order) - 1)])
