"""The rollout experiment report: per-arm metrics, the difference between the models
with its uncertainty, the interleaving tally, guardrails, and one decision in words.

Everything comes from GROUP BY queries over the experiment log (see
:mod:`db.experiment_repository`), so the cost does not depend on how many searches
were recorded. Metrics (per arm, over its searches):

- ``ctr``: share of searches with at least one event (click, open, more like this,
  download); ``ctr_at_1`` / ``ctr_at_5``: share whose first event was on rank 1 / 1-5;
- ``mrr``: mean reciprocal rank of the first event (0 for a search without one);
- ``zero_result_rate``; ``abandonment_rate``: results shown, no event and no
  reformulation; ``reformulation_rate``: followed by a new text search by the same
  user within the window and without a click in between;
- ``latency_p50_ms`` / ``latency_p95_ms`` (from 6 %-wide log buckets), without the
  cold starts (the first search a model answers in a process).

Every test is sequential (mSPRT, see :mod:`stats`): the report may be read at any
time, as often as wanted, without inflating false alarms, and each interval excludes 0
exactly when its p-value is below ``ALPHA``. The decision (:func:`decide`) reads the
A/B click-through and the interleaving win share together: both must not disagree.
The flags shown are the live ones (stored in the DB, else the environment's), and
every action names the request that applies it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session

from image_search_service.core.config import INTERLEAVED, MODEL_KEYS, Settings
from image_search_service.core.specs import BASELINE, CANDIDATE
from image_search_service.db import experiment_repository as exp_repo
from image_search_service.db import repository as repo
from image_search_service.db.experiment_repository import COLD_START_BUCKET, bucket_latency
from image_search_service.services.rollout.flags import (
    RolloutState,
    environment_state,
    state_in,
)
from image_search_service.services.rollout.stats import (
    CTR_MIXING_SD,
    WIN_SHARE_MIXING_SD,
    Sequential,
    histogram_quantile,
    sequential_mean_difference,
    sequential_sample_size,
    sequential_two_proportions,
    sequential_win_share,
    sign_test,
)

if TYPE_CHECKING:
    from image_search_service.context import ServiceContext
    from image_search_service.services.rollout.flags import LiveRollout

logger = logging.getLogger(__name__)

ALPHA = 0.05
POWER = 0.8
DEFAULT_MIN_EFFECT = 0.02  # absolute change in click-through rate worth detecting
# What a sample size can be asked for: below 0.1 points no experiment ends.
MIN_EFFECT_RANGE = (0.001, 0.5)
ROLLOUT_STEPS = (1, 5, 10, 25, 50, 100)
MAX_RANK = 100  # ranks beyond a page never occur (MAX_LIMIT)
CONTROL = "PUT /api/v1/admin/rollout"
ROLLBACK: dict[str, bool | int] = {
    "use_siglip": False,
    "siglip_rollout_percentage": 0,
    "interleave_percentage": 0,
}
SEQUENTIAL_METHOD = f"mSPRT, always valid (normal mixture, tau={CTR_MIXING_SD})"

# Guardrails: an arm exposing the candidate against the baseline arm, over the searches
# since the flags last changed, once both have this many (warm) searches.
GUARD_MIN_SEARCHES = 30
GUARD_LATENCY_RATIO = 2.0  # p95 above 2x the baseline's p95 ...
GUARD_LATENCY_SLACK_MS = 100.0  # ... plus 100 ms (small p95s jitter by more than 2x)
GUARD_ZERO_RESULT_POINTS = 0.10  # zero-result rate 10 points above, and significant


@dataclass(frozen=True)
class ArmMetrics:
    arm: str
    searches: int
    clicked_searches: int
    events: int
    ctr: float
    ctr_at_1: float
    ctr_at_5: float
    mrr: float
    zero_result_rate: float
    abandonment_rate: float
    reformulation_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cold_starts: int = 0  # left out of the latency figures

    @property
    def warm_searches(self) -> int:
        return self.searches - self.cold_starts


@dataclass(frozen=True)
class ComparisonOut:
    metric: str
    baseline: float
    candidate: float
    difference: float  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    method: str
    unit: str = ""
    effect: str = ""  # the difference in words, with its unit

    @classmethod
    def of(
        cls, metric: str, comparison: Sequential, method: str, *, unit: str, effect: str
    ) -> ComparisonOut:
        return cls(
            metric=metric,
            baseline=round(comparison.a, 6),
            candidate=round(comparison.b, 6),
            difference=round(comparison.difference, 6),
            ci_low=round(comparison.ci_low, 6),
            ci_high=round(comparison.ci_high, 6),
            # Rounding must not move p across alpha, nor the interval across 0.
            p_value=_significant_digits(comparison.p_value),
            significant=comparison.significant,
            method=method,
            unit=unit,
            effect=effect,
        )


@dataclass(frozen=True)
class InterleavingOut:
    searches: int
    wins: int  # the candidate's results got more clicks
    losses: int
    ties: int  # clicked, equal credit
    no_click: int
    p_value: float  # always-valid (mSPRT) test of the win share against 1/2
    significant: bool
    win_share: float | None = None  # wins / (wins + losses)
    win_share_ci_low: float | None = None
    win_share_ci_high: float | None = None
    fixed_horizon_p_value: float = 1.0  # exact sign test: valid only if read once
    method: str = ""


@dataclass(frozen=True)
class PowerOut:
    min_effect: float  # absolute CTR change
    alpha: float
    power: float
    needed_per_arm: int | None
    have_per_arm: int
    still_needed_per_arm: int | None
    method: str = "sequential (mSPRT), read at any time"


@dataclass(frozen=True)
class GuardrailOut:
    arm: str
    metric: str  # latency_p95_ms | zero_result_rate
    value: float | None
    baseline: float | None
    limit: float | None
    searches: int
    breached: bool
    text: str


@dataclass(frozen=True)
class Recommendation:
    action: str  # raise | hold | roll back
    target_percentage: int | None
    text: str
    control: str | None = None  # the request that applies it
    apply: dict[str, bool | int] | None = None  # its body


@dataclass(frozen=True)
class ExperimentReport:
    since: datetime | None
    baseline: str
    candidate: str
    siglip_rollout_percentage: int
    interleave_percentage: int
    arms: dict[str, ArmMetrics]
    comparisons: list[ComparisonOut]
    interleaving: InterleavingOut
    power: PowerOut
    recommendation: Recommendation
    notes: list[str] = field(default_factory=list)
    use_siglip: bool = False
    flags_source: str = "environment"  # database: changed at run time
    flags_changed_at: datetime | None = None
    flags_changed_by: str | None = None
    guardrails: list[GuardrailOut] = field(default_factory=list)
    auto_guard: bool = False


def experiment_report(
    session: Session,
    settings: Settings,
    *,
    since: datetime | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> ExperimentReport:
    flags = state_in(session, environment_state(settings))
    history = repo.rollout_history(session, limit=1)
    last = history[0] if history else None
    groups = exp_repo.arm_groups(session, since=since)
    metrics = _metrics(groups)
    base, cand = metrics[BASELINE], metrics[CANDIDATE]
    comparisons = _comparisons(groups, base, cand)
    tally = exp_repo.interleaving_outcomes(session, arm=INTERLEAVED, since=since)
    interleaving = _interleaving(tally)
    have = min(base.searches, cand.searches)
    needed = sequential_sample_size(
        base.ctr if base.searches else 0.5, min_effect, alpha=ALPHA, power=POWER
    )
    power = PowerOut(
        min_effect=min_effect,
        alpha=ALPHA,
        power=POWER,
        needed_per_arm=needed,
        have_per_arm=have,
        still_needed_per_arm=None if needed is None else max(0, needed - have),
    )
    guard_since = _later(since, last.changed_at if last is not None else None)
    guardrails = guardrail_checks(session, since=guard_since)
    notes = [
        "Arms are the model that answered: searches the coverage guard sent back to "
        f"{BASELINE} count as {BASELINE}.",
        "A click is any event (click, open, more_like_this, download) on a result.",
        "Tests are sequential (mSPRT): p-values and intervals stay valid however often "
        "the report is read; an interval excludes 0 exactly when p < 0.05.",
        "Guardrails compare searches since the flags last changed; failed searches are "
        "not logged, so there is no error-rate guardrail.",
    ]
    if not comparisons:
        empty = [a.arm for a in (base, cand) if not a.searches]
        notes.append(f"No A/B comparison: no searches in {' and '.join(empty)}.")
    if last is not None and last.source.startswith("guardrail"):
        notes.append(
            f"The flags were rolled back by a guardrail at {last.changed_at.isoformat()}: "
            f"{last.source}."
        )
    return ExperimentReport(
        since=since,
        baseline=BASELINE,
        candidate=CANDIDATE,
        siglip_rollout_percentage=flags.siglip_rollout_percentage,
        interleave_percentage=flags.interleave_percentage,
        use_siglip=flags.use_siglip,
        flags_source=flags.source,
        flags_changed_at=last.changed_at if last is not None else None,
        flags_changed_by=last.source if last is not None else None,
        arms=metrics,
        comparisons=comparisons,
        interleaving=interleaving,
        power=power,
        guardrails=guardrails,
        auto_guard=settings.rollout_auto_guard,
        recommendation=decide(
            comparisons[0] if comparisons else None,
            interleaving,
            power,
            guardrails,
            flags,
            empty_arms=[a.arm for a in (base, cand) if not a.searches],
        ),
        notes=notes,
    )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    aware = [x if x.tzinfo else x.replace(tzinfo=UTC) for x in (a, b)]
    return max(aware)


def _metrics(groups: list[exp_repo.ArmGroup]) -> dict[str, ArmMetrics]:
    arms: list[str] = [*MODEL_KEYS, INTERLEAVED]
    return {arm: _arm_metrics(arm, [g for g in groups if g.arm == arm]) for arm in arms}


def _comparisons(
    groups: list[exp_repo.ArmGroup], base: ArmMetrics, cand: ArmMetrics
) -> list[ComparisonOut]:
    """CTR, CTR@1 and MRR, candidate minus baseline; none while an arm is empty (no
    searches, no knowledge: no difference is printed)."""
    if not base.searches or not cand.searches:
        return []
    hist_base = _rank_histogram([g for g in groups if g.arm == BASELINE])
    hist_cand = _rank_histogram([g for g in groups if g.arm == CANDIDATE])
    ctr = sequential_two_proportions(
        base.clicked_searches, base.searches, cand.clicked_searches, cand.searches
    )
    at_1 = sequential_two_proportions(
        int(hist_base[1]), base.searches, int(hist_cand[1]), cand.searches
    )
    mrr = sequential_mean_difference(_RECIPROCAL_RANKS, hist_base, hist_cand)
    return [
        ComparisonOut.of(
            "ctr", ctr, SEQUENTIAL_METHOD, unit="percentage points", effect=_points(ctr, "CTR")
        ),
        ComparisonOut.of(
            "ctr_at_1",
            at_1,
            SEQUENTIAL_METHOD,
            unit="percentage points",
            effect=_points(at_1, "CTR@1"),
        ),
        ComparisonOut.of(
            "mrr",
            mrr,
            SEQUENTIAL_METHOD,
            unit="MRR (0..1)",
            effect=f"{mrr.difference:+.4f} MRR [{mrr.ci_low:+.4f}, {mrr.ci_high:+.4f}]",
        ),
    ]


def _points(c: Sequential, name: str) -> str:
    relative = f" ({c.difference / c.a:+.0%} relative)" if c.a else ""
    return (
        f"{c.difference * 100:+.2f} points of {name}{relative} "
        f"[{c.ci_low * 100:+.2f}, {c.ci_high * 100:+.2f}]"
    )


def _interleaving(tally: dict[str, int]) -> InterleavingOut:
    wins, losses = tally["win"], tally["loss"]
    seq = sequential_win_share(wins, losses)
    decided = wins + losses
    return InterleavingOut(
        searches=sum(tally.values()),
        wins=wins,
        losses=losses,
        ties=tally["tie"],
        no_click=tally["no_click"],
        p_value=_significant_digits(seq.p_value),
        significant=seq.significant,
        win_share=round(seq.b, 6) if decided else None,
        win_share_ci_low=round(seq.a + seq.ci_low, 6) if decided else None,
        win_share_ci_high=round(seq.a + seq.ci_high, 6) if decided else None,
        fixed_horizon_p_value=_significant_digits(sign_test(wins, losses).p_value),
        method=f"mSPRT on the win share against 50% (tau={WIN_SHARE_MIXING_SD})",
    )


_RANKS = np.arange(0, MAX_RANK + 1)  # index 0: no click
_RECIPROCAL_RANKS = np.concatenate([[0.0], 1.0 / _RANKS[1:]])


def _rank_histogram(groups: list[exp_repo.ArmGroup]) -> np.ndarray:
    counts = np.zeros(MAX_RANK + 1, dtype=np.int64)
    for g in groups:
        rank = g.first_click_rank or 0
        counts[min(max(rank, 0), MAX_RANK)] += g.searches
    return counts


def _arm_metrics(arm: str, groups: list[exp_repo.ArmGroup]) -> ArmMetrics:
    n = sum(g.searches for g in groups)

    def rate(count: float) -> float:
        return round(count / n, 6) if n else 0.0

    clicked = sum(g.searches for g in groups if g.first_click_rank is not None)
    at_1 = sum(g.searches for g in groups if g.first_click_rank == 1)
    at_5 = sum(
        g.searches for g in groups if g.first_click_rank is not None and g.first_click_rank <= 5
    )
    rr = sum(g.searches / g.first_click_rank for g in groups if g.first_click_rank)
    latency: dict[int, int] = {}
    cold = 0
    for g in groups:
        if g.latency_bucket == COLD_START_BUCKET:
            cold += g.searches
            continue
        latency[g.latency_bucket] = latency.get(g.latency_bucket, 0) + g.searches
    values = np.array([bucket_latency(b) for b in latency], dtype=np.float64)
    counts = np.array(list(latency.values()), dtype=np.int64)
    p50 = histogram_quantile(values, counts, 0.5)
    p95 = histogram_quantile(values, counts, 0.95)
    return ArmMetrics(
        arm=arm,
        searches=n,
        clicked_searches=clicked,
        events=sum(g.events for g in groups),
        ctr=rate(clicked),
        ctr_at_1=rate(at_1),
        ctr_at_5=rate(at_5),
        mrr=rate(rr),
        zero_result_rate=rate(sum(g.zero_results for g in groups)),
        abandonment_rate=rate(sum(g.abandoned for g in groups)),
        reformulation_rate=rate(sum(g.reformulated for g in groups)),
        latency_p50_ms=round(p50, 2) if p50 is not None else None,
        latency_p95_ms=round(p95, 2) if p95 is not None else None,
        cold_starts=cold,
    )


def _significant_digits(p: float) -> float:
    """Four significant digits: a p-value of 1e-12 must not print as 0. Never rounded
    down across alpha (the interval is computed unrounded and must still agree)."""
    rounded = float(f"{p:.4g}")
    return p if (p < ALPHA) != (rounded < ALPHA) else rounded


# -- guardrails -----------------------------------------------------------------------


def guardrail_checks(session: Session, *, since: datetime | None) -> list[GuardrailOut]:
    """Each arm that shows users the candidate (SigLIP alone, interleaved) against the
    baseline arm: p95 latency (cold starts left out) and zero-result rate."""
    metrics = _metrics(exp_repo.arm_groups(session, since=since))
    base = metrics[BASELINE]
    checks: list[GuardrailOut] = []
    for arm in (CANDIDATE, INTERLEAVED):
        m = metrics[arm]
        if m.warm_searches < GUARD_MIN_SEARCHES or base.warm_searches < GUARD_MIN_SEARCHES:
            continue
        if m.latency_p95_ms is not None and base.latency_p95_ms is not None:
            limit = base.latency_p95_ms * GUARD_LATENCY_RATIO + GUARD_LATENCY_SLACK_MS
            breached = m.latency_p95_ms > limit
            checks.append(
                GuardrailOut(
                    arm=arm,
                    metric="latency_p95_ms",
                    value=m.latency_p95_ms,
                    baseline=base.latency_p95_ms,
                    limit=round(limit, 2),
                    searches=m.warm_searches,
                    breached=breached,
                    text=f"{arm} p95 latency {m.latency_p95_ms:.0f} ms "
                    f"{'>' if breached else '<='} {limit:.0f} ms "
                    f"({GUARD_LATENCY_RATIO:g}x {BASELINE}'s {base.latency_p95_ms:.0f} ms "
                    f"+ {GUARD_LATENCY_SLACK_MS:.0f})",
                )
            )
        zero_base = round(base.zero_result_rate * base.searches)
        zero_arm = round(m.zero_result_rate * m.searches)
        test = sequential_two_proportions(zero_base, base.searches, zero_arm, m.searches)
        limit = base.zero_result_rate + GUARD_ZERO_RESULT_POINTS
        breached = m.zero_result_rate > limit and test.significant
        checks.append(
            GuardrailOut(
                arm=arm,
                metric="zero_result_rate",
                value=m.zero_result_rate,
                baseline=base.zero_result_rate,
                limit=round(limit, 6),
                searches=m.searches,
                breached=breached,
                text=f"{arm} zero-result rate {m.zero_result_rate:.1%} "
                f"{'>' if breached else '<='} {limit:.1%} ({BASELINE} "
                f"{base.zero_result_rate:.1%} + {GUARD_ZERO_RESULT_POINTS:.0%} points; "
                f"p={test.p_value:.3g})",
            )
        )
    return checks


def _exposed(flags: RolloutState) -> bool:
    return (
        flags.use_siglip or flags.siglip_rollout_percentage > 0 or flags.interleave_percentage > 0
    )


def enforce_guardrails(ctx: ServiceContext, flags: LiveRollout) -> str | None:
    """With ``ROLLOUT_AUTO_GUARD``: on a guardrail breach while users see the candidate,
    set the live flags to no candidate at all (every process follows within
    ``ROLLOUT_REFRESH_S``), recorded in the history as ``guardrail: <reason>``. Returns
    the reason applied, or None."""
    if not ctx.settings.rollout_auto_guard:
        return None
    with ctx.transaction() as session:
        state = state_in(session, flags.environment)
        if not _exposed(state):
            return None
        history = repo.rollout_history(session, limit=1)
        since = history[0].changed_at if history else None
        breaches = [g for g in guardrail_checks(session, since=since) if g.breached]
    if not breaches:
        return None
    reason = f"{breaches[0].arm} {breaches[0].metric}"
    source = f"guardrail: {reason} {breaches[0].value} > {breaches[0].limit}"[:64]
    if (
        flags.set_if_unchanged(
            state.flags,
            use_siglip=False,
            siglip_rollout_percentage=0,
            interleave_percentage=0,
            source=source,
        )
        is None
    ):
        return None  # another process acted first, or an operator changed the flags
    logger.warning("rollout guardrail breached, candidate rolled back: %s", breaches[0].text)
    return breaches[0].text


def advance_schedule(ctx: ServiceContext, flags: LiveRollout) -> str | None:
    """With ``ROLLOUT_SCHEDULE``: once the operator has started the rollout (a SigLIP
    share above 0; ``USE_SIGLIP`` already means everyone), move the share to the
    schedule's next step when the report says raise and no guardrail is breached; the
    step is in the history as ``schedule: <old> -> <new>``. What was done, or None."""
    steps = ctx.settings.rollout_steps
    if not steps:
        return None
    with ctx.transaction() as session:
        state = state_in(session, flags.environment)
        if state.use_siglip or state.siglip_rollout_percentage == 0:
            return None
        history = repo.rollout_history(session, limit=1)
        since = history[0].changed_at if history else None
        # Evidence gathered at the current step only: each step earns the next.
        report = experiment_report(session, ctx.settings, since=since)
    if report.recommendation.action != "raise" or any(g.breached for g in report.guardrails):
        return None
    current = state.siglip_rollout_percentage
    target = next((step for step in steps if step > current), None)
    if target is None:
        return None
    interleave = min(state.interleave_percentage, 100 - target)  # the shares may not overlap
    changed = flags.set_if_unchanged(
        state.flags,
        use_siglip=False,
        siglip_rollout_percentage=target,
        interleave_percentage=interleave,
        source=f"schedule: {current} -> {target}",
    )
    if changed is None:
        return None  # another process took this step first, or an operator changed the flags
    logger.info(
        "staged rollout: SigLIP %d%% -> %d%% (%s)", current, target, report.recommendation.text
    )
    return f"{current} -> {target}"


# -- the decision ---------------------------------------------------------------------


def next_step(percentage: int) -> int:
    return next((step for step in ROLLOUT_STEPS if step > percentage), 100)


def _put(body: dict[str, bool | int]) -> str:
    return f"{CONTROL} {json.dumps(body)}"


def _direction(significant: bool, difference: float) -> int:
    return 0 if not significant else (1 if difference > 0 else -1)


def decide(
    ab: ComparisonOut | None,
    interleaving: InterleavingOut,
    power: PowerOut,
    guardrails: list[GuardrailOut],
    flags: RolloutState,
    *,
    empty_arms: list[str] | None = None,
) -> Recommendation:
    """One rule over every measure:

    1. a guardrail breached (while users see the candidate) -> roll back now;
    2. the A/B click-through and the interleaving win share significantly in opposite
       directions -> hold (the two measures disagree), with both figures;
    3. a significant loss on either (and no gain on the other) -> roll back;
    4. a significant gain on either (and no loss on the other) -> raise one step;
    5. nothing significant, but the A/B interval already rules out a CTR loss of
       ``min_effect`` -> raise one step;
    6. otherwise hold: too little data, with the searches still needed.

    An arm without searches gives no A/B verdict (``ab`` None). Each action names the
    live control: ``PUT /api/v1/admin/rollout`` with the values to set.
    """
    percentage = 100 if flags.use_siglip else flags.siglip_rollout_percentage
    interleave = flags.interleave_percentage
    live = (
        f"live flags ({flags.source}): use_siglip={str(flags.use_siglip).lower()}, "
        f"siglip_rollout_percentage={flags.siglip_rollout_percentage}, "
        f"interleave_percentage={interleave}"
    )
    ab_text = (
        f"A/B: CTR {ab.baseline:.1%} ({BASELINE}) vs {ab.candidate:.1%} ({CANDIDATE}), "
        f"{ab.effect}, p={ab.p_value:.3g}"
        if ab is not None
        else f"A/B: no comparison (no searches in {' and '.join(empty_arms or ['an arm'])})"
    )
    il = interleaving
    il_text = (
        f"interleaving: {il.wins} wins, {il.losses} losses, {il.ties} ties for {CANDIDATE}"
        + (
            f", win share {il.win_share:.0%} [{il.win_share_ci_low:.0%}, "
            f"{il.win_share_ci_high:.0%}], p={il.p_value:.3g}"
            if il.win_share is not None
            and il.win_share_ci_low is not None
            and il.win_share_ci_high is not None
            else ""
        )
    )
    evidence = f"{ab_text}; {il_text}; {live}"
    rollback = Recommendation("roll back", 0, "", control=CONTROL, apply=dict(ROLLBACK))
    breaches = [g for g in guardrails if g.breached]
    if breaches and _exposed(flags):
        return _with_text(
            rollback,
            f"roll back now: guardrail breached ({'; '.join(g.text for g in breaches)}). "
            f"{_put(ROLLBACK)}. {evidence}.",
        )
    ab_dir = None if ab is None else _direction(ab.significant, ab.difference)
    il_dir = None if il.win_share is None else _direction(il.significant, il.win_share - 0.5)
    signals = [d for d in (ab_dir, il_dir) if d is not None]
    if 1 in signals and -1 in signals:
        return Recommendation(
            "hold",
            percentage,
            f"hold: the two measures disagree: {ab_text} (A/B says "
            f"{'better' if ab_dir == 1 else 'worse'}); {il_text} (interleaving says "
            f"{'better' if il_dir == 1 else 'worse'}). Look at the queries behind each "
            f"before moving; keep {live}.",
        )
    if -1 in signals:
        return _with_text(
            rollback,
            f"roll back: {CANDIDATE} does significantly worse ({evidence}). "
            f"{_put(ROLLBACK)} and look at the queries it loses.",
        )
    if percentage >= 100 and (1 in signals or (ab is not None and power.still_needed_per_arm == 0)):
        return Recommendation("hold", 100, f"keep 100%: nothing to raise ({evidence}).")
    target = next_step(percentage)
    body: dict[str, bool | int] = {"siglip_rollout_percentage": target}
    if target + interleave > 100:  # the two shares may not overlap
        body["interleave_percentage"] = 100 - target
    raise_ = Recommendation("raise", target, "", control=CONTROL, apply=body)
    if 1 in signals:
        return _with_text(
            raise_,
            f"raise to {target}%: {CANDIDATE} does significantly better ({evidence}). "
            f"{_put(body)}.",
        )
    if ab is not None and ab.ci_low > -power.min_effect:
        return _with_text(
            raise_,
            f"raise to {target}%: no significant difference, and the interval rules out a "
            f"CTR loss of {power.min_effect * 100:.1f} points or more ({evidence}). "
            f"{_put(body)}.",
        )
    needed = power.needed_per_arm
    still = power.still_needed_per_arm
    want = (
        f"about {still:,} more searches per arm ({needed:,} per arm in all)"
        if still is not None and needed is not None
        else "more searches"
    )
    return Recommendation(
        "hold",
        percentage,
        f"hold: not enough data: {power.have_per_arm:,} searches in the smaller arm; "
        f"{want} to detect a CTR change of {power.min_effect * 100:.1f} points "
        f"(sequential test, power {power.power:.0%}, alpha {power.alpha}); {evidence}.",
    )


def _with_text(rec: Recommendation, text: str) -> Recommendation:
    return Recommendation(rec.action, rec.target_percentage, text, rec.control, rec.apply)


def report_for(
    settings: Settings, *, since: datetime | None = None, min_effect: float = DEFAULT_MIN_EFFECT
) -> ExperimentReport:
    """The report from the metadata DB alone (migrated first), without opening the
    vector store: works while a server holds the embedded store."""
    from image_search_service.db.session import database_alone, session_scope

    with (
        database_alone(settings.resolved_database_url) as factory,
        session_scope(factory) as session,
    ):
        return experiment_report(session, settings, since=since, min_effect=min_effect)


def prune_for(settings: Settings, *, now: datetime) -> int:
    """Delete experiment rows past ``EXPERIMENT_RETENTION_DAYS`` (DB only)."""
    from image_search_service.db.session import database_alone, session_scope

    older_than = now - timedelta(days=settings.experiment_retention_days)
    with (
        database_alone(settings.resolved_database_url) as factory,
        session_scope(factory) as session,
    ):
        return exp_repo.prune(session, older_than=older_than)


@dataclass(frozen=True)
class DayMetrics:
    """One arm's figures on one UTC day: the points of the admin page's charts."""

    day: str
    arm: str
    searches: int
    ctr: float
    ctr_at_1: float
    mrr: float
    zero_result_rate: float
    reformulation_rate: float


def experiment_daily(session: Session, *, days: int, now: datetime) -> list[DayMetrics]:
    """Per day and arm over the last ``days`` days (today included, up to ``now``)."""
    now = now.astimezone(UTC)
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    result = []
    for row in exp_repo.daily(session, since=start, until=now):
        n = row.searches

        def rate(count: float, n: int = n) -> float:
            return round(count / n, 6) if n else 0.0

        result.append(
            DayMetrics(
                day=row.day,
                arm=row.arm,
                searches=n,
                ctr=rate(row.clicked),
                ctr_at_1=rate(row.clicked_at_1),
                mrr=rate(row.reciprocal_ranks),
                zero_result_rate=rate(row.zero_results),
                reformulation_rate=rate(row.reformulated),
            )
        )
    return result
