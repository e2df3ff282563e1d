"""Request and response bodies of the HTTP API (v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from image_search_service.core.config import ModelKey
from image_search_service.services.assets import MAX_PAGE, AssetPage, AssetView
from image_search_service.services.embedding_router import MAX_USER_ID_CHARS, RouteDecision
from image_search_service.services.search import (
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    SearchOptions,
    SearchOutcome,
)
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
    results: list[SearchResult]
    model: ModelKey = Field(description="the model that answered")
    collection: str
    limit: int
    offset: int
    took_ms: float
    fallback_reason: str | None = Field(
        None, description="set when the routed model could not serve and the baseline answered"
    )

    @classmethod
    def of(cls, outcome: SearchOutcome, decision: RouteDecision, took_ms: float) -> SearchResponse:
        return cls(
            results=[
                SearchResult(
                    asset_id=hit.asset_id,
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
            model=outcome.model,
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


class RolloutOut(BaseModel):
    use_siglip: bool
    siglip_rollout_percentage: int
    flags_source: Literal["database", "environment"] = Field(
        description="database: changed at run time (wins over the environment's flags)"
    )
    flags_refresh_s: float = Field(description="every process re-reads the flags this often")
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


class RolloutUpdate(BaseModel):
    """``PUT /api/v1/admin/rollout``: a value left out keeps its current one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    use_siglip: bool | None = Field(None, description="send every user to the candidate")
    siglip_rollout_percentage: int | None = Field(
        None, ge=0, le=100, description="share of user buckets (0..100) sent to the candidate"
    )


class RolloutChangeOut(BaseModel):
    changed_at: datetime
    old_use_siglip: bool
    old_siglip_rollout_percentage: int
    new_use_siglip: bool
    new_siglip_rollout_percentage: int
    source: str


class RolloutHistoryOut(BaseModel):
    changes: list[RolloutChangeOut] = Field(description="newest first")


# -- library indexing ------------------------------------------------------------------
class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="a folder on the server")
    model: Literal["auto", "all", "clip", "siglip"] = Field(
        "auto", description="auto: CLIP plus every model whose collection exists"
    )


class IndexReportOut(BaseModel):
    scanned: int
    indexed: int
    skipped: int
    duplicates: int
    failed: int
    missing: int
    seconds: float
    images_per_second: float
    models: list[str]
    failures: list[dict[str, str]]


class IndexRunOut(BaseModel):
    path: str
    reason: str = Field(description="api, watch (a watched folder changed), start or cli")
    model: str
    phase: Literal["queued", "scanning", "embedding", "done", "failed"]
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int | None = Field(description="photos to embed, once the folder is scanned")
    done: int
    report: IndexReportOut | None
    error: str | None


class IndexStatusOut(BaseModel):
    running: bool
    current: IndexRunOut | None
    queued: list[IndexRunOut]
    finished: list[IndexRunOut] = Field(description="the latest runs, newest first")
    problems: list[str] = Field(description="e.g. a watched folder that is unavailable")


class IndexSubmissionOut(BaseModel):
    run: IndexRunOut = Field(description="the queued request (or the one already waiting)")
    status: IndexStatusOut


class LibraryStatusOut(BaseModel):
    """What ``image-search status --json`` prints, from the running server."""

    assets: int = Field(description="searchable assets")
    assets_total: int
    failed: int
    missing: int
    vector_store: str
    database: str
    models: dict[str, dict[str, Any]]
