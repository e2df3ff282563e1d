"""The sequential statistics and the decision rule: intervals that agree with their
p-values, false alarms bounded under continuous monitoring (A/A peeking simulation),
and one decision over A/B and interleaving."""

from __future__ import annotations

import itertools

import numpy as np

from image_search_service.services.rollout.flags import RolloutState
from image_search_service.services.rollout.report import (
    ComparisonOut,
    GuardrailOut,
    InterleavingOut,
    PowerOut,
    decide,
)
from image_search_service.services.rollout.stats import (
    mean_difference_test,
    msprt,
    sample_size_two_proportions,
    sequential_mean_difference,
    sequential_sample_size,
    sequential_two_proportions,
    sequential_win_share,
    two_proportion_test,
)

ALPHA = 0.05
EXPERIMENTS, LOOKS, STEP, RATE = 200, 30, 200, 0.3


def _aa_counts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative clicked searches of two identical arms (the same click model: a
    search is clicked with probability RATE), per search."""
    rng = np.random.default_rng(seed)
    shape = (EXPERIMENTS, LOOKS * STEP)
    return np.cumsum(rng.random(shape) < RATE, axis=1), np.cumsum(rng.random(shape) < RATE, axis=1)


def _false_alarms(test: str) -> float:
    a, b = _aa_counts(2026)
    alarms = 0
    for e in range(EXPERIMENTS):
        for look in range(1, LOOKS + 1):
            n = look * STEP
            x, y = int(a[e, n - 1]), int(b[e, n - 1])
            if test == "sequential":
                hit = sequential_two_proportions(x, n, y, n).significant
            else:
                hit = two_proportion_test(x, n, y, n).significant
            if hit:
                alarms += 1
                break
    return alarms / EXPERIMENTS


class TestPeeking:
    def test_the_sequential_test_keeps_false_alarms_at_alpha_when_read_30_times(self) -> None:
        assert _false_alarms("sequential") <= ALPHA

    def test_the_fixed_horizon_test_read_30_times_does_not(self) -> None:
        # The control: the same A/A data, the old z-test looked at after every step.
        assert _false_alarms("fixed") > 2 * ALPHA


def _agrees(low: float, high: float, p: float) -> bool:
    return (low > 0 or high < 0) == (p < ALPHA)


class TestIntervalsAgreeWithTests:
    counts = [0, 1, 3, 10, 29, 30, 31, 50, 97, 100]

    def test_two_proportions_fixed_and_sequential(self) -> None:
        for x, y in itertools.product(self.counts, repeat=2):
            for test in (two_proportion_test, sequential_two_proportions):
                c = test(x, 100, y, 100)
                assert _agrees(c.ci_low, c.ci_high, c.p_value), (test.__name__, x, y, c)
                assert c.ci_low <= c.difference <= c.ci_high

    def test_the_issue_example_no_longer_contradicts_itself(self) -> None:
        # ctr_at_1 in the issue: an interval excluding 0 beside p = 0.39.
        for c in (
            two_proportion_test(40, 200, 15, 120),
            sequential_two_proportions(40, 200, 15, 120),
        ):
            assert _agrees(c.ci_low, c.ci_high, c.p_value)

    def test_means_and_win_shares(self) -> None:
        values = np.array([0.0, 1.0, 0.5, 1 / 3])
        rng = np.random.default_rng(7)
        for _ in range(200):
            a, b = rng.integers(0, 60, size=4), rng.integers(0, 60, size=4)
            for test in (mean_difference_test, sequential_mean_difference):
                c = test(values, a, b)
                assert _agrees(c.ci_low, c.ci_high, c.p_value), (a, b, c)
        for wins, losses in itertools.product(range(0, 40, 3), repeat=2):
            s = sequential_win_share(wins, losses)
            assert _agrees(s.ci_low, s.ci_high, s.p_value), (wins, losses, s)

    def test_the_boundary_is_the_same_for_both(self) -> None:
        # Just inside and just outside the boundary of the mixture ratio.
        for d in np.linspace(0.0, 0.05, 501):
            s = msprt(0.3, 0.3 + float(d), 1e-4, mixing_sd=0.02)
            assert _agrees(s.ci_low, s.ci_high, s.p_value), (d, s)

    def test_an_empty_arm_proves_nothing(self) -> None:
        for c in (sequential_two_proportions(0, 0, 5, 10), two_proportion_test(5, 10, 0, 0)):
            assert (c.p_value, c.ci_low, c.ci_high) == (1.0, -1.0, 1.0)


class TestSampleSize:
    def test_the_sequential_test_needs_more_than_one_look_at_a_fixed_horizon(self) -> None:
        for p, effect in [(0.1, 0.02), (0.3, 0.02), (0.3, 0.05), (0.5, 0.1)]:
            fixed = sample_size_two_proportions(p, effect)
            seq = sequential_sample_size(p, effect)
            assert fixed is not None
            assert seq is not None
            assert fixed < seq < 4 * fixed

    def test_it_detects_the_effect_that_often(self) -> None:
        # Simulated at the size it gives: about 80 % of experiments detect 30 % -> 35 %.
        n = sequential_sample_size(0.3, 0.05)
        assert n is not None
        rng = np.random.default_rng(11)
        a = rng.binomial(n, 0.30, size=400)
        b = rng.binomial(n, 0.35, size=400)
        hits = np.mean(
            [
                sequential_two_proportions(int(x), n, int(y), n).significant
                for x, y in zip(a, b, strict=True)
            ]
        )
        assert 0.7 <= hits <= 0.9

    def test_impossible(self) -> None:
        assert sequential_sample_size(0.3, 0.0) is None
        assert sequential_sample_size(0.95, 0.1) is None


def _ctr(diff: float, p: float, low: float, high: float) -> ComparisonOut:
    return ComparisonOut(
        "ctr",
        0.3,
        0.3 + diff,
        diff,
        low,
        high,
        p,
        p < ALPHA,
        "mSPRT",
        "pp",
        f"{diff * 100:+.2f} points of CTR",
    )


def _il(wins: int, losses: int) -> InterleavingOut:
    s = sequential_win_share(wins, losses)
    return InterleavingOut(
        wins + losses,
        wins,
        losses,
        0,
        0,
        s.p_value,
        s.significant,
        s.b,
        s.a + s.ci_low,
        s.a + s.ci_high,
    )


POWER = PowerOut(0.02, ALPHA, 0.8, 16_000, 20_000, 0)
SHORT = PowerOut(0.02, ALPHA, 0.8, 16_000, 1_000, 15_000)
LIVE = RolloutState(False, 40, "database", 30)


class TestDecision:
    def test_ab_worse_and_interleaving_better_is_a_hold_with_both_figures(self) -> None:
        worse = _ctr(-0.13, 0.001, -0.2, -0.05)
        rec = decide(worse, _il(19, 2), POWER, [], LIVE)
        assert rec.action == "hold", rec.text
        assert rec.text.startswith("hold: the two measures disagree")
        assert "-13.00 points of CTR" in rec.text
        assert "19 wins, 2 losses" in rec.text
        assert rec.apply is None

    def test_agreement_acts(self) -> None:
        better = _ctr(0.03, 0.001, 0.01, 0.05)
        up = decide(better, _il(19, 2), POWER, [], LIVE)
        assert (up.action, up.apply) == ("raise", {"siglip_rollout_percentage": 50})
        assert "PUT /api/v1/admin/rollout" in up.text
        down = decide(_ctr(-0.03, 0.001, -0.05, -0.01), _il(2, 19), POWER, [], LIVE)
        assert down.action == "roll back"
        assert down.apply == {
            "use_siglip": False,
            "siglip_rollout_percentage": 0,
            "interleave_percentage": 0,
        }

    def test_too_little_data_holds_and_says_how_many_searches(self) -> None:
        rec = decide(_ctr(0.01, 0.6, -0.05, 0.07), _il(3, 2), SHORT, [], LIVE)
        assert rec.action == "hold"
        assert "15,000 more searches per arm" in rec.text

    def test_no_verdict_from_an_empty_arm(self) -> None:
        rec = decide(None, _il(0, 0), SHORT, [], LIVE, empty_arms=["siglip"])
        assert rec.action == "hold"
        assert "no searches in siglip" in rec.text
        assert "points of CTR" not in rec.text  # no difference printed

    def test_a_guardrail_breach_wins_over_everything(self) -> None:
        slow = GuardrailOut(
            "siglip", "latency_p95_ms", 2000.0, 20.0, 140.0, 100, True, "siglip p95 slow"
        )
        rec = decide(_ctr(0.03, 0.001, 0.01, 0.05), _il(19, 2), POWER, [slow], LIVE)
        assert rec.action == "roll back"
        assert rec.text.startswith("roll back now: guardrail")
        idle = RolloutState(False, 0, "database", 0)
        assert decide(None, _il(0, 0), SHORT, [slow], idle).action == "hold"

    def test_advice_never_names_an_environment_variable(self) -> None:
        cases = [
            decide(_ctr(d, p, lo, hi), _il(w, lost), pw, [], LIVE)
            for d, p, lo, hi in [
                (-0.03, 0.001, -0.05, -0.01),
                (0.03, 0.001, 0.01, 0.05),
                (0.0, 0.9, -0.01, 0.01),
            ]
            for w, lost in [(19, 2), (2, 19), (3, 3)]
            for pw in (POWER, SHORT)
        ]
        for rec in cases:
            assert "SIGLIP_ROLLOUT_PERCENTAGE" not in rec.text
            assert "INTERLEAVE_PERCENTAGE" not in rec.text
            assert "siglip_rollout_percentage=40" in rec.text  # the live flags, as they are
