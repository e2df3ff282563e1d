"""The public shapes of the rollout: flags, routing, history and the experiment report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
)

from image_search_service.core.config import Arm, ModelKey
from image_search_service.core.schemas import InputModel, OutputModel


def _four_places(value: float) -> float:
    return round(value, 4)


class ModelReadinessOut(OutputModel):
    """A model's collection and whether it may answer (``Readiness``)."""

    model: ModelKey
    collection: str
    ready: bool
    exists: bool
    points: int
    embedded: int
    active: int
    missing: int
    # Four places (0.01 %): further digits of the ratio tell an operator nothing.
    coverage: Annotated[float, AfterValidator(_four_places)]
    reason_code: str | None
    reason: str | None


class UserRouteOut(OutputModel):
    """One user's route (``RouteDecision``)."""

    user_id: str | None
    bucket: int
    selected: ModelKey
    rule: str
    model: ModelKey
    collection: str
    anonymous: bool
    fallback_code: str | None
    fallback_reason: str | None
    interleave: bool
    arm: Arm


class RolloutOut(OutputModel):
    """The rollout as operators see it (``RolloutStatus``)."""

    use_siglip: bool
    siglip_rollout_percentage: int
    flags_source: Literal["database", "environment"] = Field(
        description="database: changed at run time (wins over the environment's flags)"
    )
    flags_refresh_s: float = Field(description="every process re-reads the flags this often")
    interleave_percentage: int
    min_rollout_coverage: float | None
    coverage_cache_ttl_s: float
    baseline: ModelKey
    candidate: ModelKey
    models: dict[str, ModelReadinessOut]
    user: UserRouteOut | None


class RolloutUpdate(InputModel):
    """``PUT /api/v1/admin/rollout``: a value left out keeps its current one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    use_siglip: bool | None = Field(None, description="send every user to the candidate")
    siglip_rollout_percentage: int | None = Field(
        None, ge=0, le=100, description="share of user buckets (0..100) sent to the candidate"
    )
    interleave_percentage: int | None = Field(
        None,
        ge=0,
        le=100,
        description="share of user buckets (0..100, from the top) whose searches merge both "
        "models by team draft; with siglip_rollout_percentage at most 100",
    )


class RolloutChangeOut(OutputModel):
    changed_at: AwareDatetime
    old_use_siglip: bool
    old_siglip_rollout_percentage: int
    new_use_siglip: bool
    new_siglip_rollout_percentage: int
    old_interleave_percentage: int
    new_interleave_percentage: int
    source: str


class RolloutHistoryOut(OutputModel):
    changes: list[RolloutChangeOut] = Field(description="newest first")


class ArmMetricsOut(OutputModel):
    arm: Arm
    searches: int
    clicked_searches: int = Field(description="searches with at least one event")
    events: int
    ctr: float = Field(description="clicked searches / searches")
    ctr_at_1: float = Field(description="share of searches whose first click was rank 1")
    ctr_at_5: float = Field(description="share of searches whose first click was rank 1-5")
    mrr: float = Field(description="mean reciprocal rank of the first click (0 without one)")
    zero_result_rate: float
    abandonment_rate: float = Field(description="results shown, no click, no reformulation")
    reformulation_rate: float
    latency_p50_ms: float | None = Field(description="without cold starts")
    latency_p95_ms: float | None = Field(description="without cold starts")
    cold_starts: int = Field(
        description="first searches after a model loaded in a process: left out of latency"
    )


class ComparisonOutSchema(OutputModel):
    metric: str
    baseline: float
    candidate: float
    difference: float = Field(description="candidate - baseline, in ``unit``")
    ci_low: float = Field(description="95% confidence sequence: valid at any time")
    ci_high: float
    p_value: float = Field(description="always-valid p-value (mSPRT), read at any time")
    significant: bool = Field(
        description="p < 0.05; exactly when the interval excludes 0 (same method)"
    )
    method: str
    unit: str = Field(description="percentage points (rates) or MRR (0..1)")
    effect: str = Field(description="the difference in words, with its unit and interval")


class InterleavingOutSchema(OutputModel):
    searches: int
    wins: int = Field(description="interleaved searches whose clicks favoured the candidate")
    losses: int
    ties: int
    no_click: int
    p_value: float = Field(
        description="always-valid (mSPRT) test of the win share wins / (wins + losses) against 50%"
    )
    significant: bool = Field(description="p < 0.05 (the sequential test)")
    win_share: float | None = Field(description="None before any decided search")
    win_share_ci_low: float | None
    win_share_ci_high: float | None
    fixed_horizon_p_value: float = Field(
        description="exact two-sided sign test: valid only if the report is read once"
    )
    method: str


class PowerOutSchema(OutputModel):
    min_effect: float
    alpha: float
    power: float
    needed_per_arm: int | None
    have_per_arm: int
    still_needed_per_arm: int | None
    method: str


class GuardrailOutSchema(OutputModel):
    arm: Arm
    metric: Literal["latency_p95_ms", "zero_result_rate"]
    value: float | None
    baseline: float | None = Field(description="the baseline arm's value")
    limit: float | None = Field(description="above this the guardrail is breached")
    searches: int
    breached: bool
    text: str


class RecommendationOut(OutputModel):
    action: Literal["raise", "hold", "roll back"]
    target_percentage: int | None
    text: str
    control: str | None = Field(description="the request that applies the action")
    apply: dict[str, bool | int] | None = Field(
        description="the body of that request (PUT /api/v1/admin/rollout)"
    )


class ExperimentReportOut(OutputModel):
    """The experiment report (``ExperimentReport``), from the API and ``image-search
    experiment report --json`` alike."""

    since: datetime | None
    baseline: ModelKey
    candidate: ModelKey
    siglip_rollout_percentage: int = Field(description="the live flag (routing now)")
    interleave_percentage: int = Field(description="the live flag (routing now)")
    use_siglip: bool = Field(description="the live flag (routing now)")
    flags_source: Literal["database", "environment"] = Field(
        description="database: changed at run time (wins over the environment's flags)"
    )
    flags_changed_at: AwareDatetime | None = Field(description="the last change of the flags")
    flags_changed_by: str | None = Field(description="its source: api, guardrail: <reason>")
    auto_guard: bool = Field(description="ROLLOUT_AUTO_GUARD: a breach rolls back by itself")
    arms: dict[str, ArmMetricsOut]
    comparisons: list[ComparisonOutSchema] = Field(
        description="candidate vs baseline; empty while either arm has no searches"
    )
    interleaving: InterleavingOutSchema
    power: PowerOutSchema
    guardrails: list[GuardrailOutSchema] = Field(
        description="checked since the flags last changed, once both arms have enough searches"
    )
    recommendation: RecommendationOut
    notes: list[str]


class ExperimentDayOut(OutputModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    arm: Arm
    searches: int
    ctr: float
    ctr_at_1: float
    mrr: float
    zero_result_rate: float
    reformulation_rate: float
