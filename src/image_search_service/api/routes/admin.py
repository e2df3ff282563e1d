"""``/api/v1/admin``: what operators look at and start while rolling a model out."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from image_search_service.api.deps import (
    DbSession,
    RequireApiKey,
    RequireJson,
    RouterDep,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import (
    ExperimentDayOut,
    ExperimentReportOut,
    ReembedProgressOut,
    ReembedRequest,
    ReembedSubmissionOut,
    RolloutOut,
)
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    ModelMismatch,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.jobs.queue import QueueUnavailable
from image_search_service.services.embedding_router import MAX_USER_ID_CHARS, clean_user_id
from image_search_service.services.experiment import (
    DEFAULT_MIN_EFFECT,
    experiment_daily,
    experiment_report,
)
from image_search_service.services.migration import submit_reembed
from image_search_service.services.reembed import reembed_progress

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[RequireApiKey])


@router.get(
    "/rollout",
    summary="Rollout flags, each model's collection and coverage, and a user's model",
    responses=error_responses(
        Unauthorized, InvalidRequest, DatabaseUnavailable, VectorStoreUnavailable
    ),
)
def rollout(
    embedding_router: RouterDep,
    user_id: Annotated[
        str | None,
        Query(max_length=MAX_USER_ID_CHARS, description="show this user's bucket and model"),
    ] = None,
) -> RolloutOut:
    return RolloutOut.model_validate(embedding_router.rollout_status(clean_user_id(user_id)))


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
    return ReembedProgressOut.model_validate(
        reembed_progress(services.ctx, target=target).as_dict()
    )


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
        background=True,
    )
    services.router.invalidate()
    return ReembedSubmissionOut.model_validate(submission.as_dict())


@router.get(
    "/experiment",
    summary="The rollout experiment: per-arm metrics, differences with significance, "
    "interleaving wins and losses, sample size still needed, and a recommendation",
    responses=error_responses(Unauthorized, DatabaseUnavailable),
)
def experiment(
    services: ServicesDep,
    session: DbSession,
    since: Annotated[
        datetime | None, Query(description="only searches at or after (ISO 8601; naive is UTC)")
    ] = None,
    min_effect: Annotated[
        float,
        Query(gt=0, lt=1, description="the absolute CTR change the sample size is sized for"),
    ] = DEFAULT_MIN_EFFECT,
) -> ExperimentReportOut:
    report = experiment_report(session, services.ctx.settings, since=since, min_effect=min_effect)
    return ExperimentReportOut.model_validate(report.as_dict())


@router.get(
    "/experiment/daily",
    summary="The experiment per UTC day and arm (searches, CTR, CTR@1, MRR, zero results, "
    "reformulations): the series behind the admin page's charts",
    responses=error_responses(Unauthorized, DatabaseUnavailable),
)
def experiment_by_day(
    session: DbSession,
    days: Annotated[int, Query(ge=1, le=366, description="days back, today included")] = 30,
) -> list[ExperimentDayOut]:
    rows = experiment_daily(session, days=days, now=datetime.now(UTC))
    return [ExperimentDayOut.model_validate(asdict(row)) for row in rows]
