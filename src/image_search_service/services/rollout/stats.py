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
    """Two-proportion z-test of ``p_b - p_a`` with the unpooled (Wald) standard error
    for both the p-value and the interval, so the interval excludes 0 exactly when
    ``p < 1 - confidence``. An empty arm gives the widest interval and p = 1."""
    p_a = successes_a / n_a if n_a else 0.0
    p_b = successes_b / n_b if n_b else 0.0
    diff = p_b - p_a
    if not n_a or not n_b:
        return Comparison(p_a, p_b, diff, -1.0, 1.0, 1.0, confidence)
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return _wald(p_a, p_b, diff, se, confidence)


def mean_difference_test(
    values: np.ndarray, counts_a: np.ndarray, counts_b: np.ndarray, *, confidence: float = 0.95
) -> Comparison:
    """Welch z-test of ``mean_b - mean_a`` for samples given as histograms over
    ``values`` (e.g. reciprocal rank of the first click); interval and p-value share one
    standard error, so they agree."""
    n_a, n_b = int(counts_a.sum()), int(counts_b.sum())
    mean_a = float(values @ counts_a) / n_a if n_a else 0.0
    mean_b = float(values @ counts_b) / n_b if n_b else 0.0
    diff = mean_b - mean_a
    if not n_a or not n_b:
        return Comparison(mean_a, mean_b, diff, -1.0, 1.0, 1.0, confidence)
    var_a = float((values - mean_a) ** 2 @ counts_a) / n_a
    var_b = float((values - mean_b) ** 2 @ counts_b) / n_b
    return _wald(mean_a, mean_b, diff, math.sqrt(var_a / n_a + var_b / n_b), confidence)


def _wald(a: float, b: float, diff: float, se: float, confidence: float) -> Comparison:
    if se == 0:
        # No spread at all: the difference is exact (0 -> p = 1, otherwise p = 0).
        return Comparison(a, b, diff, diff, diff, 1.0 if diff == 0 else 0.0, confidence)
    z = _NORMAL.inv_cdf(1 - (1 - confidence) / 2)
    # erfc keeps precision far into the tail, where 1 - cdf rounds to 0.
    p_value = math.erfc(abs(diff) / se / math.sqrt(2))
    return Comparison(a, b, diff, diff - z * se, diff + z * se, min(1.0, p_value), confidence)


# -- sequential (always valid) inference -----------------------------------------------
#
# mSPRT (Johari, Pekelis, Walsh, "Always valid inference", 2017; Robbins' normal
# mixture): for an estimate ``d`` of a difference with variance ``V`` (normal
# approximation), the mixture likelihood ratio against "no difference", mixing over a
# true difference drawn from N(0, tau^2), is
#
#     L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))
#
# and P(L ever exceeds 1/alpha | no difference) <= alpha. So ``p = min(1, 1/L)`` is an
# always-valid p-value, and the matching confidence sequence is the set of differences
# ``theta`` whose own ratio stays below 1/alpha:
#
#     |d - theta| <= sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)))
#
# which excludes 0 exactly when p < alpha. ``tau`` (the mixing standard deviation) is
# the size of difference the test is most sensitive to; it changes power, never
# validity.

CTR_MIXING_SD = 0.02  # two points of click-through (or of MRR): the effects that matter
WIN_SHARE_MIXING_SD = 0.15  # interleaving: a win share of 50% +- 15 points


@dataclass(frozen=True)
class Sequential(Comparison):
    """An always-valid test of the difference against 0: its p-value and interval hold
    whenever they are read (mSPRT), not only at a planned sample size."""


def msprt(
    a: float,
    b: float,
    variance: float,
    *,
    mixing_sd: float,
    confidence: float = 0.95,
    widest: tuple[float, float] = (-1.0, 1.0),
) -> Sequential:
    """mSPRT of ``b - a`` whose estimate has ``variance`` (see the block above)."""
    diff = b - a
    if variance <= 0 or not math.isfinite(variance):
        if variance == 0 and diff != 0:
            return Sequential(a, b, diff, diff, diff, 0.0, confidence)
        return Sequential(a, b, diff, widest[0], widest[1], 1.0, confidence)
    alpha = 1 - confidence
    tau2 = mixing_sd**2
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + tau2 * diff**2 / (
        2 * variance * (variance + tau2)
    )
    p_value = 1.0 if log_ratio <= 0 else math.exp(-log_ratio)
    half = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )
    # Clipped to what the difference can be (a confidence sequence may run past it on
    # little data); the range holds 0, so the interval excludes 0 exactly as before.
    low, high = max(widest[0], diff - half), min(widest[1], diff + half)
    return Sequential(a, b, diff, low, high, min(1.0, p_value), confidence)


def sequential_two_proportions(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    *,
    mixing_sd: float = CTR_MIXING_SD,
    confidence: float = 0.95,
) -> Sequential:
    """Always-valid test of ``p_b - p_a`` (unpooled variance). An empty arm: p = 1."""
    p_a = successes_a / n_a if n_a else 0.0
    p_b = successes_b / n_b if n_b else 0.0
    if not n_a or not n_b:
        return Sequential(p_a, p_b, p_b - p_a, -1.0, 1.0, 1.0, confidence)
    variance = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    if variance == 0:
        # 0/n against 0/m (or all against all): no evidence of a difference yet.
        variance = 0.25 / n_a + 0.25 / n_b if p_a == p_b else 0.0
    return msprt(p_a, p_b, variance, mixing_sd=mixing_sd, confidence=confidence)


def sequential_mean_difference(
    values: np.ndarray,
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    *,
    mixing_sd: float = CTR_MIXING_SD,
    confidence: float = 0.95,
) -> Sequential:
    """Always-valid test of ``mean_b - mean_a`` for histograms over ``values``."""
    n_a, n_b = int(counts_a.sum()), int(counts_b.sum())
    mean_a = float(values @ counts_a) / n_a if n_a else 0.0
    mean_b = float(values @ counts_b) / n_b if n_b else 0.0
    if not n_a or not n_b:
        return Sequential(mean_a, mean_b, mean_b - mean_a, -1.0, 1.0, 1.0, confidence)
    var_a = float((values - mean_a) ** 2 @ counts_a) / n_a
    var_b = float((values - mean_b) ** 2 @ counts_b) / n_b
    variance = var_a / n_a + var_b / n_b
    if variance == 0 and mean_a == mean_b:
        variance = 0.25 / n_a + 0.25 / n_b
    return msprt(mean_a, mean_b, variance, mixing_sd=mixing_sd, confidence=confidence)


def sequential_win_share(
    wins: int, losses: int, *, mixing_sd: float = WIN_SHARE_MIXING_SD, confidence: float = 0.95
) -> Sequential:
    """Always-valid sign test: the candidate's share of decided interleaved searches
    against 1/2 (variance 1/(4n) under the null). ``a`` = 0.5, ``b`` = the share."""
    n = wins + losses
    if n == 0:
        return Sequential(0.5, 0.5, 0.0, -0.5, 0.5, 1.0, confidence)
    return msprt(
        0.5, wins / n, 0.25 / n, mixing_sd=mixing_sd, confidence=confidence, widest=(-0.5, 0.5)
    )


def sequential_sample_size(
    p_a: float,
    effect: float,
    *,
    mixing_sd: float = CTR_MIXING_SD,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int | None:
    """Searches per arm at which the mSPRT, read once, detects ``p_a`` moving to
    ``p_a + effect`` with probability ``power`` (normal approximation): the smallest
    ``n`` where the ``1 - power`` quantile of the estimate already crosses the
    boundary. Read continuously it only stops earlier. None when impossible."""
    p_b = p_a + effect
    if effect == 0 or not 0 < p_b < 1 or not 0 <= p_a < 1:
        return None
    z_beta = _NORMAL.inv_cdf(power)
    per_search = p_a * (1 - p_a) + p_b * (1 - p_b)

    def detects(n: int) -> bool:
        variance = per_search / n
        low = abs(effect) - z_beta * math.sqrt(variance)
        if low <= 0:
            return False
        return msprt(0.0, low, variance, mixing_sd=mixing_sd, confidence=1 - alpha).significant

    high = 1
    while not detects(high):
        high *= 2
        if high > 10**12:
            return None
    low = high // 2
    while low + 1 < high:
        mid = (low + high) // 2
        if detects(mid):
            high = mid
        else:
            low = mid
    return high


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
