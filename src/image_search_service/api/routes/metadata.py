"""``/api/v1/people`` and ``/api/v1/tags``: who and what the library holds, with counts;
renaming (or merging) a person."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query

from image_search_service.api.deps import RequireAdmin, RequireJson, ServicesDep
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    Unauthorized,
    VectorStoreUnavailable,
)
from image_search_service.images.metadata import MAX_NAME_CHARS
from image_search_service.services.metadata import service as metadata
from image_search_service.services.metadata.schemas import NameCountOut, NameListOut, PersonRenameIn
from image_search_service.services.metadata.service import (
    MAX_NAME_OFFSET,
    MAX_NAME_PAGE,
    PersonNotFound,
)

router = APIRouter(prefix=API_PREFIX, tags=["people and tags"])


Limit = Annotated[int, Query(ge=1, le=MAX_NAME_PAGE, description="names per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_NAME_OFFSET, description="names to skip")]
Containing = Annotated[
    str,
    Query(
        max_length=MAX_NAME_CHARS,
        description="only names containing this (case-insensitive), for a picker as you type",
    ),
]


@router.get(
    "/people",
    summary="People in the library, with how many photos each is in (paginated)",
    responses=error_responses(InvalidRequest, DatabaseUnavailable),
)
def list_people(
    services: ServicesDep, limit: Limit = 100, offset: Offset = 0, q: Containing = ""
) -> NameListOut:
    page = metadata.list_people(services.ctx, limit=limit, offset=offset, containing=q)
    return NameListOut.of(page)


@router.get(
    "/tags",
    summary="Tags (keywords) in the library, with how many photos carry each (paginated)",
    responses=error_responses(InvalidRequest, DatabaseUnavailable),
)
def list_tags(
    services: ServicesDep, limit: Limit = 100, offset: Offset = 0, q: Containing = ""
) -> NameListOut:
    page = metadata.list_tags(services.ctx, limit=limit, offset=offset, containing=q)
    return NameListOut.of(page)


@router.patch(
    "/people/{person_id}",
    summary="Rename a person; a name another person has merges the two",
    dependencies=[RequireAdmin, RequireJson],
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
