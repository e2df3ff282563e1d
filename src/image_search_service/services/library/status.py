"""Library and per-model status: counts, collections, coverage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.specs import ModelIdentity
from image_search_service.db import repository as repo
from image_search_service.vector.base import CollectionInfo


def model_coverage(ctx: ServiceContext, key: ModelKey) -> repo.Coverage:
    with ctx.transaction() as session:
        return repo.coverage(session, ctx.spec(key))


@dataclass(frozen=True)
class ModelStatus:
    model: ModelKey
    collection: str
    configured: ModelIdentity
    configured_runtime: str  # what would encode now, e.g. "onnx-int8"
    coverage: repo.Coverage
    info: CollectionInfo | None
    identity_matches: bool | None  # None: no collection

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "collection": self.collection,
            "exists": self.info is not None,
            "configured_model": self.configured.as_dict(),
            "configured_runtime": self.configured_runtime,
            "embedded": self.coverage.done,
            "failed": self.coverage.failed,
            "pending": self.coverage.pending,
            "coverage": round(self.coverage.ratio, 4),
        }
        if self.info is not None:
            entry.update(self.info.as_dict())
            entry["identity_matches"] = self.identity_matches
        else:
            entry.update({"points": 0, "quantization": None, "hnsw": None, "model_identity": None})
        return entry


@dataclass(frozen=True)
class LibraryStatus:
    library: repo.LibraryCounts
    models: dict[ModelKey, ModelStatus]
    vector_store: str
    database: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "assets": self.library.active,
            "assets_total": self.library.total,
            "failed": self.library.failed,
            "missing": self.library.missing,
            "vector_store": self.vector_store,
            "database": self.database,
            "models": {key: m.as_dict() for key, m in self.models.items()},
        }


def library_status(ctx: ServiceContext) -> LibraryStatus:
    with ctx.transaction() as session:
        library = repo.library_counts(session)
        coverages = {key: repo.coverage(session, ctx.spec(key)) for key in MODEL_KEYS}
    models = {}
    for key in MODEL_KEYS:
        spec = ctx.spec(key)
        info = ctx.store.collection_info(spec.collection)
        models[key] = ModelStatus(
            model=key,
            collection=spec.collection,
            configured=spec.identity,
            configured_runtime=ctx.encoders.runtime,
            coverage=coverages[key],
            info=info,
            identity_matches=None if info is None else info.identity == spec.identity,
        )
    return LibraryStatus(
        library=library,
        models=models,
        vector_store=ctx.store.kind,
        database=ctx.engine.url.get_backend_name(),
    )
