"""``/api/v1/search``: by text, by an uploaded image, or similar to a stored asset."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from image_search_service.api.deps import (
    AppServices,
    RequireJson,
    RequireMultipart,
    ServicesDep,
    UserIdHeader,
)
from image_search_service.api.errors import UnsupportedMediaType, error_responses
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.schemas import (
    CombinedSearchParams,
    SearchParams,
    SearchResponse,
    TextSearchBody,
    TextSearchParams,
)
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
    UnsupportedImage,
    VectorStoreUnavailable,
)
from image_search_service.services.embedding_router import RouteDecision, clean_user_id
from image_search_service.services.search import (
    MAX_EXAMPLES,
    SearchOptions,
    SearchOutcome,
    SearchRun,
    answer,
)

router = APIRouter(prefix=f"{API_PREFIX}/search", tags=["search"])

_COMMON_ERRORS = (
    InvalidRequest,
    CollectionMissing,
    ModelMismatch,
    ModelLoadError,
    DatabaseUnavailable,
    VectorStoreUnavailable,
)


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
    return SearchResponse.of(outcome, decision, took_ms, search_id=search_id)


@router.get(
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


@router.post(
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


@router.post(
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


@router.post(
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


@router.get(
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
