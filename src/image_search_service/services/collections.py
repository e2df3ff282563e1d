"""Create, check and drop a model's collection, from the settings.

Creation itself is :meth:`VectorStore.ensure_collection` (cosine, HNSW, INT8, model
stamp); this module adds what an operator needs around it: a dry run that touches
nothing, a check against the settings and the library, and an explicit drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete

from image_search_service.core.config import ModelKey, Settings
from image_search_service.db.models import AssetEmbedding
from image_search_service.services.context import ServiceContext
from image_search_service.services.status import coverage
from image_search_service.vector.base import QUANTIZATION_QUANTILE, CollectionSpec
from image_search_service.vector.factory import collection_spec


def _store_location(settings: Settings) -> dict[str, str]:
    if settings.qdrant_url:
        return {"vector_store": "qdrant", "location": settings.qdrant_url}
    return {"vector_store": "embedded", "location": str(settings.qdrant_dir.resolve())}


def planned_collection(settings: Settings, key: ModelKey) -> dict[str, Any]:
    """What ``create`` would make, computed from the settings alone (opens nothing)."""
    spec = collection_spec(settings, key)
    return {
        "model": key,
        **_store_location(settings),
        **_spec_dict(spec),
    }


def _spec_dict(spec: CollectionSpec) -> dict[str, Any]:
    return {
        "collection": spec.name,
        "dim": spec.dim,
        "distance": "cosine",
        "quantization": {"type": "int8", "quantile": QUANTIZATION_QUANTILE, "always_ram": True},
        "hnsw": {"m": spec.hnsw_m, "ef_construct": spec.hnsw_ef_construct},
        "model_identity": spec.identity.as_dict(),
    }


@dataclass
class CollectionCheck:
    model: ModelKey
    collection: str
    exists: bool
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exists and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "collection": self.collection,
            "exists": self.exists,
            "ok": self.ok,
            "problems": self.problems,
            **self.details,
        }


def check_collection(ctx: ServiceContext, key: ModelKey) -> CollectionCheck:
    """Does the collection exist, match the settings, and cover the library?"""
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    ratio, done, active = coverage(ctx, key)
    check = CollectionCheck(model=key, collection=spec.name, exists=info is not None)
    check.details = {
        "vector_store": ctx.store.kind,
        "expected": _spec_dict(spec),
        "coverage": round(ratio, 4),
        "embedded": done,
        "assets": active,
    }
    if info is None:
        check.problems.append(f"collection {spec.name!r} does not exist")
        return check
    check.details.update(info.as_dict())
    problems = info.mismatches(spec)
    if getattr(ctx.store, "local", False):
        # qdrant-client's in-process mode (tests, `path:`) accepts but ignores quantization.
        problems = [p for p in problems if not p.startswith("quantization")]
        check.details["note"] = "qdrant-client local mode: quantization and HNSW not applied"
    check.problems.extend(problems)
    if info.distance != "cosine":
        check.problems.append(f"distance {info.distance}, expected cosine")
    return check


def create_collection(ctx: ServiceContext, key: ModelKey) -> dict[str, Any]:
    """Create it if missing (idempotent); an existing one must match the model stamp."""
    created = ctx.store.ensure_collection(ctx.collection_spec(key))
    check = check_collection(ctx, key)
    return {"created": created, **check.as_dict()}


def drop_collection(ctx: ServiceContext, key: ModelKey) -> dict[str, Any]:
    """Remove the collection and this model's per-asset state (which described its points).

    The other model's collection and every asset row stay; re-creating and re-embedding
    rebuilds it from the DB and the files (invariant 1).
    """
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    # State first: a crash in between leaves points nobody counts (re-embedding overwrites
    # them), never "done" rows for a collection that is gone.
    with ctx.session_factory() as session:
        cleared = session.execute(delete(AssetEmbedding).where(AssetEmbedding.model_key == key))
        session.commit()
    dropped = ctx.store.drop_collection(spec.name) if info is not None else False
    return {
        "model": key,
        "collection": spec.name,
        "dropped": dropped,
        "points_removed": info.points if info is not None else 0,
        "states_cleared": int(getattr(cleared, "rowcount", 0) or 0),
    }
