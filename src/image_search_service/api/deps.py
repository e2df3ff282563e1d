"""FastAPI dependencies: the per-process services, a unit of work per request, the
caller's user id, API-key checks and asset lookups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from image_search_service.api.access import Access
from image_search_service.api.auth import Principal, allows
from image_search_service.api.errors import UnsupportedMediaType
from image_search_service.api.metrics import ApiMetrics
from image_search_service.api.security import SAFE_METHODS
from image_search_service.context import ServiceContext
from image_search_service.core.errors import Forbidden, Unauthorized
from image_search_service.db import repository as repo
from image_search_service.db.session import session_scope
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.leader import LeaderLock
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
    # The watcher lock (one process of the deployment watches); set once it started.
    leader: LeaderLock | None = None

    def record_audit(self, record: dict[str, Any]) -> None:
        with self.ctx.transaction() as session:
            repo.add_audit_event(session, **record)

    def watch_problems(self) -> list[str]:
        return self.watcher.problems() if self.watcher is not None else []

    def watched_by(self) -> str | None:
        """The process watching LIBRARY_PATHS for the deployment (this one or another)."""
        if not self.ctx.settings.library_paths or self.leader is None:
            return None
        return self.leader.known_holder

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

# Declared for the OpenAPI document (the "Authorize" button of /docs); the check itself
# is AccessMiddleware's, which also takes a session cookie or a signed photo URL.
_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="an API key (API_KEY, READ_API_KEY or `image-search keys`); "
    "`Authorization: Bearer <key>` works too",
)


async def get_access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


AccessDep = Annotated[Access, Depends(get_access)]


async def get_principal(
    request: Request, _key: Annotated[str | None, Security(_api_key_header)] = None
) -> Principal | None:
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    return principal


PrincipalDep = Annotated[Principal | None, Depends(get_principal)]


async def require_admin(request: Request, principal: PrincipalDep) -> None:
    """The admin scope: changes to the library, the rollout, re-embedding. A change that
    passes is recorded in the audit log once answered (AccessMiddleware)."""
    if principal is None:
        raise Unauthorized("an admin API key is required")
    if not allows(principal.scope, "admin"):
        raise Forbidden("this needs an admin key (API_KEY); yours may search and read only")
    if request.method.upper() not in SAFE_METHODS:
        request.scope.setdefault("state", {})["audit"] = True


RequireAdmin = Depends(require_admin)


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
