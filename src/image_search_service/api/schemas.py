"""Request and response bodies of the HTTP API (v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from image_search_service.core.config import Arm, ModelKey
from image_search_service.services.assets import MAX_PAGE, AssetPage, AssetView
from image_search_service.services.embedding_router import MAX_USER_ID_CHARS, RouteDecision
from image_search_service.services.experiment import MAX_RANK
from image_search_service.services.search import (
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    SearchOptions,
    SearchOutcome,
)
from image_search_service.services.search_log import EventType
from image_search_service.vector.base import SearchFilter

ImageFormat = Literal["JPEG", "PNG", "WEBP"]


# -- search requests -------------------------------------------------------------------
class SearchParams(BaseModel):
    """Options shared by every search: paging, score floor and payload filters."""

    limit: int = Field(20, ge=1, le=MAX_LIMIT, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="results to skip")
    min_score: float | None = Field(
        None, ge=-1.0, le=1.0, allow_inf_nan=False, description="cosine similarity floor"
    )
    taken_after: datetime | None = Field(
        None, description="capture time at or after (ISO 8601 date or date-time; naive is UTC)"
    )
    taken_before: datetime | None = Field(None, description="capture time before (ISO 8601)")
    format: ImageFormat | None = Field(None, description="file format (case-insensitive)")
    user_id: str | None = Field(
        None,
        max_length=MAX_USER_ID_CHARS,
        description="routes the request (the X-User-Id header wins when both are given)",
    )

    @field_validator("format", mode="before")
    @classmethod
    def _upper_format(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def options(self) -> SearchOptions:
        search_filter = SearchFilter(
            taken_after=self.taken_after, taken_before=self.taken_before, format=self.format
        )
        return SearchOptions(
            limit=self.limit,
            offset=self.offset,
            min_score=self.min_score,
            search_filter=None if search_filter.is_empty else search_filter,
        )


class TextSearchParams(SearchParams):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for")


class TextSearchBody(TextSearchParams):
    """The JSON body of ``POST /api/v1/search``: the query string's names."""

    # A misspelt option in a body is a mistake worth reporting, not ignoring.
    model_config = ConfigDict(extra="forbid")


# -- search responses ------------------------------------------------------------------
class SearchResult(BaseModel):
    asset_id: UUID
    model: ModelKey = Field(
        description="the model that found this result (interleaved: the team that picked it)"
    )
    score: float = Field(description="cosine similarity")
    calibrated_score: float | None = Field(
        None, description="text-image probability, for models trained with a sigmoid loss"
    )
    path: str
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None


class SearchResponse(BaseModel):
    search_id: UUID = Field(description="names this search in POST /api/v1/events")
    results: list[SearchResult]
    model: Arm = Field(
        description="the model that answered, or `interleaved` (both, merged by team draft)"
    )
    collection: str
    limit: int
    offset: int
    took_ms: float
    fallback_reason: str | None = Field(
        None, description="set when the routed model could not serve and the baseline answered"
    )

    @classmethod
    def of(
        cls,
        outcome: SearchOutcome,
        decision: RouteDecision,
        took_ms: float,
        *,
        search_id: UUID,
    ) -> SearchResponse:
        return cls(
            search_id=search_id,
            results=[
                SearchResult(
                    asset_id=hit.asset_id,
                    model=hit.model,
                    score=round(hit.score, 6),
                    calibrated_score=(
                        round(hit.calibrated_score, 6) if hit.calibrated_score is not None else None
                    ),
                    path=hit.path,
                    width=hit.width,
                    height=hit.height,
                    format=hit.format,
                    taken_at=hit.taken_at,
                )
                for hit in outcome.results
            ],
            model=outcome.arm,
            collection=outcome.collection,
            limit=outcome.limit,
            offset=outcome.offset,
            took_ms=round(took_ms, 2),
            fallback_reason=decision.fallback_reason,
        )


# -- assets ----------------------------------------------------------------------------
class AssetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    path: str
    status: str
    error: str | None
    content_hash: str
    size_bytes: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    created_at: datetime
    updated_at: datetime
    embeddings: dict[str, str] = Field(
        default_factory=dict, description="per model: pending, done or failed (single asset only)"
    )

    @classmethod
    def of(cls, view: AssetView) -> AssetOut:
        return cls.model_validate(view)


class AssetPageOut(BaseModel):
    items: list[AssetOut]
    total: int
    limit: int = Field(le=MAX_PAGE)
    offset: int

    @classmethod
    def of(cls, page: AssetPage) -> AssetPageOut:
        return cls(
            items=[AssetOut.of(v) for v in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


# -- health and admin ------------------------------------------------------------------
class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    database: str
    vector_store: str


class ModelReadinessOut(BaseModel):
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


class UserRouteOut(BaseModel):
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


class RolloutOut(BaseModel):
    use_siglip: bool
    siglip_rollout_percentage: int
    interleave_percentage: int
    min_rollout_coverage: float | None
    coverage_cache_ttl_s: float
    baseline: ModelKey
    candidate: ModelKey
    models: dict[str, ModelReadinessOut]
    user: UserRouteOut | None


class ModelProgressOut(BaseModel):
    model: ModelKey
    collection: str
    model_name: str
    total: int = Field(description="assets in the library (searchable + unreadable)")
    done: int = Field(description="embedded by exactly the configured model")
    failed: int = Field(description="given up on, with a reason")
    pending: int = Field(description="total - done - failed")
    coverage: float = Field(description="done / searchable assets")
    rate: float = Field(description="assets finished per second over the last minutes")
    eta_seconds: float | None = Field(description="None while no progress is being made")
    last_activity: datetime | None
    collection_exists: bool | None = Field(description="None when the store was not read")
    points: int | None


class QueueOut(BaseModel):
    name: str
    queued: int
    started: int
    scheduled_retries: int
    failed_jobs: int
    workers: int
    error: str | None


class ReembedProgressOut(BaseModel):
    """The ``target`` model's figures at the top level; every model under ``models``."""

    target: ModelKey
    total: int
    done: int
    failed: int
    pending: int
    rate: float
    eta_seconds: float | None
    coverage: float
    complete: bool
    models: dict[ModelKey, ModelProgressOut]
    runner: Literal["rq", "in-process"]
    queue: QueueOut | None
    vector_store_error: str | None
    note: str | None


class ReembedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelKey = Field(description="the model to embed with")
    force: bool = Field(False, description="also re-embed assets already done")
    only_failed: bool = Field(False, description="only the assets the model failed on")
    job_size: int = Field(64, ge=1, le=10_000, description="asset ids per job")


class ReembedSubmissionOut(BaseModel):
    model: ModelKey
    runner: Literal["rq", "in-process"]
    planned: int = Field(description="assets planned for this run")
    created_collection: bool
    note: str | None
    enqueued_assets: int | None = Field(None, description="RQ: assets put on the queue")
    already_queued: int | None = Field(None, description="RQ: assets already waiting")
    jobs: int | None = Field(None, description="RQ: jobs queued")
    running_in_background: bool | None = Field(
        None, description="in-process: the run goes on in this server; watch GET /reembed"
    )


# -- experiment ------------------------------------------------------------------------
class EventIn(BaseModel):
    """One interaction with one result of a search."""

    model_config = ConfigDict(extra="forbid")

    search_id: UUID = Field(description="the `search_id` of the search response")
    asset_id: UUID = Field(description="the result acted on")
    type: EventType
    rank: int = Field(ge=1, le=MAX_RANK, description="1-based position in that response")


class EventOut(BaseModel):
    search_id: UUID
    recorded: bool = Field(description="false when the same event was already recorded")
    model: ModelKey = Field(description="the model credited with the result")


class ArmMetricsOut(BaseModel):
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


class ComparisonOutSchema(BaseModel):
    metric: str
    baseline: float
    candidate: float
    difference: float = Field(description="candidate - baseline")
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool = Field(description="p < 0.05")
    method: str


class InterleavingOutSchema(BaseModel):
    searches: int
    wins: int = Field(description="interleaved searches whose clicks favoured the candidate")
    losses: int
    ties: int
    no_click: int
    p_value: float = Field(description="exact two-sided sign test, wins against losses")
    significant: bool


class PowerOutSchema(BaseModel):
    min_effect: float
    alpha: float
    power: float
    needed_per_arm: int | None
    have_per_arm: int
    still_needed_per_arm: int | None


class RecommendationOut(BaseModel):
    action: Literal["raise", "hold", "roll back"]
    target_percentage: int | None
    text: str


class ExperimentReportOut(BaseModel):
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


class ExperimentDayOut(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    arm: Arm
    searches: int
    ctr: float
    ctr_at_1: float
    mrr: float
    zero_result_rate: float
    reformulation_rate: float
