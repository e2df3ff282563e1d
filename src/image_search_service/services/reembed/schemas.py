"""The public shapes of re-embedding: requests, submissions and progress."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_serializer,
)

from image_search_service.core.config import ModelKey
from image_search_service.core.schemas import InputModel, ModelIdentityOut, OutputModel


class ModelProgressOut(OutputModel):
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

    @field_serializer("rate")
    def _rate(self, rate: float) -> float:
        return round(rate, 3)


class QueueOut(OutputModel):
    name: str
    queued: int
    started: int
    scheduled_retries: int
    failed_jobs: int
    workers: int
    error: str | None


class ReembedProgressOut(OutputModel):
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

    @field_serializer("rate")
    def _rate(self, rate: float) -> float:
        return round(rate, 3)


class ReembedRequest(InputModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelKey = Field(description="the model to embed with")
    force: bool = Field(False, description="also re-embed assets already done")
    only_failed: bool = Field(False, description="only the assets the model failed on")
    job_size: int = Field(64, ge=1, le=10_000, description="asset ids per job")


class ReembedSubmissionOut(OutputModel):
    model: ModelKey
    runner: Literal["rq", "in-process"]
    planned: int = Field(description="assets planned for this run")
    created_collection: bool
    note: str | None
    enqueued_assets: int | None = Field(None, description="RQ: assets put on the queue")
    already_queued: int | None = Field(None, description="RQ: assets already waiting")
    jobs: int | None = Field(None, description="jobs queued (RQ) or run (in-process)")
    queue: str | None = Field(None, description="RQ: the queue")
    running_in_background: bool | None = Field(
        None, description="in-process: the run goes on in this server; watch GET /reembed"
    )
    # An in-process run that was waited for (the CLI without Redis): how it went.
    done: int | None = None
    failed: int | None = None
    skipped: int | None = None
    retries: int | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    failures: list[dict[str, str]] | None = None
    aborted: str | None = Field(None, description="why the run stopped early, if it did")


class CollectionCheckOut(OutputModel):
    """``create-collection`` and ``create-collection --check``: the collection against the
    settings and the library."""

    model: ModelKey
    collection: str
    exists: bool
    ok: bool = Field(description="exists and matches the settings")
    problems: list[str]
    vector_store: str
    expected: dict[str, Any] = Field(description="what the settings ask for")
    coverage: float
    embedded: int
    assets: int = Field(description="searchable assets")
    # The collection as the store describes it (null, or empty, when it does not exist).
    points: int | None = None
    dim: int | None = None
    distance: str | None = None
    quantization: str | None = None
    hnsw: dict[str, int | None] | None = None
    model_identity: ModelIdentityOut | None = Field(None, description="its model stamp")
    runtimes: list[str] = Field(default_factory=list, description="runtimes of its vectors")
    physical_collection: str | None = Field(
        None, description="the collection its name is an alias of (a Qdrant server)"
    )
    note: str | None = None
    created: bool | None = Field(None, description="create-collection: made by this call")


class CollectionRebuildOut(OutputModel):
    """``reembed rebuild``: a new collection filled, then the alias moved to it."""

    model: ModelKey
    collection: str = Field(description="the alias searches use")
    physical: str = Field(description="the collection filled (dropped again if aborted)")
    previous: str | None = Field(description="what the alias named before")
    planned: int
    done: int
    failed: int
    caught_up: int = Field(description="assets indexed during the fill, added at the end")
    removed: int = Field(description="assets deleted during the fill, removed at the end")
    switched: bool
    dropped_previous: bool
    seconds: float
    aborted: str | None = Field(description="why it stopped; the alias did not move")
