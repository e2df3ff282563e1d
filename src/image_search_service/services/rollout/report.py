"""The rollout experiment report: per-arm metrics, the difference between the models
with its uncertainty, the interleaving tally, and a recommendation in words.

Everything comes from two GROUP BY queries over the experiment log (see
:mod:`db.experiment_repository`), so the cost does not depend on how many searches
were recorded. Metrics (per arm, over its searches):

- ``ctr``: share of searches with at least one event (click, open, more like this,
  download); ``ctr_at_1`` / ``ctr_at_5``: share whose first event was on rank 1 / 1-5;
- ``mrr``: mean reciprocal rank of the first event (0 for a search without one);
- ``zero_result_rate``; ``abandonment_rate``: results shown, no event and no
  reformulation; ``reformulation_rate``: followed by a new text search by the same
  user within the window and without a click in between;
- ``latency_p50_ms`` / ``latency_p95_ms`` (from 6 %-wide log buckets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from image_search_service.core.config import INTERLEAVED, MODEL_KEYS, Settings
from image_search_service.core.specs import BASELINE, CANDIDATE
from image_search_service.db import experiment_repository as exp_repo
from image_search_service.db.experiment_repository import bucket_latency
from image_search_service.services.rollout.stats import (
    Comparison,
    bootstrap_mean_difference,
    histogram_quantile,
    sample_size_two_proportions,
    sign_test,
    two_proportion_test,
)

ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_SEED = 12345
BOOTSTRAP_REPLICATES = 2000
DEFAULT_MIN_EFFECT = 0.02  # absolute change in click-through rate worth detecting
# What a sample size can be asked for: below 0.1 points no experiment ends.
MIN_EFFECT_RANGE = (0.001, 0.5)
ROLLOUT_STEPS = (1, 5, 10, 25, 50, 100)
MAX_RANK = 100  # ranks beyond a page never occur (MAX_LIMIT)


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

    @classmethod
    def of(cls, metric: str, comparison: Comparison, method: str) -> ComparisonOut:
        return cls(
            metric=metric,
            baseline=round(comparison.a, 6),
            candidate=round(comparison.b, 6),
            difference=round(comparison.difference, 6),
            ci_low=round(comparison.ci_low, 6),
            ci_high=round(comparison.ci_high, 6),
            p_value=_significant_digits(comparison.p_value),
            significant=comparison.significant,
            method=method,
        )


@dataclass(frozen=True)
class InterleavingOut:
    searches: int
    wins: int  # the candidate's results got more clicks
    losses: int
    ties: int  # clicked, equal credit
    no_click: int
    p_value: float  # exact two-sided sign test, wins against losses
    significant: bool


@dataclass(frozen=True)
class PowerOut:
    min_effect: float  # absolute CTR change
    alpha: float
    power: float
    needed_per_arm: int | None
    have_per_arm: int
    still_needed_per_arm: int | None


@dataclass(frozen=True)
class Recommendation:
    action: str  # raise | hold | roll back
    target_percentage: int | None
    text: str


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def experiment_report(
    session: Session,
    settings: Settings,
    *,
    since: datetime | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> ExperimentReport:
    if since is not None:  # one clock for every database: UTC (naive means UTC)
        since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
    groups = exp_repo.arm_groups(session, since=since)
    arms: list[str] = [*MODEL_KEYS, INTERLEAVED]
    metrics = {arm: _arm_metrics(arm, [g for g in groups if g.arm == arm]) for arm in arms}
    histograms = {arm: _rank_histogram([g for g in groups if g.arm == arm]) for arm in arms}
    base, cand = metrics[BASELINE], metrics[CANDIDATE]
    comparisons = [
        ComparisonOut.of(
            "ctr",
            two_proportion_test(
                base.clicked_searches, base.searches, cand.clicked_searches, cand.searches
            ),
            "two-proportion z-test",
        ),
        ComparisonOut.of(
            "ctr_at_1",
            two_proportion_test(
                round(base.ctr_at_1 * base.searches),
                base.searches,
                round(cand.ctr_at_1 * cand.searches),
                cand.searches,
            ),
            "two-proportion z-test",
        ),
        ComparisonOut.of(
            "mrr",
            bootstrap_mean_difference(
                _RECIPROCAL_RANKS,
                histograms[BASELINE],
                histograms[CANDIDATE],
                replicates=BOOTSTRAP_REPLICATES,
                seed=BOOTSTRAP_SEED,
            ),
            f"bootstrap ({BOOTSTRAP_REPLICATES} replicates, seed {BOOTSTRAP_SEED})",
        ),
    ]
    tally = exp_repo.interleaving_outcomes(session, arm=INTERLEAVED, since=since)
    sign = sign_test(tally["win"], tally["loss"], tally["tie"])
    interleaving = InterleavingOut(
        searches=sum(tally.values()),
        wins=tally["win"],
        losses=tally["loss"],
        ties=tally["tie"],
        no_click=tally["no_click"],
        p_value=_significant_digits(sign.p_value),
        significant=sign.p_value < ALPHA,
    )
    have = min(base.searches, cand.searches)
    needed = sample_size_two_proportions(
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
    percentage = settings.siglip_rollout_percentage
    return ExperimentReport(
        since=since,
        baseline=BASELINE,
        candidate=CANDIDATE,
        siglip_rollout_percentage=percentage,
        interleave_percentage=settings.interleave_percentage,
        arms=metrics,
        comparisons=comparisons,
        interleaving=interleaving,
        power=power,
        recommendation=recommend(
            comparisons[0], comparisons[2], interleaving, power, percentage=percentage
        ),
        notes=[
            "Arms are the model that answered: searches the coverage guard sent back to "
            f"{BASELINE} count as {BASELINE}.",
            "A click is any event (click, open, more_like_this, download) on a result.",
        ],
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
    for g in groups:
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
    )


def _significant_digits(p: float) -> float:
    """Four significant digits: a p-value of 1e-12 must not print as 0."""
    return float(f"{p:.4g}")


def next_step(percentage: int) -> int:
    return next((step for step in ROLLOUT_STEPS if step > percentage), 100)


def recommend(
    ctr: ComparisonOut,
    mrr: ComparisonOut,
    interleaving: InterleavingOut,
    power: PowerOut,
    *,
    percentage: int,
) -> Recommendation:
    """Raise on a significant gain (A/B CTR or MRR, or the interleaving sign test), roll
    back on a significant loss, hold otherwise unless enough searches show no loss
    larger than the chosen effect."""
    target = next_step(percentage)
    numbers = (
        f"CTR {ctr.baseline:.1%} ({BASELINE}) vs {ctr.candidate:.1%} ({CANDIDATE}), "
        f"difference {ctr.difference:+.1%} [95% CI {ctr.ci_low:+.1%}, {ctr.ci_high:+.1%}], "
        f"p={ctr.p_value:.3g}; MRR {mrr.baseline:.3f} vs {mrr.candidate:.3f}, "
        f"p={mrr.p_value:.3g}"
    )
    il = (
        f"interleaving: {interleaving.wins} wins, {interleaving.losses} losses, "
        f"{interleaving.ties} ties for {CANDIDATE}, sign test p={interleaving.p_value:.3g}"
    )
    losses = [c for c in (ctr, mrr) if c.significant and c.difference < 0]
    gains = [c for c in (ctr, mrr) if c.significant and c.difference > 0]
    il_loss = interleaving.significant and interleaving.losses > interleaving.wins
    il_gain = interleaving.significant and interleaving.wins > interleaving.losses
    if losses or (il_loss and not gains):
        return Recommendation(
            "roll back",
            0,
            f"roll back: {CANDIDATE} does significantly worse ({numbers}; {il}). "
            "Set SIGLIP_ROLLOUT_PERCENTAGE=0 and look at the queries it loses.",
        )
    if gains or il_gain:
        if percentage >= 100:
            return Recommendation(
                "hold", 100, f"keep 100%: {CANDIDATE} does significantly better ({numbers}; {il})."
            )
        return Recommendation(
            "raise",
            target,
            f"raise to {target}%: {CANDIDATE} does significantly better ({numbers}; {il}).",
        )
    if power.still_needed_per_arm is None or power.still_needed_per_arm > 0:
        needed = power.needed_per_arm
        want = f"{needed:,}" if needed is not None else "more"
        return Recommendation(
            "hold",
            percentage,
            f"hold: not enough data: {power.have_per_arm:,} searches in the smaller arm, "
            f"{want} per arm needed to detect a CTR change of {power.min_effect:.1%} "
            f"(power {power.power:.0%}, alpha {power.alpha}); {numbers}; {il}.",
        )
    if ctr.ci_low > -power.min_effect and percentage < 100:
        return Recommendation(
            "raise",
            target,
            f"raise to {target}%: no significant difference with enough data, and the "
            f"interval rules out a CTR loss of {power.min_effect:.1%} or more ({numbers}; {il}).",
        )
    return Recommendation(
        "hold",
        percentage,
        f"hold: no significant difference, but a CTR loss of {power.min_effect:.1%} is "
        f"not ruled out ({numbers}; {il}).",
    )


def report_for(
    settings: Settings, *, since: datetime | None = None, min_effect: float = DEFAULT_MIN_EFFECT
) -> ExperimentReport:
    """The report from the metadata DB alone (migrated first), without opening the
    vector store: works while a server holds the embedded store."""
    from image_search_service.db.session import (
        make_engine,
        make_session_factory,
        session_scope,
        upgrade_database,
    )

    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade_database(engine)
        with session_scope(make_session_factory(engine)) as session:
            return experiment_report(session, settings, since=since, min_effect=min_effect)
    finally:
        engine.dispose()


def prune_for(settings: Settings, *, now: datetime) -> int:
    """Delete experiment rows past ``EXPERIMENT_RETENTION_DAYS`` (DB only)."""
    from image_search_service.db.session import (
        make_engine,
        make_session_factory,
        session_scope,
        upgrade_database,
    )

    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade_database(engine)
        with session_scope(make_session_factory(engine)) as session:
            return exp_repo.prune(
                session, older_than=now - timedelta(days=settings.experiment_retention_days)
            )
    finally:
        engine.dispose()


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
