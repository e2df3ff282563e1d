"""``POST /api/v1/events``: what a user did with a search result (the experiment's
clicks). Open like search itself; only events about a known, unexpired search and one
of its results are stored."""

from __future__ import annotations

from fastapi import APIRouter

from image_search_service.api.deps import DbSession, RequireJson, ServicesDep
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import EventIn, EventOut
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    SearchNotFound,
    TooManyEvents,
)

router = APIRouter(prefix=API_PREFIX, tags=["experiment"])


@router.post(
    "/events",
    summary="Record a click (open, more like this, download) on a search result",
    dependencies=[RequireJson],
    responses=error_responses(
        InvalidRequest,
        SearchNotFound,
        TooManyEvents,
        UnsupportedMediaType,
        DatabaseUnavailable,
        (413, "RequestTooLarge"),
    ),
)
def record_event(services: ServicesDep, session: DbSession, body: EventIn) -> EventOut:
    outcome = services.search_log.record_event(
        session,
        search_id=body.search_id,
        asset_id=body.asset_id,
        type_=body.type,
        rank=body.rank,
    )
    if outcome.recorded:
        services.metrics.record_event(outcome)
    return EventOut.model_validate(
        {"search_id": body.search_id, "recorded": outcome.recorded, "model": outcome.model}
    )
