"""Pick the vector store from the settings: Qdrant server if QDRANT_URL, else Edge."""

from __future__ import annotations

import logging

from image_search_service.core.config import Settings
from image_search_service.vector.base import VectorStore
from image_search_service.vector.schema import Placement

logger = logging.getLogger(__name__)


def open_vector_store(settings: Settings) -> VectorStore:
    store = _open(settings)
    if Placement.from_settings(settings).clustered and not store.capabilities.cluster:
        # Not an error: the same settings file serves the cluster and a laptop copy.
        logger.warning(
            "QDRANT_SHARDS=%d, QDRANT_REPLICATION_FACTOR=%d, QDRANT_WRITE_CONSISTENCY=%d are "
            "ignored: the %s vector store is one shard with one copy (they apply to a Qdrant "
            "server, QDRANT_URL=http://...)",
            settings.qdrant_shards,
            settings.qdrant_replication_factor,
            settings.qdrant_write_consistency,
            store.kind,
        )
    return store


def _open(settings: Settings) -> VectorStore:
    if settings.qdrant_url:
        from image_search_service.vector.qdrant import QdrantServerStore

        return QdrantServerStore.connect(
            settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            oversampling=settings.search_oversampling,
            lock_timeout_s=settings.embedded_lock_timeout_s,
        )
    from image_search_service.vector.edge import EdgeVectorStore

    return EdgeVectorStore(
        settings.qdrant_dir,
        oversampling=settings.search_oversampling,
        lock_timeout_s=settings.embedded_lock_timeout_s,
    )
