"""Request and response bodies of the HTTP API (v1)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from image_search_service.core.config import Arm, ModelKey
from image_search_service.core.specs import BASELINE
from image_search_service.db.metadata_repository import NameCount
from image_search_service.images.metadata import MAX_CAPTION_CHARS, MAX_NAME_CHARS, PersonRegion
from image_search_service.services.assets import MAX_PAGE, AssetPage, AssetView
from image_search_service.services.embed import MAX_TEXTS, EmbedOutcome
from image_search_service.services.embedding_router import MAX_USER_ID_CHARS, RouteDecision
from image_search_service.services.experiment import MAX_RANK
from image_search_service.services.metadata import AssetEdit, NamePage
from image_search_service.services.search import (
    MAX_EXAMPLES,
    MAX_LIMIT,
    MAX_NEGATIVES,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    MAX_WEIGHT,
    CombinedQuery,
    Example,
    SearchOptions,
    SearchOutcome,
    name_filter,
)
from image_search_service.services.search_log import EventType
from image_search_service.vector.base import SearchFilter


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive times; every time the API gives carries its zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


def iso_only(value: Any) -> Any:
    """Refuse a bare number where a time is asked for: pydantic reads it as a Unix time,
    and `taken_before=0.5` or `since=0` is a mistake, not 1970."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())
    ):
        raise ValueError("must be an ISO 8601 date or date-time, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(iso_only)]

ImageFormat = Literal["JPEG", "MPO", "PNG", "WEBP", "HEIF", "GIF", "TIFF", "AVIF"]
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
MAX_FILTER_NAMES = 20


def _nul_free(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_nul_free(k) and _nul_free(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_nul_free(v) for v in value)
    return True


class InputModel(BaseModel):
    """What a client sends. No text in it may hold a NUL character: nothing real needs
    one, PostgreSQL cannot store one, and SQLite cuts a LIKE pattern short at it."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if not _nul_free(data):
            raise ValueError("text must not contain NUL characters (\\x00)")
        return data


# -- search requests -------------------------------------------------------------------
class SearchParams(InputModel):
    """Options shared by every search: paging, score floor and payload filters."""

    limit: int = Field(20, ge=1, le=MAX_LIMIT, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="results to skip")
    min_score: float | None = Field(
        None, ge=-1.0, le=1.0, allow_inf_nan=False, description="cosine similarity floor"
    )
    taken_after: datetime | None = Field(
        None, description="capture time at or after (ISO 8601 date or date-time; naive is UTC)"
    )
    taken_before: datetime | None = Field(
        None, description="capture time before (ISO 8601 date or date-time; naive is UTC)"
    )
    format: ImageFormat | None = Field(None, description="file format (case-insensitive)")
    user_id: str | None = Field(
        None,
        max_length=MAX_USER_ID_CHARS,
        description="routes the request (the X-User-Id header wins when both are given)",
    )
    people: list[Annotated[str, Field(max_length=MAX_NAME_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_FILTER_NAMES,
        description="only photos with ALL these people (comma-separated or repeated; "
        "case-insensitive)",
    )
    people_any: list[Annotated[str, Field(max_length=MAX_NAME_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_FILTER_NAMES,
        description="only photos with AT LEAST ONE of these people",
    )
    tags: list[Annotated[str, Field(max_length=MAX_NAME_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_FILTER_NAMES,
        description="only photos with ALL these tags (keywords)",
    )
    understand: bool = Field(
        True,
        description="text searches: known person names in the query become people filters",
    )
    model: ModelKey | None = Field(
        None,
        description="answer with this model instead of the rollout's choice (operators, the "
        "CLI): no coverage guard, no interleaving, and not recorded as rollout evidence",
    )

    @field_validator("taken_after", "taken_before", mode="before")
    @classmethod
    def _iso_only(cls, value: Any) -> Any:
        return iso_only(value)

    @field_validator("taken_after", "taken_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @field_validator("format", mode="before")
    @classmethod
    def _upper_format(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("people", "people_any", "tags", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """``people=Pat,Jack`` and ``people=Pat&people=Jack`` mean the same."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        out: list[Any] = []
        for item in items:
            if isinstance(item, str):
                out.extend(part.strip() for part in item.split(",") if part.strip())
            else:
                out.append(item)
        return out

    def options(self) -> SearchOptions:
        search_filter = SearchFilter(
            taken_after=self.taken_after,
            taken_before=self.taken_before,
            format=self.format,
            people=name_filter(self.people),
            people_any=name_filter(self.people_any),
            tags=name_filter(self.tags),
        )
        return SearchOptions(
            limit=self.limit,
            offset=self.offset,
            min_score=self.min_score,
            search_filter=None if search_filter.is_empty else search_filter,
            understand=self.understand,
        )


class CombineParams(SearchParams):
    """What a text query may add: negative texts, stored example assets, weights."""

    negative: list[Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_NEGATIVES,
        alias="not",
        description='texts to push away from (repeat for several); "-word" in q does the same',
    )
    like: list[UUID] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="stored asset ids whose vectors are added as examples",
    )
    text_weight: float = Field(1.0, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)
    example_weight: float = Field(
        1.0, ge=0, le=MAX_WEIGHT, allow_inf_nan=False, description="each example image's weight"
    )
    not_weight: float = Field(1.0, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("negative", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def combined(self, text: str | None, uploads: Sequence[bytes] = ()) -> CombinedQuery:
        examples = [Example(data, self.example_weight) for data in uploads]
        examples += [Example(asset_id, self.example_weight) for asset_id in self.like]
        return CombinedQuery(
            text=text,
            text_weight=self.text_weight,
            examples=tuple(examples),
            negatives=tuple(self.negative),
            negative_weight=self.not_weight,
        )


class TextSearchParams(CombineParams):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what to look for")


class CombinedSearchParams(CombineParams):
    """The form fields of ``POST /api/v1/search/combined`` (files go in ``file``)."""

    q: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="what to look for")


class TextSearchBody(TextSearchParams):
    """The JSON body of ``POST /api/v1/search``: the query string's names."""

    # A misspelt option in a body is a mistake worth reporting, not ignoring.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- search responses ------------------------------------------------------------------
class BoxOut(BaseModel):
    """A face region: left, top, width, height as fractions of the image."""

    x: float
    y: float
    w: float
    h: float


class PersonInPhoto(BaseModel):
    name: str
    box: BoxOut | None = None

    @classmethod
    def of(cls, person: PersonRegion) -> PersonInPhoto:
        box = person.box
        return cls(
            name=person.name,
            box=BoxOut(x=box.x, y=box.y, w=box.w, h=box.h) if box else None,
        )


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
    matched_by: Literal["image", "text", "both"] = Field(
        description="image: the visual ranking found it; text: its caption, title or tags "
        "matched; both"
    )
    fused_score: float | None = Field(
        None, description="reciprocal rank fusion score, when full text took part"
    )
    people: list[PersonInPhoto] = Field(description="who is in the photo, with face regions")
    tags: list[str]
    caption: str | None
    title: str | None


class UnderstoodOut(BaseModel):
    """How the search was read, so a client can show it and a user correct it."""

    query: str | None = Field(description="the text as given")
    concept: str | None = Field(description="the part of the text that was embedded")
    people: list[str] = Field(description="people filter applied: all of these (normalised)")
    people_any: list[str] = Field(description="people filter applied: any of these")
    tags: list[str] = Field(description="tag filter applied: all of these (normalised)")
    recognised_people: list[str] = Field(
        description="people recognised in the text (send understand=false to embed it as is)"
    )
    negative: list[str] = Field(description="texts the search was pushed away from")
    examples: int = Field(description="example images in the query")
    full_text: bool = Field(
        description="captions, titles and tags matched and were fused into the ranking"
    )


class SearchResponse(BaseModel):
    search_id: UUID | None = Field(
        description="names this search in POST /api/v1/events; null when the request named "
        "its `model` (such searches are not recorded)"
    )
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
    understood: UnderstoodOut | None = None

    @classmethod
    def of(
        cls,
        outcome: SearchOutcome,
        decision: RouteDecision,
        took_ms: float,
        *,
        search_id: UUID | None,
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
                    matched_by=hit.matched_by,
                    fused_score=(
                        round(hit.fused_score, 6) if hit.fused_score is not None else None
                    ),
                    people=[PersonInPhoto.of(p) for p in hit.labels.people],
                    tags=list(hit.labels.tags),
                    caption=hit.labels.caption,
                    title=hit.labels.title,
                )
                for hit in outcome.results
            ],
            understood=(
                UnderstoodOut.model_validate(outcome.understood.as_dict())
                if outcome.understood
                else None
            ),
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
    people: list[PersonInPhoto]
    tags: list[str]
    caption: str | None
    title: str | None
    metadata_error: str | None = Field(
        description="why some of the file's metadata could not be read (the photo is indexed)"
    )
    edited: list[str] = Field(
        description="fields edited through the API: re-indexing leaves them as edited"
    )

    @classmethod
    def of(cls, view: AssetView) -> AssetOut:
        data = {f: getattr(view, f) for f in cls.model_fields if f != "people"}
        return cls.model_validate({**data, "people": [PersonInPhoto.of(p) for p in view.people]})


class AssetEditIn(InputModel):
    """``PATCH /api/v1/assets/{id}``: the fields given replace the asset's; a field left
    out is unchanged. An edited field is yours from then on: re-indexing keeps it."""

    model_config = ConfigDict(extra="forbid")

    people: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]] | None = Field(
        None, max_length=200, description="everyone in the photo (replaces the list)"
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]] | None = Field(
        None, max_length=200, description="every keyword (replaces the list)"
    )
    caption: str | None = Field(
        None, max_length=MAX_CAPTION_CHARS, description="null clears the caption"
    )

    def edit(self) -> AssetEdit:
        return AssetEdit(
            people=self.people,
            tags=self.tags,
            caption=self.caption,
            set_caption="caption" in self.model_fields_set,
        )


class NameCountOut(BaseModel):
    id: int
    name: str = Field(description="as written")
    count: int = Field(description="photos in the library")

    @classmethod
    def of(cls, item: NameCount) -> NameCountOut:
        return cls(id=item.id, name=item.name, count=item.count)


class NameListOut(BaseModel):
    items: list[NameCountOut]
    total: int = Field(description="names that match, over all pages")
    limit: int
    offset: int

    @classmethod
    def of(cls, page: NamePage) -> NameListOut:
        return cls(
            items=[NameCountOut.of(i) for i in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )


class PersonRenameIn(InputModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="the new name; another person's name merges the two",
    )


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


class ReembedRequest(InputModel):
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


# -- embeddings for other services -----------------------------------------------------
class ModelIdentityOut(BaseModel):
    model_name: str
    pretrained: str
    dim: int


class EmbedTextRequest(InputModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="texts to embed")
    model: ModelKey = Field(BASELINE, description="the model to embed with (default: baseline)")


class EmbedItemError(BaseModel):
    index: int = Field(description="position of the failed input")
    filename: str | None
    error: str
    detail: str


class _EmbedInfo(BaseModel):
    model: ModelKey
    dim: int
    model_identity: ModelIdentityOut
    took_ms: float


class EmbedImageOut(_EmbedInfo):
    embedding: list[float] = Field(description="L2-normalised (unit) vector")


class EmbedBatchOut(_EmbedInfo):
    embeddings: list[list[float] | None] = Field(
        description="one per input, in input order; null where that input failed"
    )
    errors: list[EmbedItemError] = Field(description="the inputs that failed, and why")


class EmbedTextOut(_EmbedInfo):
    embeddings: list[list[float]]


def embed_info(outcome: EmbedOutcome) -> dict[str, Any]:
    identity = outcome.spec.identity
    return {
        "model": outcome.spec.key,
        "dim": identity.dim,
        "model_identity": ModelIdentityOut(**identity.as_dict()),
        "took_ms": round(outcome.took_ms, 2),
    }


# -- near-duplicates -------------------------------------------------------------------
class DuplicateAssetOut(BaseModel):
    asset_id: UUID
    path: str
    width: int | None
    height: int | None
    size_bytes: int


class DuplicateGroupOut(BaseModel):
    size: int
    min_score: float = Field(description="the lowest similarity that joined this group")
    assets: list[DuplicateAssetOut]


class DuplicatesOut(BaseModel):
    model: ModelKey
    collection: str
    threshold: float
    scanned: int = Field(description="photos compared")
    total_groups: int
    duplicates: int = Field(description="photos beyond the first of each returned group")
    seconds: float
    groups: list[DuplicateGroupOut] = Field(description="biggest first")


# -- ingest ----------------------------------------------------------------------------
class IngestOut(BaseModel):
    runner: Literal["rq", "in-process"]
    accepted: int = Field(description="distinct objects in the request")
    queued: int = Field(description="objects newly queued (the rest was already waiting)")
    job_id: str | None = Field(None, description="RQ: the job, named after its objects")


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


class RolloutChangeOut(BaseModel):
    changed_at: UtcDateTime
    old_use_siglip: bool
    old_siglip_rollout_percentage: int
    new_use_siglip: bool
    new_siglip_rollout_percentage: int
    old_interleave_percentage: int
    new_interleave_percentage: int
    source: str


class RolloutHistoryOut(BaseModel):
    changes: list[RolloutChangeOut] = Field(description="newest first")


# -- library indexing ------------------------------------------------------------------
class IndexRequest(InputModel):
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
    queued_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
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


# -- experiment ------------------------------------------------------------------------
class EventIn(InputModel):
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
