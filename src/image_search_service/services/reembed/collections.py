"""Create, check and drop a model's collection, from the settings.

Creation itself is :meth:`VectorStore.ensure_collection` (cosine, HNSW, INT8, model
stamp); this module adds what an operator needs around it: a dry run that touches
nothing, a check against the settings and the library, and an explicit drop.
"""

from __future__ import annotations

from typing import Any

from image_search_service.context import ServiceContext
from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.schemas import ModelIdentityOut
from image_search_service.core.specs import model_spec
from image_search_service.db import repository as repo
from image_search_service.services.reembed.schemas import CollectionCheckOut
from image_search_service.vector.schema import collection_spec


def _store_location(settings: Settings) -> dict[str, str]:
    if settings.qdrant_url:
        return {"vector_store": "qdrant", "location": settings.qdrant_url}
    return {"vector_store": "embedded", "location": str(settings.qdrant_dir.resolve())}


def planned_collection(settings: Settings, key: ModelKey) -> dict[str, Any]:
    """What ``create`` would make, computed from the settings alone (opens nothing)."""
    spec = collection_spec(settings, model_spec(settings, key))
    return {"model": key, **_store_location(settings), **spec.describe()}


def check_collection(ctx: ServiceContext, key: ModelKey) -> CollectionCheckOut:
    """Does the collection exist, match the settings, and cover the library?"""
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    with ctx.transaction() as session:
        cov = repo.coverage(session, ctx.spec(key))
    problems = (
        info.mismatches(spec, ctx.store.capabilities)
        if info is not None
        else [f"collection {spec.name!r} does not exist"]
    )
    check = CollectionCheckOut(
        model=key,
        collection=spec.name,
        exists=info is not None,
        ok=info is not None and not problems,
        problems=problems,
        vector_store=ctx.store.kind,
        expected=spec.describe(),
        coverage=round(cov.ratio, 4),
        embedded=cov.done_searchable,
        assets=cov.searchable,
    )
    if info is None:
        return check
    return check.model_copy(
        update={
            "points": info.points,
            "dim": info.dim,
            "distance": info.distance,
            "quantization": info.quantization,
            "hnsw": {"m": info.hnsw_m, "ef_construct": info.hnsw_ef_construct},
            "model_identity": ModelIdentityOut.model_validate(info.identity)
            if info.identity is not None
            else None,
            "runtimes": list(info.runtimes),
            "note": None
            if ctx.store.capabilities.applies_index_config
            else "qdrant-client local mode: quantization and HNSW not applied",
        }
    )


def create_collection(ctx: ServiceContext, key: ModelKey) -> CollectionCheckOut:
    """Create it if missing (idempotent); an existing one must match the model stamp."""
    created = ctx.ensure_collection(key)
    return check_collection(ctx, key).model_copy(update={"created": created})


def drop_collection(ctx: ServiceContext, key: ModelKey) -> dict[str, Any]:
    """Remove the collection and this model's per-asset state (which described its points).

    The other model's collection and every asset row stay; re-creating and re-embedding
    rebuilds it from the DB and the files (docs/design.md, invariant 1).
    """
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    # State first: a crash in between leaves points nobody counts (re-embedding overwrites
    # them), never "done" rows for a collection that is gone.
    with ctx.transaction() as session:
        cleared = repo.clear_model_states(session, key)
    ctx.forget_verified(key)
    dropped = ctx.store.drop_collection(spec.name) if info is not None else False
    return {
        "model": key,
        "collection": spec.name,
        "dropped": dropped,
        "points_removed": info.points if info is not None else 0,
        "states_cleared": cleared,
    }
