"""``/api/v1/admin``: what operators look at while rolling a model out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from image_search_service.api.deps import RequireApiKey, RouterDep
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
