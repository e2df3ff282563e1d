"""``/api/v1/people`` and ``/api/v1/tags``: who and what the library holds, with counts;
renaming (or merging) a person."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path

from image_search_service.api.deps import RequireApiKey, RequireJson, ServicesDep
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import NameCountOut, NameListOut, PersonRenameIn
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.services import metadata
from image_search_service.services.metadata import PersonNotFound

router = APIRouter(prefix=API_PREFIX, tags=["people and tags"])


@router.get(
    "/people",
    summary="People in the library, with how many photos each is in",
    responses=error_responses(DatabaseUnavailable),
)
def list_people(services: ServicesDep) -> NameListOut:
    return NameListOut.of(metadata.list_people(services.ctx))


@router.get(
    "/tags",
    summary="Tags (keywords) in the library, with how many photos carry each",
    responses=error_responses(DatabaseUnavailable),
)
def list_tags(services: ServicesDep) -> NameListOut:
    return NameListOut.of(metadata.list_tags(services.ctx))


@router.patch(
    "/people/{person_id}",
    summary="Rename a person; a name another person has merges the two",
    dependencies=[RequireApiKey, RequireJson],
    responses=error_responses(
        Unauthorized,
        UnsupportedMediaType,
        InvalidRequest,
        PersonNotFound,
        DatabaseUnavailable,
        VectorStoreUnavailable,
    ),
)
async def rename_person(
    person_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="a person's id")],
    body: PersonRenameIn,
    services: ServicesDep,
) -> NameCountOut:
    result = await anyio.to_thread.run_sync(
        lambda: metadata.rename_person(services.ctx, person_id, body.name)
    )
    return NameCountOut.of(result)
