"""The library: ``/api/v1/assets`` (list, look up, download, thumbnails, upload, edit,
delete), ``/api/v1/duplicates``, ``/api/v1/ingest`` (objects landing in a bucket) and
``/api/v1/admin/index`` and ``/admin/status`` (index runs on the server, counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, Body, File, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from image_search_service.api.deps import (
    AccessDep,
    AssetOr404,
    AssetServiceDep,
    DbSession,
    RequireAdmin,
    RequireJson,
    RequireMultipart,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.uploads import one_file_only, read_upload
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    AssetNotFound,
    CollectionMissing,
    DatabaseUnavailable,
    FolderNotFound,
    FolderUnreadable,
    ImageShapeRefused,
    ImageTooLarge,
    InsufficientStorage,
    InvalidRequest,
    ModelLoadError,
    ModelMismatch,
    Unauthorized,
    UnsupportedImage,
    VectorStoreUnavailable,
)
from image_search_service.core.specs import BASELINE
from image_search_service.images.s3 import SourceUnavailable
from image_search_service.jobs.queue import QueueUnavailable
from image_search_service.services.library import background
from image_search_service.services.library.assets import (
    MAX_PAGE,
    MAX_PAGE_OFFSET,
    AssetFileChanged,
    AssetFileMissing,
    AssetUnreadable,
    AssetView,
)
from image_search_service.services.library.duplicates import MAX_GROUPS_LIMIT, find_duplicates
from image_search_service.services.library.ingest import parse_ingest_body, submit_ingest
from image_search_service.services.library.schemas import (
    AssetOut,
    AssetPageOut,
    DuplicatesOut,
    IndexRequest,
    IndexStatusOut,
    IndexSubmissionOut,
    IngestBody,
    IngestOut,
    LibraryStatusOut,
)
from image_search_service.services.library.status import library_status
from image_search_service.services.metadata.schemas import AssetEditIn
from image_search_service.services.metadata.service import edit_asset as edit_metadata

_LOOKUP_ERRORS = (InvalidRequest, AssetNotFound, DatabaseUnavailable)

assets_router = APIRouter(prefix=f"{API_PREFIX}/assets", tags=["assets"])


@assets_router.get(
    "", summary="List assets (paginated)", responses=error_responses(*_LOOKUP_ERRORS)
)
def list_assets(
    session: DbSession,
    assets: AssetServiceDep,
    access: AccessDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
) -> AssetPageOut:
    page = AssetPageOut.of(assets.list_assets(session, limit=limit, offset=offset))
    items = [item.model_copy(update={"urls": access.urls(item.id)}) for item in page.items]
    return page.model_copy(update={"items": items})


@assets_router.get("/{asset_id}", summary="One asset", responses=error_responses(*_LOOKUP_ERRORS))
def get_asset(asset: AssetOr404, access: AccessDep) -> AssetOut:
    return AssetOut.of(asset).model_copy(update={"urls": access.urls(asset.id)})


@assets_router.get(
    "/{asset_id}/file",
    summary="The original file (an S3 object is streamed through the server)",
    response_class=FileResponse,
    responses=error_responses(
        *_LOOKUP_ERRORS, AssetFileMissing, AssetUnreadable, AssetFileChanged, SourceUnavailable
    ),
)
def get_asset_file(asset: AssetOr404, assets: AssetServiceDep) -> Response:
    content = assets.content(asset)
    if isinstance(content, Path):
        return FileResponse(content, media_type=asset.media_type)
    return StreamingResponse(
        content,
        media_type=asset.media_type,
    )


@assets_router.get(
    "/{asset_id}/thumbnail",
    summary="A JPEG thumbnail (longer side at most `size` pixels)",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}},
        **error_responses(
            *_LOOKUP_ERRORS, AssetFileMissing, AssetUnreadable, AssetFileChanged, SourceUnavailable
        ),
    },
)
def get_asset_thumbnail(
    asset: AssetOr404,
    assets: AssetServiceDep,
    size: Annotated[int, Query(description="128, 256 or 512")] = 256,
) -> Response:
    thumbnail = assets.thumbnail(asset, size=size)
    # Keyed by content hash: new content under the same id is a new cache entry.
    headers = {"Cache-Control": "private, max-age=86400"}
    if isinstance(thumbnail, bytes):  # not cached: the disk is below its reserve
        return Response(thumbnail, media_type="image/jpeg", headers=headers)
    return FileResponse(thumbnail, media_type="image/jpeg", headers=headers)


@assets_router.post(
    "",
    status_code=201,
    summary="Upload an image (multipart field `file`); stored and indexed",
    dependencies=[RequireAdmin, RequireMultipart],
    responses={
        200: {"model": AssetOut, "description": "the same content was already in the library"},
        **error_responses(
            Unauthorized,
            UnsupportedMediaType,
            UnsupportedImage,
            ImageShapeRefused,
            ImageTooLarge,
            InvalidRequest,
            ModelMismatch,
            ModelLoadError,
            DatabaseUnavailable,
            VectorStoreUnavailable,
            InsufficientStorage,
        ),
    },
)
async def upload_asset(
    request: Request,
    response: Response,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, HEIC, MPO, GIF, TIFF or AVIF")],
) -> AssetOut:
    await one_file_only(request)
    data = await read_upload(file, services.ctx.settings.max_upload_bytes)
    result = await anyio.to_thread.run_sync(
        services.assets.upload, data, limiter=services.encode_limiter
    )
    if not result.created:
        response.status_code = 200
    response.headers["Location"] = str(request.url_for("get_asset", asset_id=result.asset.id))
    return AssetOut.of(result.asset)


@assets_router.patch(
    "/{asset_id}",
    summary="Edit people, tags or caption (edits survive re-indexing)",
    dependencies=[RequireAdmin, RequireJson],
    responses=error_responses(
        Unauthorized,
        UnsupportedMediaType,
        InvalidRequest,
        AssetNotFound,
        DatabaseUnavailable,
        VectorStoreUnavailable,
    ),
)
async def edit_asset(asset_id: UUID, body: AssetEditIn, services: ServicesDep) -> AssetOut:
    def work() -> AssetView:
        edit_metadata(services.ctx, asset_id, body.edit())
        with services.ctx.transaction() as session:
            return services.assets.get(session, asset_id)

    return AssetOut.of(await anyio.to_thread.run_sync(work))


@assets_router.delete(
    "/{asset_id}",
    status_code=204,
    summary="Delete an asset from the DB and every collection",
    dependencies=[RequireAdmin],
    responses=error_responses(
        Unauthorized, InvalidRequest, AssetNotFound, DatabaseUnavailable, VectorStoreUnavailable
    ),
)
def delete_asset(asset_id: UUID, assets: AssetServiceDep) -> Response:
    assets.delete(asset_id)
    return Response(status_code=204)


duplicates_router = APIRouter(prefix=f"{API_PREFIX}/duplicates", tags=["duplicates"])


@duplicates_router.get(
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
    return DuplicatesOut.model_validate(report)


ingest_router = APIRouter(prefix=f"{API_PREFIX}/ingest", tags=["ingest"])


@ingest_router.post(
    "",
    status_code=202,
    summary="Queue indexing of S3 objects: an S3 event notification or a list of URIs",
    dependencies=[RequireAdmin, RequireJson],
    responses=error_responses(
        Unauthorized, InvalidRequest, UnsupportedMediaType, QueueUnavailable, InsufficientStorage
    ),
)
async def ingest(
    services: ServicesDep,
    body: Annotated[
        IngestBody,
        Body(
            description='{"Records": [...]} as S3/MinIO send, ["s3://bucket/key", ...] '
            'or {"uris": [...]}'
        ),
    ],
) -> IngestOut:
    uris = parse_ingest_body(body)
    submission = await anyio.to_thread.run_sync(
        lambda: submit_ingest(services.ctx, uris, dispatcher=services.dispatcher)
    )
    return IngestOut.model_validate(submission)


admin_router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], dependencies=[RequireAdmin])


@admin_router.post(
    "/index",
    status_code=202,
    summary="Index a folder on the server (in the background, one run at a time)",
    dependencies=[RequireJson],
    responses=error_responses(
        Unauthorized,
        InvalidRequest,
        FolderNotFound,
        FolderUnreadable,
        UnsupportedMediaType,
        InsufficientStorage,
    ),
)
def start_index(services: ServicesDep, body: IndexRequest) -> IndexSubmissionOut:
    run = background.submit_index(services.dispatcher, services.ctx, body.path, model=body.model)
    status = background.index_status(
        services.dispatcher, problems=services.watch_problems(), watched_by=services.watched_by()
    )
    return IndexSubmissionOut.model_validate({"run": run, "status": status})


@admin_router.get(
    "/index",
    summary="Indexing progress: the run in progress, the waiting ones, the latest results",
    responses=error_responses(Unauthorized),
)
async def index_status(services: ServicesDep) -> IndexStatusOut:
    status = background.index_status(
        services.dispatcher, problems=services.watch_problems(), watched_by=services.watched_by()
    )
    return IndexStatusOut.model_validate(status)


@admin_router.get(
    "/status",
    summary="Asset counts and, per model, collection, points and coverage",
    responses=error_responses(Unauthorized, DatabaseUnavailable, VectorStoreUnavailable),
)
def status(services: ServicesDep) -> LibraryStatusOut:
    return LibraryStatusOut.model_validate(library_status(services.ctx))


router = APIRouter()
for _part in (
    assets_router,
    duplicates_router,
    ingest_router,
    admin_router,
):
    router.include_router(_part)
