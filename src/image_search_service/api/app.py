"""The FastAPI application.

``create_app()`` builds the app without touching the DB, the vector store or any
model: those are opened in the lifespan, once per process, and closed on shutdown.
Run it with ``image-search serve`` or
``python -m uvicorn image_search_service.api.app:create_app --factory``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from image_search_service.api.access import Access, AccessMiddleware
from image_search_service.api.body_limit import BodySizeLimitMiddleware
from image_search_service.api.deps import AppServices
from image_search_service.api.errors import install_error_handlers
from image_search_service.api.metrics import ApiMetrics, MetricsMiddleware
from image_search_service.api.openapi import install_openapi
from image_search_service.api.routes import (
    API_PREFIX,
    about,
    auth,
    health,
    library,
    metadata,
    page,
    reembed,
    rollout,
    search,
)
from image_search_service.api.security import BrowserGuardMiddleware
from image_search_service.context import open_context
from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ServiceError
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.leader import LeaderLock
from image_search_service.services.library.assets import AssetService
from image_search_service.services.library.background import WATCHER_LOCK, LeaderDuties
from image_search_service.services.rollout.router import EmbeddingRouter
from image_search_service.services.search.log import SearchLog
from image_search_service.services.search.service import SearchService, TextEmbeddingCache
from image_search_service.services.search.warmup import ModelWarmup

logger = logging.getLogger(__name__)

# Concurrent forward passes. One: torch already spreads a forward over every core, and
# two at once on a small CPU box oversubscribe it (each slower than both in a row).
ENCODE_CONCURRENCY = 1
TEXT_CACHE_SIZE = 1024


def create_app(
    settings: Settings | None = None,
    *,
    encoders: EncoderRegistry | None = None,
    on_shutdown: Callable[[], None] | None = None,
    warm_models: bool = False,
) -> FastAPI:
    """The app. ``settings`` default to the environment; ``encoders`` lets a process
    share already-loaded models (tests); otherwise the app makes its own registry,
    instrumented for the encoder-time metric. ``on_shutdown`` runs after the stores
    are closed. ``warm_models``: load the models in use in the background once the app
    has started (``serve``; GET /api/v1/about says how far it got)."""
    settings = settings or load_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(_open_services, settings, encoders, metrics)
        app.state.services = services
        leader = await anyio.to_thread.run_sync(_start_leader, services)
        app.state.leader = leader
        if warm_models and not settings.preload_models:
            app.state.warmup = ModelWarmup(services.ctx, services.router.models_in_use())
            app.state.warmup.start()
        try:
            yield
        finally:
            try:
                await anyio.to_thread.run_sync(leader.close)  # stops the watcher first
                await anyio.to_thread.run_sync(services.close)
            finally:
                if on_shutdown is not None:
                    on_shutdown()

    # /docs and /redoc with Swagger UI and ReDoc served from the package (no CDN):
    # they work offline and load no third-party script into the API's origin.
    app = FastAPIOffline(
        title="image-search-service",
        version=_version(),
        summary="Semantic photo search: CLIP and SigLIP, routed per user",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
    )
    install_error_handlers(app)
    install_openapi(app)
    app.state.access = access = Access.from_settings(settings)
    app.add_middleware(
        BodySizeLimitMiddleware,
        upload_paths=frozenset(
            {
                f"{API_PREFIX}/assets",
                f"{API_PREFIX}/search/image",
                f"{API_PREFIX}/search/combined",
                f"{API_PREFIX}/embed/image",
            }
        ),
        tiny_paths=frozenset({f"{API_PREFIX}/events", f"{API_PREFIX}/auth/session"}),
        max_upload_bytes=settings.max_upload_bytes,
        extra_limits={f"{API_PREFIX}/embed/batch": settings.embed_max_batch_bytes},
    )
    app.add_middleware(AccessMiddleware, access=access)
    app.add_middleware(
        BrowserGuardMiddleware,
        allowed_hosts=settings.allowed_host_list,
        trusted_origins=settings.trusted_origin_list,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: times everything
    for module in (health, auth, search, about, library, metadata, rollout, reembed, page):
        app.include_router(module.router)
    app.mount(page.STATIC_PREFIX, page.static_files(), name="static")
    return app


def _open_services(
    settings: Settings, encoders: EncoderRegistry | None, metrics: ApiMetrics
) -> AppServices:
    registry = encoders or EncoderRegistry.from_settings(settings, observer=metrics.observe_encode)
    try:
        ctx = open_context(settings, encoders=registry)
    except ServiceError as exc:
        logger.error("cannot start: %s", exc.detail)
        raise
    try:
        router = EmbeddingRouter(ctx)
        text_cache = TextEmbeddingCache(size=TEXT_CACHE_SIZE)
        metrics.track_text_cache(text_cache)
        if settings.preload_models:
            for key in router.models_in_use():
                ctx.encoder(key).load()
        _log_rollout(router)
        # New vectors change coverage: the router re-checks it after each job.
        dispatcher = Dispatcher(on_finished=lambda _job: router.invalidate())
        search_log = SearchLog(ctx)
        metrics.track_search_log(search_log)
        metrics.track_disk(ctx.disk)
    except BaseException:
        ctx.close()
        raise
    return AppServices(
        ctx=ctx,
        search=SearchService(ctx, text_cache=text_cache),
        router=router,
        assets=AssetService(ctx),
        metrics=metrics,
        search_log=search_log,
        encode_limiter=anyio.CapacityLimiter(ENCODE_CONCURRENCY),
        dispatcher=dispatcher,
    )


def _start_leader(services: AppServices) -> LeaderLock:
    """The once-per-deployment work (uploads repaired, ``LIBRARY_PATHS`` watched) in the
    one process that holds the watcher lock; the others serve and stand by for it."""
    duties = LeaderDuties(services.dispatcher, services.ctx, services.assets)

    def take() -> None:
        duties.start()
        services.watcher = duties.watcher

    def drop() -> None:
        services.watcher = None
        duties.stop()

    leader = LeaderLock(
        services.ctx.engine,
        WATCHER_LOCK,
        retry_s=services.ctx.settings.watcher_lock_retry_s,
        on_acquired=take,
        on_lost=drop,
    )
    services.leader = leader
    try:
        leader.start()
    except BaseException:
        leader.close()
        services.close()
        raise
    return leader


def _log_rollout(router: EmbeddingRouter) -> None:
    try:
        status = router.rollout_status()
    except ServiceError as exc:  # a store that is down now may be up for the first request
        logger.warning("cannot check rollout coverage at start: %s", exc.detail)
        return
    logger.info(
        "rollout: USE_SIGLIP=%s SIGLIP_ROLLOUT_PERCENTAGE=%d (from the %s)",
        status.use_siglip,
        status.siglip_rollout_percentage,
        status.flags_source,
    )
    env = router.flags.environment
    if status.flags_source == "database" and (
        env.use_siglip != status.use_siglip
        or env.siglip_rollout_percentage != status.siglip_rollout_percentage
    ):
        logger.warning(
            "the environment's USE_SIGLIP=%s SIGLIP_ROLLOUT_PERCENTAGE=%d do not apply: the "
            "flags were changed at run time (DELETE /api/v1/admin/rollout hands control back)",
            env.use_siglip,
            env.siglip_rollout_percentage,
        )
    for key, state in status.models.items():
        logger.info(
            "%s: collection %s, %d points, coverage %.1f%%, %s",
            key,
            state.collection,
            state.points,
            100 * state.coverage,
            "ready" if state.ready else f"not serving: {state.reason}",
        )


def _version() -> str:
    try:
        return version("image-search-service")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
