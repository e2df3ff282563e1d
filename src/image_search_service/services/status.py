"""Library and per-model status: counts, collections, coverage."""

from __future__ import annotations

from typing import Any

from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.db import repository as repo
from image_search_service.services.context import ServiceContext


def coverage(ctx: ServiceContext, key: ModelKey) -> tuple[float, int, int]:
    """(fraction of active assets this model has embedded, done, active)."""
    with ctx.session_factory() as session:
        counts = repo.embedding_counts(session, ctx.spec(key))
        library = repo.library_counts(session)
    if library.active == 0:
        return 1.0, counts.done, 0
    return counts.done / library.active, counts.done, library.active


def library_status(ctx: ServiceContext) -> dict[str, Any]:
    with ctx.session_factory() as session:
        library = repo.library_counts(session)
        per_model = {k: repo.embedding_counts(session, ctx.spec(k)) for k in MODEL_KEYS}
    models: dict[str, Any] = {}
    for key in MODEL_KEYS:
        spec = ctx.spec(key)
        info = ctx.store.collection_info(spec.collection)
        counts = per_model[key]
        entry: dict[str, Any] = {
            "collection": spec.collection,
            "exists": info is not None,
            "configured_model": spec.identity.as_dict(),
            "configured_runtime": ctx.encoders.runtime,
            "embedded": counts.done,
            "failed": counts.failed,
            "pending": counts.pending,
            "coverage": round(counts.done / library.active, 4) if library.active else 1.0,
        }
        if info is not None:
            entry.update(info.as_dict())
            entry["identity_matches"] = info.identity == spec.identity
        else:
            entry.update({"points": 0, "quantization": None, "hnsw": None, "model_identity": None})
        models[key] = entry
    return {
        "assets": library.active,
        "assets_total": library.total,
        "failed": library.failed,
        "missing": library.missing,
        "vector_store": ctx.store.kind,
        "database": ctx.engine.url.get_backend_name(),
        "models": models,
    }
