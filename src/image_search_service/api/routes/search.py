"""Search: ``/api/v1/search`` (text, uploaded image, combined, similar to a stored
asset), ``/api/v1/embed`` (vectors for other services, nothing stored) and
``/api/v1/events`` (what a user did with a result: the experiment's clicks)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from image_search_service.api.access import Access
from image_search_service.api.deps import (
    AppServices,
    DbSession,
    RequireJson,
    RequireMultipart,
    ServicesDep,
    UserIdHeader,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.uploads import one_file_only, read_upload
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    AssetNotFound,
    CollectionMissing,
    DatabaseUnavailable,
    ImageShapeRefused,
    ImageTooLarge,
    InvalidRequest,
    ModelLoadError,
    ModelMismatch,
    SearchNotFound,
    TooManyEvents,
    Unauthorized,
    UnsupportedImage,
    VectorStoreUnavailable,
)
from image_search_service.core.specs import BASELINE
from image_search_service.services.rollout.router import RouteDecision, clean_user_id
from image_search_service.services.search.embed import EmbedOutcome, EmbedService
from image_search_service.services.search.schemas import (
    CombinedSearchParams,
    EmbedBatchOut,
    EmbedImageOut,
    EmbedItemError,
    EmbedTextOut,
    EmbedTextRequest,
    EventIn,
    EventOut,
    SearchParams,
    SearchResponse,
    TextSearchBody,
    TextSearchParams,
    embed_info,
)
from image_search_service.services.search.service import (
    MAX_EXAMPLES,
    SearchAnswer,
    SearchOptions,
    SearchOutcome,
    SearchRun,
    answer,
)

_COMMON_ERRORS = (
    InvalidRequest,
    CollectionMissing,
    ModelMismatch,
    ModelLoadError,
    DatabaseUnavailable,
    VectorStoreUnavailable,
)

search_router = APIRouter(prefix=f"{API_PREFIX}/search", tags=["search"])


async def _routed(
    request: Request,
    services: AppServices,
    user_id: str | None,
    *,
    kind: str,
    query: str,
    options: SearchOptions,
    search: SearchRun,
    pinned: ModelKey | None = None,
    encodes: bool = True,
) -> SearchResponse:
    """Route the request, run the search off the event loop (both models, merged, for
    an interleaved user), record it in the experiment log, shape the answer."""
    started = time.perf_counter()

    def work() -> tuple[RouteDecision, SearchOutcome]:
        if pinned is not None:
            decision = services.router.pinned(pinned, user_id)
        else:
            decision = services.router.route(user_id)
        request.state.model = decision.arm  # the latency metric's model label
        return decision, answer(decision, search, options, kind=kind, query=query)

    limiter = services.encode_limiter if encodes else None
    decision, outcome = await anyio.to_thread.run_sync(work, limiter=limiter)
    took_ms = (time.perf_counter() - started) * 1000
    search_id = None
    # A search that named its model is no rollout evidence (its user chose the arm): it
    # is not recorded, so it has no id for events.
    if not decision.pinned:
        search_id = uuid.uuid4()
        services.search_log.record(
            search_id=search_id, decision=decision, outcome=outcome, kind=kind, latency_ms=took_ms
        )
    services.metrics.record_search(kind, decision, outcome)
    response = SearchResponse.model_validate(
        SearchAnswer(
            outcome,
            took_ms=took_ms,
            search_id=search_id,
            fallback_reason=decision.fallback_reason,
        )
    )
    access: Access = request.app.state.access
    results = [r.model_copy(update={"urls": access.urls(r.asset_id)}) for r in response.results]
    return response.model_copy(update={"results": results})


@search_router.get(
    "",
    summary="Search by text (and stored example assets, with `like`)",
    responses=error_responses(*_COMMON_ERRORS, AssetNotFound),
)
async def search_text(
    request: Request,
    services: ServicesDep,
    params: Annotated[TextSearchParams, Query()],
    header_user: UserIdHeader,
) -> SearchResponse:
    return await _routed(
        request,
        services,
        header_user or clean_user_id(params.user_id),
        kind="text",
        query=params.q,
        options=params.options(),
        pinned=params.model,
        search=lambda model, options: services.search.search_combined(
            params.combined(params.q), model=model, options=options
        ),
    )


@search_router.post(
    "",
    summary="Search by text (JSON body)",
    dependencies=[RequireJson],
    responses=error_responses(*_COMMON_ERRORS, UnsupportedMediaType, AssetNotFound),
)
async def search_text_json(
    request: Request, services: ServicesDep, body: TextSearchBody, header_user: UserIdHeader
) -> SearchResponse:
    return await _routed(
        request,
        services,
        header_user or clean_user_id(body.user_id),
        kind="text",
        query=body.q,
        options=body.options(),
        pinned=body.model,
        search=lambda model, options: services.search.search_combined(
            body.combined(body.q), model=model, options=options
        ),
    )


@search_router.post(
    "/image",
    summary="Search by an example image (multipart field `file`)",
    dependencies=[RequireMultipart],
    responses=error_responses(
        *_COMMON_ERRORS,
        UnsupportedMediaType,
        UnsupportedImage,
        ImageShapeRefused,
        ImageTooLarge,
    ),
)
async def search_image(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, HEIC, MPO, GIF, TIFF or AVIF")],
    params: Annotated[SearchParams, Form()],
    header_user: UserIdHeader,
) -> SearchResponse:
    await one_file_only(request)
    data = await read_upload(file, services.ctx.settings.max_upload_bytes)
    return await _routed(
        request,
        services,
        header_user or clean_user_id(params.user_id),
        kind="image",
        query=hashlib.sha256(data).hexdigest(),
        options=params.options(),
        pinned=params.model,
        search=lambda model, options: services.search.search_image(
            data, model=model, options=options
        ),
    )


@search_router.post(
    "/combined",
    summary="Text, example images (uploaded or stored) and negative texts in one query",
    dependencies=[RequireMultipart],
    responses=error_responses(
        *_COMMON_ERRORS, UnsupportedMediaType, UnsupportedImage, ImageTooLarge, AssetNotFound
    ),
)
async def search_combined(
    request: Request,
    services: ServicesDep,
    params: Annotated[CombinedSearchParams, Form()],
    header_user: UserIdHeader,
    file: Annotated[
        list[UploadFile] | None,
        File(description="example images (JPEG, PNG or WebP), all together under the upload limit"),
    ] = None,
) -> SearchResponse:
    files = file or []
    if len(files) > MAX_EXAMPLES:
        raise InvalidRequest(f"at most {MAX_EXAMPLES} example images")
    limit = services.ctx.settings.max_upload_bytes
    uploads = [await read_upload(f, limit) for f in files]
    return await _routed(
        request,
        services,
        header_user or clean_user_id(params.user_id),
        kind="combined",
        query=_combined_key(params.q, uploads),
        options=params.options(),
        pinned=params.model,
        search=lambda model, options: services.search.search_combined(
            params.combined(params.q, uploads), model=model, options=options
        ),
    )


def _combined_key(text: str | None, uploads: list[bytes]) -> str:
    """What identifies a combined query for interleaving's seed: its text and images."""
    digest = hashlib.sha256((text or "").encode("utf-8", "surrogatepass"))
    for data in uploads:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


@search_router.get(
    "/similar/{asset_id}",
    summary="Photos like a stored asset (its stored vector, no re-encoding)",
    responses=error_responses(*_COMMON_ERRORS, AssetNotFound),
)
async def search_similar(
    request: Request,
    services: ServicesDep,
    asset_id: UUID,
    params: Annotated[SearchParams, Query()],
    header_user: UserIdHeader,
) -> SearchResponse:
    return await _routed(
        request,
        services,
        header_user or clean_user_id(params.user_id),
        kind="similar",
        query=str(asset_id),
        options=params.options(),
        pinned=params.model,
        search=lambda model, options: services.search.search_similar(
            asset_id, model=model, options=options
        ),
        encodes=False,
    )


ModelParam = Annotated[
    ModelKey, Query(description="the model to embed with (default: the baseline)")
]

_FILE_FORMATS = "JPEG, PNG, WebP, HEIC, MPO, GIF, TIFF or AVIF"

_ERRORS = (Unauthorized, InvalidRequest, ModelLoadError)

embed_router = APIRouter(prefix=f"{API_PREFIX}/embed", tags=["embed"])


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


@embed_router.post(
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


@embed_router.post(
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


@embed_router.post(
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


events_router = APIRouter(prefix=API_PREFIX, tags=["experiment"])


@events_router.post(
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
    return EventOut.model_validate(outcome)


router = APIRouter()
for _part in (
    search_router,
    embed_router,
    events_router,
):
    router.include_router(_part)
