"""``/api/v1/embed``: vectors for other services (microservice mode); nothing is stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Query, Request, UploadFile

from image_search_service.api.deps import (
    AppServices,
    RequireApiKey,
    RequireJson,
    RequireMultipart,
    ServicesDep,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import (
    EmbedBatchOut,
    EmbedImageOut,
    EmbedItemError,
    EmbedTextOut,
    EmbedTextRequest,
    embed_info,
)
from image_search_service.api.uploads import one_file_only, read_upload
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    ImageTooLarge,
    InvalidRequest,
    ModelLoadError,
    Unauthorized,
    UnsupportedImage,
)
from image_search_service.core.specs import BASELINE
from image_search_service.services.embed import EmbedOutcome, EmbedService

router = APIRouter(prefix=f"{API_PREFIX}/embed", tags=["embed"], dependencies=[RequireApiKey])

ModelParam = Annotated[
    ModelKey, Query(description="the model to embed with (default: the baseline)")
]
_FILE_FORMATS = "JPEG, PNG, WebP, HEIC, MPO, GIF, TIFF or AVIF"
_ERRORS = (Unauthorized, InvalidRequest, ModelLoadError)


async def _run(
    request: Request,
    services: AppServices,
    kind: str,
    model: ModelKey,
    work: Callable[[], EmbedOutcome],
) -> EmbedOutcome:
    request.state.model = model  # the latency metric's model label
    outcome = await anyio.to_thread.run_sync(work, limiter=services.encode_limiter)
    services.metrics.record_embed(kind, model, len(outcome.items), outcome.failed)
    return outcome


@router.post(
    "/image",
    summary="The embedding of one image (multipart field `file`)",
    dependencies=[RequireMultipart],
    responses=error_responses(*_ERRORS, UnsupportedMediaType, UnsupportedImage, ImageTooLarge),
)
async def embed_image(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description=_FILE_FORMATS)],
    model: ModelParam = BASELINE,
) -> EmbedImageOut:
    await one_file_only(request)
    data = await read_upload(file, services.ctx.settings.max_upload_bytes)
    service = EmbedService(services.ctx)
    outcome = await _run(
        request, services, "image", model, lambda: service.embed_images([data], model=model)
    )
    item = outcome.items[0]
    if item.error is not None:
        raise item.error
    assert item.vector is not None
    return EmbedImageOut(embedding=item.vector.tolist(), **embed_info(outcome))


@router.post(
    "/batch",
    summary="Embeddings of several images (multipart fields `files`), in input order",
    dependencies=[RequireMultipart],
    responses=error_responses(*_ERRORS, UnsupportedMediaType, ImageTooLarge),
)
async def embed_batch(
    request: Request,
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(description=f"{_FILE_FORMATS} files")],
    model: ModelParam = BASELINE,
) -> EmbedBatchOut:
    settings = services.ctx.settings
    if len(files) > settings.embed_max_batch_files:
        raise InvalidRequest(
            f"{len(files)} files, at most {settings.embed_max_batch_files} per batch "
            "(EMBED_MAX_BATCH_FILES)"
        )
    blobs: list[bytes] = []
    total = 0
    for upload in files:
        # A file over MAX_UPLOAD_BYTES fails alone (the service says so in its place).
        blob = await upload.read(settings.max_upload_bytes + 1)
        total += len(blob)
        if total > settings.embed_max_batch_bytes:
            raise ImageTooLarge(
                f"batch is over the limit of {settings.embed_max_batch_bytes:,} bytes "
                "(EMBED_MAX_BATCH_BYTES)"
            )
        blobs.append(blob)
    service = EmbedService(services.ctx)
    outcome = await _run(
        request, services, "batch", model, lambda: service.embed_images(blobs, model=model)
    )
    errors = [
        EmbedItemError(
            index=i,
            filename=files[i].filename,
            error=type(item.error).__name__,
            detail=item.error.detail,
        )
        for i, item in enumerate(outcome.items)
        if item.error is not None
    ]
    return EmbedBatchOut(
        embeddings=[None if it.vector is None else it.vector.tolist() for it in outcome.items],
        errors=errors,
        **embed_info(outcome),
    )


@router.post(
    "/text",
    summary='Embeddings of texts: {"texts": [...], "model": "clip"}',
    dependencies=[RequireJson],
    responses=error_responses(*_ERRORS, UnsupportedMediaType),
)
async def embed_text(
    request: Request, services: ServicesDep, body: EmbedTextRequest
) -> EmbedTextOut:
    service = EmbedService(services.ctx)
    outcome = await _run(
        request,
        services,
        "text",
        body.model,
        lambda: service.embed_texts(body.texts, model=body.model),
    )
    return EmbedTextOut(
        embeddings=[it.vector.tolist() for it in outcome.items if it.vector is not None],
        **embed_info(outcome),
    )
