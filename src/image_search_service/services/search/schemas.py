"""The public shapes of search: requests, results, embeddings and click events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    field_validator,
)

from image_search_service.core.config import Arm, ModelKey
from image_search_service.core.schemas import (
    MAX_FILTER_NAMES,
    ImageFormat,
    InputModel,
    ModelIdentityOut,
    OutputModel,
    PhotoUrls,
    iso_only,
)
from image_search_service.core.specs import BASELINE
from image_search_service.images.metadata import MAX_NAME_CHARS
from image_search_service.services.metadata.schemas import PersonInPhoto
from image_search_service.services.rollout.report import MAX_RANK
from image_search_service.services.rollout.router import MAX_USER_ID_CHARS
from image_search_service.services.search.embed import MAX_TEXTS, EmbedOutcome
from image_search_service.services.search.log import EventType
from image_search_service.services.search.service import (
    MAX_EXAMPLES,
    MAX_LIMIT,
    MAX_NEGATIVES,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    MAX_WEIGHT,
    CombinedQuery,
    Example,
    SearchOptions,
    name_filter,
)
from image_search_service.vector.base import SearchFilter


class SearchParams(InputModel):
    """Options shared by every search: paging, score floor and payload filters."""

    limit: int = Field(20, ge=1, le=MAX_LIMIT, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="results to skip")
    min_score: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        allow_inf_nan=False,
        description="cosine similarity floor; unset: the model's relevance floor for a text "
        "search; -1: none",
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


def _six_places(value: float) -> float:
    return round(value, 6)


def _two_places(value: float) -> float:
    return round(value, 2)


# Scores are float32 cosines: digits past the sixth are noise in every response.
Score = Annotated[float, AfterValidator(_six_places)]
Millis = Annotated[float, AfterValidator(_two_places)]


class SearchResult(OutputModel):
    """One hit (``SearchHit``): its labels at the top level."""

    asset_id: UUID
    model: ModelKey = Field(
        description="the model that found this result (interleaved: the team that picked it)"
    )
    score: Score = Field(description="cosine similarity")
    calibrated_score: Score | None = Field(
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
    fused_score: Score | None = Field(
        None, description="the fusion's score, when words (full text, caption space) took part"
    )
    spaces: list[Literal["image", "text", "caption"]] = Field(
        ["image"],
        description="where it was found: image (the picture), text (caption, title or tag "
        "words), caption (the caption space: what the words mean)",
    )
    people: list[PersonInPhoto] = Field(description="who is in the photo, with face regions")
    tags: list[str]
    caption: str | None
    title: str | None
    urls: PhotoUrls | None = Field(None, description="thumbnail, preview and file (HTTP only)")


class UnderstoodOut(OutputModel):
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
    caption_space: bool = Field(
        False, description="the caption space (CAPTION_EMBEDDER) answered and was fused in"
    )


class SearchResponse(OutputModel):
    """A search's answer (``SearchAnswer``), from the API and ``image-search search
    --json`` alike."""

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
    took_ms: Millis
    fallback_reason: str | None = Field(
        None, description="set when the routed model could not serve and the baseline answered"
    )
    understood: UnderstoodOut | None = None
    relevance_floor: Score | None = Field(
        None,
        description="the cosine floor results had to reach: the model's relevance floor "
        "for a text search, or the request's min_score; null when none applied (min_score=-1, "
        "a model without a calibrated floor, a search by example, or interleaved models, "
        "each of which applied its own)",
    )
    close_matches: bool = Field(
        True,
        description="false when nothing reached the floor: `results` are then the nearest "
        "few (at most 6, best first) and `has_more` is false",
    )
    has_more: bool = Field(
        False, description="a full page of close matches: the next page may hold more"
    )


class EmbedTextRequest(InputModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="texts to embed")
    model: ModelKey = Field(BASELINE, description="the model to embed with (default: baseline)")


class EmbedItemError(OutputModel):
    index: int = Field(description="position of the failed input")
    filename: str | None
    error: str
    detail: str


class _EmbedInfo(OutputModel):
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
        "model_identity": ModelIdentityOut.model_validate(identity),
        "took_ms": round(outcome.took_ms, 2),
    }


class EventIn(InputModel):
    """One interaction with one result of a search."""

    model_config = ConfigDict(extra="forbid")

    search_id: UUID = Field(description="the `search_id` of the search response")
    asset_id: UUID = Field(description="the result acted on")
    type: EventType
    rank: int = Field(ge=1, le=MAX_RANK, description="1-based position in that response")


class EventOut(OutputModel):
    search_id: UUID
    recorded: bool = Field(description="false when the same event was already recorded")
    model: ModelKey = Field(description="the model credited with the result")


class ModelStatusOut(OutputModel):
    key: ModelKey
    name: str = Field(description="the model's name (MODEL_NAME setting)")
    state: Literal["idle", "loading", "ready", "failed"] = Field(
        description="idle: not loaded yet (the first search loads it); loading: the server "
        "is warming it up; ready; failed: see `error`"
    )
    error: str | None = None


class AboutOut(OutputModel):
    """What the page shows about this server (``About``)."""

    demo: bool = Field(description="the server serves the demo library and its tiny models")
    demo_note: str | None = Field(description="what the demo models know, in plain words")
    models: list[ModelStatusOut]
