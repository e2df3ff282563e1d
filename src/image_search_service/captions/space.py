"""The caption space as configured: its embedder and its collection."""

from __future__ import annotations

from image_search_service.captions.ollama import OllamaEmbedder
from image_search_service.core.config import Settings
from image_search_service.vector.schema import CollectionSpec, Placement


def caption_embedder(settings: Settings) -> OllamaEmbedder | None:
    """The configured text embedder, or None while the caption space is off."""
    if settings.caption_embedder != "ollama":
        return None
    return OllamaEmbedder.from_settings(settings)


def caption_collection(settings: Settings, embedder: OllamaEmbedder) -> CollectionSpec:
    """Stamped like the image collections: another text model (or dimension) in the
    same collection is a ModelMismatch, never a silent mix."""
    return CollectionSpec(
        name=settings.caption_collection,
        identity=embedder.identity,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construct=settings.hnsw_ef_construct,
        placement=Placement.from_settings(settings),  # sharded and replicated like the images
    )
