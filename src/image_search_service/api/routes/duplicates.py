"""``/api/v1/duplicates``: groups of near-identical photos from the stored vectors."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Query

from image_search_service.api.deps import ServicesDep
from image_search_service.api.errors import error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import DuplicatesOut
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    CollectionMissing,
    DatabaseUnavailable,
    InvalidRequest,
    ModelMismatch,
    VectorStoreUnavailable,
)
from image_search_service.core.specs import BASELINE
from image_search_service.services.duplicates import MAX_GROUPS_LIMIT, find_duplicates

router = APIRouter(prefix=f"{API_PREFIX}/duplicates", tags=["duplicates"])


@router.get(
    "",
    summary="Groups of near-duplicate photos (re-saves, resizes, crops, bursts)",
    responses=error_responses(
        InvalidRequest,
        CollectionMissing,
        ModelMismatch,
        DatabaseUnavailable,
        VectorStoreUnavailable,
    ),
)
async def duplicates(
    services: ServicesDep,
    model: Annotated[ModelKey, Query(description="whose vectors to compare")] = BASELINE,
    threshold: Annotated[
        float | None,
        Query(gt=0.0, le=1.0, description="cosine floor (default: the model's setting)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_GROUPS_LIMIT, description="groups")] = 100,
) -> DuplicatesOut:
    report = await anyio.to_thread.run_sync(
        lambda: find_duplicates(services.ctx, model=model, threshold=threshold, limit=limit)
    )
    return DuplicatesOut.model_validate(report.as_dict())
