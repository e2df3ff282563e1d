"""The public shapes of the rollout: flags, routing, history and the experiment report."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
)

from image_search_service.core.config import Arm, ModelKey
from image_search_service.core.schemas import InputModel, OutputModel, UtcDateTime


class ModelReadinessOut(OutputModel):
    model: ModelKey
    collection: str
    ready: bool
    exists: bool
    points: int
    embedded: int
    active: int
    missing: int
    coverage: float
    reason_code: str | None
    reason: str | None


class UserRouteOut(OutputModel):
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
    changed_at: UtcDateTime
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
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class ComparisonOutSchema(OutputModel):
    metric: str
    baseline: float
    candidate: float
    difference: float = Field(description="candidate - baseline")
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool = Field(description="p < 0.05")
    method: str


class InterleavingOutSchema(OutputModel):
    searches: int
    wins: int = Field(description="interleaved searches whose clicks favoured the candidate")
    losses: int
    ties: int
    no_click: int
    p_value: float = Field(description="exact two-sided sign test, wins against losses")
    significant: bool


class PowerOutSchema(OutputModel):
    min_effect: float
    alpha: float
    power: float
    needed_per_arm: int | None
    have_per_arm: int
    still_needed_per_arm: int | None


class RecommendationOut(OutputModel):
    action: Literal["raise", "hold", "roll back"]
    target_percentage: int | None
    text: str


class ExperimentReportOut(OutputModel):
    since: datetime | None
    baseline: ModelKey
    candidate: ModelKey
    siglip_rollout_percentage: int
    interleave_percentage: int
    arms: dict[str, ArmMetricsOut]
    comparisons: list[ComparisonOutSchema]
    interleaving: InterleavingOutSchema
    power: PowerOutSchema
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
