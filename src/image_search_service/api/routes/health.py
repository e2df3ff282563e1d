"""Liveness, readiness and metrics (unversioned, for orchestrators and Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import generate_latest

from image_search_service.api.deps import ServicesDep
from image_search_service.api.errors import error_responses
from image_search_service.api.schemas import HealthOut, ReadyOut
from image_search_service.core.config import MODEL_KEYS
from image_search_service.core.errors import (
    DatabaseUnavailable,
    ModelsLoading,
    VectorStoreUnavailable,
)
from image_search_service.db.session import check_database
from image_search_service.services.library.schemas import DiskStatusOut

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> HealthOut:
    return HealthOut()


@router.get(
    "/ready",
    summary="The metadata DB and the vector store answer, and the models are loaded",
    responses=error_responses(DatabaseUnavailable, VectorStoreUnavailable, ModelsLoading),
)
def ready(services: ServicesDep, request: Request) -> ReadyOut:
    ctx = services.ctx
    check_database(ctx.engine)
    for key in MODEL_KEYS:  # raises VectorStoreUnavailable when the store does not answer
        ctx.store.collection_info(ctx.spec(key).collection)
    # `serve` without --preload loads the models after it starts listening: a load
    # balancer polling this waits for them instead of sending searches that would.
    warmup = getattr(request.app.state, "warmup", None)
    loading = warmup.loading() if warmup is not None else []
    if loading:
        raise ModelsLoading(
            f"loading the {' and '.join(loading)} model{'s' if len(loading) > 1 else ''}; "
            "searches would wait for it (GET /api/v1/about shows progress)"
        )
    return ReadyOut(
        database=ctx.engine.url.get_backend_name(),
        vector_store=ctx.store.kind,
        disk=DiskStatusOut.model_validate(ctx.disk.state()),
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    registry = services.metrics.registry
    return Response(generate_latest(registry), media_type=services.metrics.content_type)
