"""The public shapes of the library: assets, index runs, ingest, duplicates, status."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote_plus
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from image_search_service.core.config import ModelKey
from image_search_service.core.schemas import (
    InputModel,
    ModelIdentityOut,
    OutputModel,
    PhotoUrls,
)
from image_search_service.images.s3 import SCHEME, parse_object_uri
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
    urls: PhotoUrls | None = Field(None, description="thumbnail, preview and file (HTTP only)")

    @classmethod
    def of(cls, view: AssetView) -> AssetOut:
        data = {f: getattr(view, f) for f in cls.model_fields if f not in ("people", "urls")}
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
    metadata_refreshed: int = Field(0, description="unchanged photos whose sidecar was re-read")
    seconds: float
    images_per_second: float
    models: list[str]
    failures: list[dict[str, str]]
    unsupported: int = Field(0, description="files of formats that are not decoded")
    unsupported_files: list[str] = Field(
        default_factory=list, description="the first of them (up to 1000)"
    )
    captions_embedded: int = Field(0, description="captions embedded into the caption space")
    captions_pending: int = Field(
        0, description="captions left pending (the photos are indexed by their image)"
    )
    captions_error: str | None = Field(None, description="why the pending captions wait")


class IndexRunOut(OutputModel):
    path: str
    reason: str = Field(description="api, watch (a watched folder changed), start or cli")
    model: str
    phase: Literal["queued", "scanning", "embedding", "done", "failed"]
    queued_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
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
    watched_by: str | None = Field(
        None,
        description="the process watching LIBRARY_PATHS for the deployment "
        '("image-search watcher HOST:PID"; null: no watched folders, or not known yet)',
    )


class IndexSubmissionOut(OutputModel):
    run: IndexRunOut = Field(description="the queued request (or the one already waiting)")
    status: IndexStatusOut


class ModelStatusOut(OutputModel):
    collection: str
    exists: bool
    configured_model: ModelIdentityOut = Field(description="what the settings would encode with")
    configured_runtime: str = Field(description="e.g. onnx-int8, torch-fp32")
    embedded: int
    failed: int
    pending: int
    coverage: float = Field(description="share of searchable photos with this model's vector")
    points: int
    model_identity: ModelIdentityOut | None = Field(
        description="what the collection is stamped with (null: no collection)"
    )
    identity_matches: bool | None = Field(description="null: no collection")
    dim: int | None
    distance: str | None
    quantization: str | None
    hnsw: dict[str, int | None] | None
    runtimes: list[str] = Field(description="the runtimes whose vectors it holds")
    model_loaded: bool = Field(
        description="whether this process has loaded the model; status never loads it, so "
        "precision and int8_refused are null until something encodes with it"
    )
    precision: dict[str, str] | None = Field(
        description='what encodes each tower, e.g. {"image": "onnx-int8", "text": "onnx-int8"}'
        " (null: not loaded)"
    )
    int8_refused: str | None = Field(
        description="why INT8 does not serve though configured: refused on this CPU class "
        "(with the measured agreement) or the export failed (null: serves, not asked, not "
        "loaded)"
    )
    cpu_isa: str | None = Field(
        description="the CPU class ONNX exports are verified for and INT8 settings chosen by, "
        "e.g. avx2, avx512_vnni (null: INT8 not configured and no ONNX encoder loaded)"
    )
    int8_decision: str | None = Field(
        None,
        description="each INT8 method tried (dynamic, then static where dynamic is refused), "
        "accepted or refused, with its recall@10 against fp32 and min cosine (null: INT8 not "
        "configured or not loaded)",
    )


class DiskStatusOut(OutputModel):
    """DATA_DIR's free space against the reserve kept for writes (MIN_FREE_DISK_MB)."""

    path: Path
    free_mb: int
    reserve_mb: int
    low: bool = Field(description="below the reserve: writes are refused (507), reads go on")


class CaptionStatusOut(OutputModel):
    """Photos with caption text, and how many of them the caption space holds."""

    embedder: str = Field(description="the text embedder the collection is stamped with")
    collection: str
    with_text: int = Field(description="searchable photos with a caption, title or tags")
    embedded: int
    pending: int = Field(description="waiting for the text embedder (retried by each index run)")
    last_error: str | None = Field(None, description="why the pending ones wait")
    points: int


class LibraryStatusOut(OutputModel):
    """What ``image-search status --json`` prints, with or without a running server."""

    assets: int = Field(description="searchable assets: decoded and embedded by a model")
    indexing: int = Field(0, description="decoded photos no model has embedded yet")
    assets_total: int
    failed: int
    missing: int
    vector_store: str
    database: str
    models: dict[ModelKey, ModelStatusOut]
    disk: DiskStatusOut | None = None
    captions: CaptionStatusOut | None = Field(
        None, description="the caption space's coverage (null: CAPTION_EMBEDDER is off)"
    )


# -- ingest: what S3-compatible stores send (AWS, MinIO...), or plain URI lists ---------
def _object_uri(value: str) -> str:
    if not value.startswith(SCHEME):
        raise ValueError(f"not an s3:// object URI: {value[:200]!r}")
    parse_object_uri(value)  # a bucket and a key, or ValueError
    return value


ObjectUri = Annotated[str, AfterValidator(_object_uri)]
_HANDLED_EVENTS = ("ObjectCreated", "ObjectRemoved", "s3:ObjectCreated", "s3:ObjectRemoved")


class S3BucketRef(InputModel):
    name: str = Field(min_length=1)


class S3ObjectRef(InputModel):
    key: str = Field(min_length=1, description="URL-encoded, spaces as '+'")


class S3Entity(InputModel):
    bucket: S3BucketRef
    object: S3ObjectRef


class S3EventRecord(InputModel):
    eventName: str = ""  # noqa: N815 (the notification's own field name)
    s3: S3Entity | None = None

    @model_validator(mode="after")
    def _object_named(self) -> S3EventRecord:
        if self.eventName.startswith(_HANDLED_EVENTS) and self.s3 is None:
            raise ValueError("a record lacks s3.bucket.name or s3.object.key")
        return self

    def uri(self) -> str | None:
        """The object's URI; None for notifications that are not ours (replication...)."""
        if self.s3 is None or not self.eventName.startswith(_HANDLED_EVENTS):
            return None
        return f"{SCHEME}{self.s3.bucket.name}/{unquote_plus(self.s3.object.key)}"


class S3Notification(InputModel):
    Records: list[S3EventRecord]  # noqa: N815


class S3TestEvent(InputModel):
    Event: Literal["s3:TestEvent"]  # noqa: N815


class UriList(InputModel):
    uris: list[ObjectUri]


IngestBody = S3Notification | UriList | S3TestEvent | list[ObjectUri]
INGEST_BODY: TypeAdapter[IngestBody] = TypeAdapter(IngestBody)
