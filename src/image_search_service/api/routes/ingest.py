"""``POST /api/v1/ingest``: index objects as they land in (or leave) a bucket."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body

from image_search_service.api.deps import RequireApiKeyOrBearer, RequireJson, ServicesDep
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import IngestOut
from image_search_service.core.errors import InvalidRequest, Unauthorized
from image_search_service.jobs.queue import QueueUnavailable
from image_search_service.services.ingest import parse_ingest_body, submit_ingest

router = APIRouter(prefix=f"{API_PREFIX}/ingest", tags=["ingest"])


@router.post(
    "",
    status_code=202,
    summary="Queue indexing of S3 objects: an S3 event notification or a list of URIs",
    dependencies=[RequireApiKeyOrBearer, RequireJson],
    responses=error_responses(Unauthorized, InvalidRequest, UnsupportedMediaType, QueueUnavailable),
)
async def ingest(
    services: ServicesDep,
    body: Annotated[
        Any,
        Body(
            description='{"Records": [...]} as S3/MinIO send, ["s3://bucket/key", ...] '
            'or {"uris": [...]}'
        ),
    ],
) -> IngestOut:
    uris = parse_ingest_body(body)
    submission = await anyio.to_thread.run_sync(
        lambda: submit_ingest(services.ctx, uris, in_process=services.ingest)
    )
    return IngestOut.model_validate(submission.as_dict())
