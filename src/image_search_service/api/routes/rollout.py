"""``/api/v1/admin/rollout`` and ``/api/v1/admin/experiment``: the rollout flags, their
history, and the experiment report that says whether to move users to the candidate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from image_search_service.api.deps import (
    DbSession,
    RequireAdmin,
    RequireJson,
    RouterDep,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.core.schemas import IsoDateTime
from image_search_service.services.rollout.flags import MAX_HISTORY
from image_search_service.services.rollout.report import (
    DEFAULT_MIN_EFFECT,
    MIN_EFFECT_RANGE,
    enforce_guardrails,
    experiment_daily,
    experiment_report,
)
from image_search_service.services.rollout.router import MAX_USER_ID_CHARS, clean_user_id
from image_search_service.services.rollout.schemas import (
    ExperimentDayOut,
    ExperimentReportOut,
    RolloutChangeOut,
    RolloutHistoryOut,
    RolloutOut,
    RolloutUpdate,
)

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[RequireAdmin])


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


@router.put(
    "/rollout",
    summary="Change the rollout flags now, for every API process (stored in the metadata DB)",
    dependencies=[RequireJson],
    responses=error_responses(
        Unauthorized,
        InvalidRequest,
        UnsupportedMediaType,
        DatabaseUnavailable,
        VectorStoreUnavailable,
    ),
)
def change_rollout(embedding_router: RouterDep, body: RolloutUpdate) -> RolloutOut:
    embedding_router.flags.set(
        use_siglip=body.use_siglip,
        siglip_rollout_percentage=body.siglip_rollout_percentage,
        interleave_percentage=body.interleave_percentage,
        source="api",
    )
    return RolloutOut.model_validate(embedding_router.rollout_status())


@router.delete(
    "/rollout",
    summary="Forget the run-time flags: USE_SIGLIP / SIGLIP_ROLLOUT_PERCENTAGE apply again",
    responses=error_responses(Unauthorized, DatabaseUnavailable, VectorStoreUnavailable),
)
def reset_rollout(embedding_router: RouterDep) -> RolloutOut:
    embedding_router.flags.reset(source="api")
    return RolloutOut.model_validate(embedding_router.rollout_status())


@router.get(
    "/rollout/history",
    summary="Every change of the rollout flags: when, old and new values",
    responses=error_responses(Unauthorized, InvalidRequest, DatabaseUnavailable),
)
def rollout_history(
    embedding_router: RouterDep,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 50,
) -> RolloutHistoryOut:
    changes = embedding_router.flags.history(limit=limit)
    return RolloutHistoryOut(changes=[RolloutChangeOut.model_validate(c) for c in changes])


@router.get(
    "/experiment",
    summary="The rollout experiment: the live flags, per-arm metrics, sequential "
    "differences, interleaving wins and losses, guardrails, searches still needed, and one "
    "recommendation naming the request that applies it",
    responses=error_responses(Unauthorized, DatabaseUnavailable),
)
def experiment(
    services: ServicesDep,
    embedding_router: RouterDep,
    session: DbSession,
    since: Annotated[
        IsoDateTime | None,
        Query(description="only searches at or after (ISO 8601; naive is UTC)"),
    ] = None,
    min_effect: Annotated[
        float,
        Query(
            ge=MIN_EFFECT_RANGE[0],
            le=MIN_EFFECT_RANGE[1],
            description="the absolute CTR change the sample size is sized for",
        ),
    ] = DEFAULT_MIN_EFFECT,
) -> ExperimentReportOut:
    services.search_log.flush()  # every search answered before this one counts
    # With ROLLOUT_AUTO_GUARD a breach is applied before the report is made (which then
    # shows the rolled-back flags); without it the report recommends the rollback.
    enforce_guardrails(services.ctx, embedding_router.flags)
    report = experiment_report(session, services.ctx.settings, since=since, min_effect=min_effect)
    return ExperimentReportOut.model_validate(report)


@router.get(
    "/experiment/daily",
    summary="The experiment per UTC day and arm (searches, CTR, CTR@1, MRR, zero results, "
    "reformulations): the series behind the admin page's charts",
    responses=error_responses(Unauthorized, DatabaseUnavailable),
)
def experiment_by_day(
    services: ServicesDep,
    session: DbSession,
    days: Annotated[int, Query(ge=1, le=366, description="days back, today included")] = 30,
) -> list[ExperimentDayOut]:
    services.search_log.flush()
    rows = experiment_daily(session, days=days, now=datetime.now(UTC))
    return [ExperimentDayOut.model_validate(row) for row in rows]
