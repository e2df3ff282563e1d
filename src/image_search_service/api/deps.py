"""FastAPI dependencies: the per-process services, a unit of work per request, the
caller's user id, API-key checks and asset lookups."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

import anyio
from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from image_search_service.api.errors import UnsupportedMediaType
from image_search_service.api.metrics import ApiMetrics
from image_search_service.context import ServiceContext
from image_search_service.core.errors import Unauthorized
from image_search_service.db.session import session_scope
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.services.library.assets import AssetService, AssetView
from image_search_service.services.library.watcher import LibraryWatcher
from image_search_service.services.rollout.router import (
    MAX_USER_ID_CHARS,
    EmbeddingRouter,
    clean_user_id,
)
from image_search_service.services.search.log import SearchLog
from image_search_service.services.search.service import SearchService


@dataclass
class AppServices:
    """What the lifespan opens once per process and every request shares."""

    ctx: ServiceContext
    search: SearchService
    router: EmbeddingRouter
    assets: AssetService
    metrics: ApiMetrics
    search_log: SearchLog
    # Encoding saturates the CPU cores by itself; more concurrent forwards only add
    # memory and contention, so they queue here instead of in the generic thread pool.
    encode_limiter: anyio.CapacityLimiter
    # Background work of this process, one job at a time: index runs (POST /admin/index,
    # watched folders), and without RQ ingests and re-embedding runs.
    dispatcher: Dispatcher
    watcher: LibraryWatcher | None = None

    def watch_problems(self) -> list[str]:
        return self.watcher.problems() if self.watcher is not None else []

    def close(self) -> None:
        """Stop the background work first, then the stores it uses."""
        try:
            if self.watcher is not None:
                self.watcher.close()
            self.dispatcher.close()
            self.search_log.close()
        finally:
            self.ctx.close()


# Dependencies that only read memory are `async def`: FastAPI runs sync ones in the
# thread pool, a hop per dependency per request.
async def get_services(request: Request) -> AppServices:
    services: AppServices = request.app.state.services
    return services


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def get_router(services: ServicesDep) -> EmbeddingRouter:
    return services.router


async def get_asset_service(services: ServicesDep) -> AssetService:
    return services.assets


RouterDep = Annotated[EmbeddingRouter, Depends(get_router)]
AssetServiceDep = Annotated[AssetService, Depends(get_asset_service)]


def get_db_session(services: ServicesDep) -> Iterator[Session]:
    """One unit of work per request: commit on success, roll back on error."""
    with session_scope(services.ctx.session_factory) as session:
        yield session


DbSession = Annotated[Session, Depends(get_db_session)]


def get_asset_or_404(asset_id: UUID, session: DbSession, assets: AssetServiceDep) -> AssetView:
    return assets.get(session, asset_id)


AssetOr404 = Annotated[AssetView, Depends(get_asset_or_404)]


async def get_user_id(
    x_user_id: Annotated[
        str | None,
        Header(
            alias="X-User-Id",
            max_length=MAX_USER_ID_CHARS,
            description="routes the request between models, deterministically per user",
        ),
    ] = None,
) -> str | None:
    return clean_user_id(x_user_id)


UserIdHeader = Annotated[str | None, Depends(get_user_id)]

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="required on data-changing and admin endpoints when API_KEY is set",
)


async def require_api_key(
    request: Request,
    services: ServicesDep,
    provided: Annotated[str | None, Security(_api_key_header)],
) -> None:
    expected = services.ctx.settings.api_key
    if expected is None:
        return
    if len(request.headers.getlist("x-api-key")) > 1:
        # Which copy counts would depend on the parser (and a proxy may add one):
        # an ambiguous credential is no credential.
        raise Unauthorized("X-API-Key was sent more than once; send it once")
    # Constant time, so the key cannot be guessed byte by byte from response times.
    if provided is None or not hmac.compare_digest(provided.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header")


RequireApiKey = Depends(require_api_key)


async def require_api_key_or_bearer(
    request: Request,
    services: ServicesDep,
    provided: Annotated[str | None, Security(_api_key_header)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """The API key in ``X-API-Key`` or as ``Authorization: Bearer <key>``: webhook
    senders such as MinIO's notification target can only set the latter."""
    scheme, _, token = (authorization or "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    await require_api_key(request, services, provided if provided is not None else bearer)


RequireApiKeyOrBearer = Depends(require_api_key_or_bearer)


def require_content_type(*accepted: str) -> Callable[..., Awaitable[None]]:
    """A dependency refusing requests whose Content-Type is not one of ``accepted``."""

    async def check(
        content_type: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> None:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type not in accepted:
            raise UnsupportedMediaType(
                f"Content-Type must be {' or '.join(accepted)}, got {media_type or 'none'}"
            )

    return check


RequireJson = Depends(require_content_type("application/json"))
RequireMultipart = Depends(require_content_type("multipart/form-data"))
