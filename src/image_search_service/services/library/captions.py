"""The caption space at index time: embed each photo's caption, title and tags with the
text embedder into its own collection. A failure never costs a photo: it stays indexed
by its image, its caption is recorded pending with the reason, and the next run (every
index run calls :func:`embed_pending_captions`) tries again."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from image_search_service.captions.ollama import CaptionEmbeddingFailed, OllamaEmbedder
from image_search_service.captions.space import caption_collection
from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.errors import ModelMismatch
from image_search_service.db import caption_repository as caption_repo
from image_search_service.vector.base import VectorPoint
from image_search_service.vector.schema import PayloadField

logger = logging.getLogger(__name__)


@dataclass
class CaptionRun:
    embedded: int = 0
    pending: int = 0
    reason: str | None = None  # why ``pending`` captions wait


def embed_pending_captions(ctx: ServiceContext, embedder: OllamaEmbedder) -> CaptionRun:
    """Embed every searchable photo's caption text that the space lacks or holds for an
    older text; stops at the first failure (Ollama is down for all of them alike) and
    records the rest pending with its reason."""
    spec = caption_collection(ctx.settings, embedder)
    with ctx.transaction() as session:
        todo = caption_repo.captions_to_embed(session, embedder.identity)
    run = CaptionRun()
    if not todo:
        return run
    try:
        ctx.store.ensure_collection(spec)
    except ModelMismatch as exc:  # stamped for another text model: nothing is mixed in
        with ctx.transaction() as session:
            caption_repo.mark_captions(session, todo, embedder.identity, error=str(exc))
        return CaptionRun(pending=len(todo), reason=str(exc))
    for position, batch in enumerate(chunked(todo, embedder.batch_size)):
        ctx.disk.check("embed captions")
        try:
            vectors = embedder.embed_documents([c.text for c in batch])
        except CaptionEmbeddingFailed as exc:
            rest = todo[position * embedder.batch_size :]
            with ctx.transaction() as session:
                caption_repo.mark_captions(session, rest, embedder.identity, error=str(exc))
            logger.warning("captions: %d pending: %s", len(rest), exc)
            run.pending, run.reason = len(rest), str(exc)
            return run
        ctx.store.upsert(
            spec.name,
            [
                VectorPoint(c.asset_id, v, {PayloadField.ASSET_ID: str(c.asset_id)})
                for c, v in zip(batch, vectors, strict=True)
            ],
        )
        # Stored first, then recorded: a crash between leaves work, never a false "done".
        with ctx.transaction() as session:
            caption_repo.mark_captions(session, batch, embedder.identity)
        run.embedded += len(batch)
    ctx.store.optimize(spec.name)
    return run
