"""The public shapes of the library: assets, index runs, ingest, duplicates, status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import (
    ConfigDict,
    Field,
)

from image_search_service.core.config import ModelKey
from image_search_service.core.schemas import InputModel, OutputModel, UtcDateTime
from image_search_service.services.library.assets import MAX_PAGE, AssetPage, AssetView
from image_search_service.services.metadata.schemas import PersonInPhoto


class AssetOut(OutputModel):
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


class AssetPageOut(OutputModel):
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


class DuplicateAssetOut(OutputModel):
    asset_id: UUID
    path: str
    width: int | None
    height: int | None
    size_bytes: int


class DuplicateGroupOut(OutputModel):
    size: int
    min_score: float = Field(description="the lowest similarity that joined this group")
    assets: list[DuplicateAssetOut]


class DuplicatesOut(OutputModel):
    model: ModelKey
    collection: str
    threshold: float
    scanned: int = Field(description="photos compared")
    total_groups: int
    duplicates: int = Field(description="photos beyond the first of each returned group")
    seconds: float
    groups: list[DuplicateGroupOut] = Field(description="biggest first")


class IngestOut(OutputModel):
    runner: Literal["rq", "in-process"]
    accepted: int = Field(description="distinct objects in the request")
    queued: int = Field(description="objects newly queued (the rest was already waiting)")
    job_id: str | None = Field(None, description="RQ: the job, named after its objects")


class IndexRequest(InputModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="a folder on the server")
    model: Literal["auto", "all", "clip", "siglip"] = Field(
        "auto", description="auto: CLIP plus every model whose collection exists"
    )


class IndexReportOut(OutputModel):
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


class IndexRunOut(OutputModel):
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


class IndexStatusOut(OutputModel):
    running: bool
    current: IndexRunOut | None
    queued: list[IndexRunOut]
    finished: list[IndexRunOut] = Field(description="the latest runs, newest first")
    problems: list[str] = Field(description="e.g. a watched folder that is unavailable")


class IndexSubmissionOut(OutputModel):
    run: IndexRunOut = Field(description="the queued request (or the one already waiting)")
    status: IndexStatusOut


class LibraryStatusOut(OutputModel):
    """What ``image-search status --json`` prints, from the running server."""

    assets: int = Field(description="searchable assets")
    assets_total: int
    failed: int
    missing: int
    vector_store: str
    database: str
    models: dict[str, dict[str, Any]]
