"""The recommendation's rule, branch by branch (report.decide), on hand-made measures:
each test pins one branch a one-line bug could move (scripts/mutation.py checks that)."""

from __future__ import annotations

import pytest

from image_search_service.services.rollout.flags import RolloutState
from image_search_service.services.rollout.report import (
    ROLLBACK,
    ComparisonOut,
    GuardrailOut,
    InterleavingOut,
    PowerOut,
    _significant_digits,
    decide,
    next_step,
)

ENOUGH = PowerOut(0.02, 0.05, 0.8, 16_000, 20_000, 0)
SHORT = PowerOut(0.02, 0.05, 0.8, 16_000, 1_000, 15_000)
AT_40 = RolloutState(False, 40, "database", 30)
AT_100 = RolloutState(True, 0, "database", 0)
IDLE = RolloutState(False, 0, "database", 0)
ROLLBACK_PUT = (
    'PUT /api/v1/admin/rollout {"use_siglip": false, "siglip_rollout_percentage": 0, '
    '"interleave_percentage": 0}'
)


def ab(diff: float, *, low: float, high: float, significant: bool) -> ComparisonOut:
    return ComparisonOut(
        "ctr", 0.3, 0.3 + diff, diff, low, high, 0.001 if significant else 0.6, significant,
        "mSPRT", "pp", f"{diff * 100:+.2f} points of CTR",
    )  # fmt: skip


GAIN = ab(0.03, low=0.01, high=0.05, significant=True)
LOSS = ab(-0.03, low=-0.05, high=-0.01, significant=True)
NARROW = ab(0.0, low=-0.01, high=0.01, significant=False)  # rules out a 2-point loss
WIDE = ab(0.0, low=-0.05, high=0.05, significant=False)  # a 2-point loss still possible


def interleaving(
    wins: int, losses: int, *, significant: bool, share: float | None = None
) -> InterleavingOut:
    if share is None and wins + losses:
        share = wins / (wins + losses)
    low, high = (None, None) if share is None else (share - 0.1, share + 0.1)
    return InterleavingOut(
        wins + losses, wins, losses, 0, 0, 0.001 if significant else 0.6, significant,
        share, low, high,
    )  # fmt: skip


IL_WIN = interleaving(19, 2, significant=True)
IL_LOSS = interleaving(2, 19, significant=True)
IL_QUIET = interleaving(3, 3, significant=False)
IL_NONE = interleaving(0, 0, significant=False)


def breach(arm: str = "siglip") -> GuardrailOut:
    return GuardrailOut(arm, "latency_p95_ms", 900.0, 20.0, 140.0, 100, True, f"{arm} slow")


class TestDisagreement:
    def test_an_ab_gain_beside_an_interleaving_loss_holds(self) -> None:
        rec = decide(GAIN, IL_LOSS, ENOUGH, [], AT_40)
        assert (rec.action, rec.target_percentage, rec.apply) == ("hold", 40, None)
        assert rec.text.startswith("hold: the two measures disagree")
        assert "(A/B says better)" in rec.text
        assert "(interleaving says worse)" in rec.text

    def test_an_ab_loss_beside_an_interleaving_gain_holds(self) -> None:
        rec = decide(LOSS, IL_WIN, ENOUGH, [], AT_40)
        assert (rec.action, rec.apply) == ("hold", None)
        assert "(A/B says worse)" in rec.text
        assert "(interleaving says better)" in rec.text


class TestLoss:
    @pytest.mark.parametrize(
        ("comparison", "tally"), [(LOSS, IL_QUIET), (NARROW, IL_LOSS), (None, IL_LOSS)]
    )
    def test_a_significant_loss_on_either_measure_rolls_back(
        self, comparison: ComparisonOut | None, tally: InterleavingOut
    ) -> None:
        rec = decide(comparison, tally, ENOUGH, [], AT_40)
        assert (rec.action, rec.target_percentage) == ("roll back", 0)
        assert rec.apply == ROLLBACK
        assert rec.control == "PUT /api/v1/admin/rollout"
        assert rec.text.startswith("roll back: siglip does significantly worse")
        assert f"{ROLLBACK_PUT} and look at the queries it loses." in rec.text


class TestRaise:
    @pytest.mark.parametrize(("comparison", "tally"), [(GAIN, IL_QUIET), (NARROW, IL_WIN)])
    def test_a_significant_gain_on_either_measure_raises_one_step(
        self, comparison: ComparisonOut, tally: InterleavingOut
    ) -> None:
        rec = decide(comparison, tally, SHORT, [], AT_40)
        assert (rec.action, rec.target_percentage) == ("raise", 50)
        assert rec.apply == {"siglip_rollout_percentage": 50}
        assert rec.control == "PUT /api/v1/admin/rollout"
        assert rec.text.startswith("raise to 50%: siglip does significantly better")
        assert rec.text.endswith('PUT /api/v1/admin/rollout {"siglip_rollout_percentage": 50}.')

    def test_no_difference_with_a_loss_ruled_out_raises(self) -> None:
        rec = decide(NARROW, IL_QUIET, SHORT, [], AT_40)
        assert (rec.action, rec.apply) == ("raise", {"siglip_rollout_percentage": 50})
        assert rec.control == "PUT /api/v1/admin/rollout"
        assert "rules out a CTR loss of 2.0 points" in rec.text
        assert rec.text.endswith('PUT /api/v1/admin/rollout {"siglip_rollout_percentage": 50}.')

    def test_the_texts_give_the_smallest_effect_in_points(self) -> None:
        tenth = PowerOut(0.1, 0.05, 0.8, 400, 100, 300)
        narrow = ab(0.0, low=-0.05, high=0.05, significant=False)
        assert (
            "rules out a CTR loss of 10.0 points" in decide(narrow, IL_QUIET, tenth, [], AT_40).text
        )
        wide = ab(0.0, low=-0.2, high=0.2, significant=False)
        assert "detect a CTR change of 10.0 points" in decide(wide, IL_QUIET, tenth, [], AT_40).text

    @pytest.mark.parametrize("low", [-0.05, -0.02])
    def test_no_difference_while_a_loss_is_not_ruled_out_holds(self, low: float) -> None:
        comparison = ab(0.0, low=low, high=0.05, significant=False)
        rec = decide(comparison, IL_QUIET, SHORT, [], AT_40)
        assert (rec.action, rec.target_percentage, rec.apply) == ("hold", 40, None)
        assert rec.text.startswith("hold: not enough data: 1,000 searches in the smaller arm")
        assert "about 15,000 more searches per arm (16,000 per arm in all)" in rec.text

    def test_the_interleaving_share_gives_way_to_the_new_rollout_share(self) -> None:
        flags = RolloutState(False, 50, "database", 60)
        assert decide(GAIN, IL_QUIET, ENOUGH, [], flags).apply == {
            "siglip_rollout_percentage": 100,
            "interleave_percentage": 0,
        }
        flags = RolloutState(False, 25, "database", 50)  # 50 + 50 = 100: no overlap
        assert decide(GAIN, IL_QUIET, ENOUGH, [], flags).apply == {"siglip_rollout_percentage": 50}
        flags = RolloutState(False, 25, "database", 51)
        assert decide(GAIN, IL_QUIET, ENOUGH, [], flags).apply == {
            "siglip_rollout_percentage": 50,
            "interleave_percentage": 50,
        }


class TestFullRollout:
    def test_a_gain_at_100_percent_keeps_100(self) -> None:
        rec = decide(GAIN, IL_QUIET, SHORT, [], AT_100)
        assert (rec.action, rec.target_percentage, rec.apply) == ("hold", 100, None)
        assert rec.text.startswith("keep 100%: nothing to raise")

    def test_enough_data_at_100_percent_keeps_100(self) -> None:
        rec = decide(WIDE, IL_QUIET, ENOUGH, [], RolloutState(False, 100, "database", 0))
        assert (rec.action, rec.target_percentage) == ("hold", 100)
        assert rec.text.startswith("keep 100%")

    def test_at_100_percent_without_enough_data_it_waits(self) -> None:
        rec = decide(WIDE, IL_QUIET, SHORT, [], AT_100)
        assert (rec.action, rec.target_percentage) == ("hold", 100)
        assert rec.text.startswith("hold: not enough data")

    def test_without_a_comparison_enough_data_is_no_reason_to_stop(self) -> None:
        rec = decide(None, IL_NONE, ENOUGH, [], AT_100)
        assert rec.text.startswith("hold: not enough data")


class TestGuardrails:
    @pytest.mark.parametrize(
        "flags",
        [
            AT_40,
            AT_100,
            RolloutState(False, 1, "environment", 0),
            RolloutState(False, 0, "environment", 1),
        ],
    )
    def test_a_breach_rolls_back_while_users_see_the_candidate(self, flags: RolloutState) -> None:
        rec = decide(GAIN, IL_WIN, ENOUGH, [breach(), breach("interleaved")], flags)
        assert (rec.action, rec.apply) == ("roll back", ROLLBACK)
        assert rec.text.startswith(
            f"roll back now: guardrail breached (siglip slow; interleaved slow). {ROLLBACK_PUT}."
        )

    def test_a_breach_with_nobody_exposed_is_no_rollback(self) -> None:
        assert decide(GAIN, IL_QUIET, ENOUGH, [breach()], IDLE).action == "raise"

    def test_a_check_within_its_limit_is_no_breach(self) -> None:
        fine = GuardrailOut("siglip", "latency_p95_ms", 30.0, 20.0, 140.0, 100, False, "fine")
        assert decide(GAIN, IL_QUIET, ENOUGH, [fine], AT_40).action == "raise"


class TestEvidence:
    def test_the_text_carries_both_measures_and_the_live_flags(self) -> None:
        rec = decide(GAIN, IL_WIN, SHORT, [], AT_40)
        assert "A/B: CTR 30.0% (clip) vs 33.0% (siglip), +3.00 points of CTR, p=0.001" in (rec.text)
        assert "interleaving: 19 wins, 2 losses, 0 ties for siglip, win share 90%" in rec.text
        assert (
            "live flags (database): use_siglip=false, siglip_rollout_percentage=40, "
            "interleave_percentage=30"
        ) in rec.text

    def test_an_empty_arm_is_named(self) -> None:
        rec = decide(None, IL_NONE, SHORT, [], AT_40, empty_arms=["clip", "siglip"])
        assert "A/B: no comparison (no searches in clip and siglip)" in rec.text
        assert "interleaving: 0 wins, 0 losses, 0 ties for siglip; live flags" in rec.text
        unnamed = decide(None, IL_NONE, SHORT, [], AT_40)
        assert "no searches in an arm" in unnamed.text

    @pytest.mark.parametrize(("needed", "still"), [(None, None), (16_000, None), (None, 10)])
    def test_an_unknown_sample_size_asks_for_more_searches(
        self, needed: int | None, still: int | None
    ) -> None:
        unknown = PowerOut(0.02, 0.05, 0.8, needed, 10, still)
        rec = decide(None, IL_NONE, unknown, [], AT_40)
        assert "hold: not enough data: 10 searches in the smaller arm; more searches to" in (
            rec.text
        )

    @pytest.mark.parametrize(
        ("share", "low", "high"), [(0.6, None, None), (0.6, 0.5, None), (None, 0.5, 0.7)]
    )
    def test_a_win_share_is_shown_only_with_its_interval(
        self, share: float | None, low: float | None, high: float | None
    ) -> None:
        tally = InterleavingOut(10, 6, 4, 0, 0, 0.6, False, share, low, high)
        rec = decide(None, tally, SHORT, [], AT_40)
        assert "interleaving: 6 wins, 4 losses, 0 ties for siglip; live flags" in rec.text


@pytest.mark.parametrize(
    ("percentage", "step"), [(0, 1), (1, 5), (3, 5), (5, 10), (25, 50), (50, 100), (100, 100)]
)
def test_next_step(percentage: int, step: int) -> None:
    assert next_step(percentage) == step


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (1e-12, 1e-12),  # never 0
        (0.123456, 0.1235),
        (0.0499996, 0.0499996),  # 4 digits would round it up to alpha: kept as it is
        (0.0500004, 0.05),
        (0.9, 0.9),
    ],
)
def test_p_values_keep_four_significant_digits_without_crossing_alpha(
    p: float, shown: float
) -> None:
    assert _significant_digits(p) == shown
