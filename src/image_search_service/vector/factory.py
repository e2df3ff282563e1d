"""Pick the vector store from the settings: Qdrant server if QDRANT_URL, else Edge."""

from __future__ import annotations

from image_search_service.core.config import Settings
from image_search_service.vector.base import VectorStore


def open_vector_store(settings: Settings) -> VectorStore:
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
