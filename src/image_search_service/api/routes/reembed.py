"""``/api/v1/admin/reembed``: re-embedding progress, and starting a run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from image_search_service.api.deps import (
    RequireAdmin,
    RequireJson,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    ModelMismatch,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.jobs.queue import QueueUnavailable
from image_search_service.services.reembed.progress import reembed_progress
from image_search_service.services.reembed.schemas import (
    ReembedProgressOut,
    ReembedRequest,
    ReembedSubmissionOut,
)
from image_search_service.services.reembed.submit import submit_reembed

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[RequireAdmin])


@router.get(
    "/reembed",
    summary="Re-embedding progress: total, done, failed, rate and ETA per model",
    responses=error_responses(Unauthorized, DatabaseUnavailable, VectorStoreUnavailable),
)
def reembed(
    services: ServicesDep,
    target: Annotated[
        ModelKey | None,
        Query(description="the model being migrated to (default: the one with most left)"),
    ] = None,
) -> ReembedProgressOut:
    return ReembedProgressOut.model_validate(reembed_progress(services.ctx, target=target))


@router.post(
    "/reembed",
    status_code=202,
    summary="Start re-embedding the library with a model (RQ jobs, or a run in this server)",
    dependencies=[RequireJson],
    responses=error_responses(
        Unauthorized,
        InvalidRequest,
        ModelMismatch,
        UnsupportedMediaType,
        DatabaseUnavailable,
        VectorStoreUnavailable,
        QueueUnavailable,
    ),
)
def start_reembed(services: ServicesDep, body: ReembedRequest) -> ReembedSubmissionOut:
    submission = submit_reembed(
        services.ctx,
        body.model,
        force=body.force,
        only_failed=body.only_failed,
        job_size=body.job_size,
        dispatcher=services.dispatcher,
    )
    services.router.invalidate()
    return ReembedSubmissionOut.model_validate(submission)
