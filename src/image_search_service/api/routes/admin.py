"""``/api/v1/admin``: what operators look at while rolling a model out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from image_search_service.api.deps import RequireApiKey, RouterDep, ServicesDep
from image_search_service.api.errors import error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import RolloutOut
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.services.embedding_router import MAX_USER_ID_CHARS, clean_user_id
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
        Literal["clip", "siglip"] | None,
        Query(description="the model being migrated to (default: the one with most left)"),
    ] = None,
) -> dict[str, Any]:
    return reembed_progress(services.ctx, target=target)
