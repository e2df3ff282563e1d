"""The public shapes of re-embedding: requests, submissions and progress."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
)

from image_search_service.core.config import ModelKey
from image_search_service.core.schemas import InputModel, OutputModel


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
    jobs: int | None = Field(None, description="RQ: jobs queued")
    running_in_background: bool | None = Field(
        None, description="in-process: the run goes on in this server; watch GET /reembed"
    )
