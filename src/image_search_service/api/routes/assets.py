"""``/api/v1/assets``: list, look up, download, thumbnails, upload and delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from image_search_service.api.deps import (
    AssetOr404,
    AssetServiceDep,
    DbSession,
    RequireApiKey,
    RequireJson,
    RequireMultipart,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import AssetEditIn, AssetOut, AssetPageOut
from image_search_service.api.uploads import one_file_only, read_upload
from image_search_service.core.errors import (
    AssetNotFound,
    DatabaseUnavailable,
    ImageShapeRefused,
    ImageTooLarge,
    InvalidRequest,
    ModelLoadError,
    ModelMismatch,
    Unauthorized,
    UnsupportedImage,
    VectorStoreUnavailable,
)
from image_search_service.images.s3 import SourceUnavailable
from image_search_service.services.assets import (
    MAX_PAGE,
    MAX_PAGE_OFFSET,
    AssetFileChanged,
    AssetFileMissing,
    AssetUnreadable,
    AssetView,
)
from image_search_service.services.metadata import edit_asset as edit_metadata

router = APIRouter(prefix=f"{API_PREFIX}/assets", tags=["assets"])

_LOOKUP_ERRORS = (InvalidRequest, AssetNotFound, DatabaseUnavailable)


@router.get("", summary="List assets (paginated)", responses=error_responses(*_LOOKUP_ERRORS))
def list_assets(
    session: DbSession,
    assets: AssetServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_PAGE_OFFSET)] = 0,
) -> AssetPageOut:
    return AssetPageOut.of(assets.list_assets(session, limit=limit, offset=offset))


@router.get("/{asset_id}", summary="One asset", responses=error_responses(*_LOOKUP_ERRORS))
def get_asset(asset: AssetOr404) -> AssetOut:
    return AssetOut.of(asset)


@router.get(
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


@router.get(
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
) -> FileResponse:
    return FileResponse(
        assets.thumbnail(asset, size=size),
        media_type="image/jpeg",
        # Keyed by content hash: new content under the same id is a new cache entry.
        headers={"Cache-Control": "private, max-age=86400"},
    )


@router.post(
    "",
    status_code=201,
    summary="Upload an image (multipart field `file`); stored and indexed",
    dependencies=[RequireApiKey, RequireMultipart],
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


@router.patch(
    "/{asset_id}",
    summary="Edit people, tags or caption (edits survive re-indexing)",
    dependencies=[RequireApiKey, RequireJson],
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


@router.delete(
    "/{asset_id}",
    status_code=204,
    summary="Delete an asset from the DB and every collection",
    dependencies=[RequireApiKey],
    responses=error_responses(
        Unauthorized, InvalidRequest, AssetNotFound, DatabaseUnavailable, VectorStoreUnavailable
    ),
)
def delete_asset(asset_id: UUID, assets: AssetServiceDep) -> Response:
    assets.delete(asset_id)
    return Response(status_code=204)
