"""Embeddings for other services: images and texts in, unit vectors out.

Nothing is stored. The model is the one the caller names, by default the baseline:
never the router's per-user choice, because callers keep these vectors and must know
which model made them (the response carries the model's identity). Images are
decoded in threads and encoded in batches of ``BATCH_SIZE``; one bad file in a batch
fails alone, in its place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import (
    ImageTooLarge,
    InvalidRequest,
    ServiceError,
    UnsupportedImage,
)
from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.base import FloatArray
from image_search_service.images.loading import load_image
from image_search_service.services.search.service import MAX_QUERY_CHARS

logger = logging.getLogger(__name__)

MAX_TEXTS = 256


@dataclass(frozen=True)
class EmbedItem:
    """One input's outcome: a vector, or the error that input alone failed with."""

    vector: FloatArray | None
    error: ServiceError | None


@dataclass(frozen=True)
class EmbedOutcome:
    spec: ModelSpec
    items: list[EmbedItem]
    took_ms: float

    @property
    def failed(self) -> int:
        return sum(1 for item in self.items if item.error is not None)


class EmbedService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def embed_images(self, files: Sequence[bytes], *, model: ModelKey) -> EmbedOutcome:
        """Vectors for ``files`` in input order; a file that cannot be decoded gets its
        UnsupportedImage / ImageTooLarge instead of failing the others."""
        started = time.perf_counter()
        spec = self.ctx.spec(model)
        encoder = self.ctx.encoder(model)
        encoder.load()
        settings = self.ctx.settings

        def prepare(data: bytes) -> Any:
            if len(data) > settings.max_upload_bytes:
                raise ImageTooLarge(
                    f"file is {len(data):,} bytes, over the limit of "
                    f"{settings.max_upload_bytes:,} (MAX_UPLOAD_BYTES)"
                )
            loaded = load_image(
                data, max_pixels=settings.max_image_pixels, min_side=encoder.image_size
            )
            return encoder.preprocess(loaded.image)

        prepared: list[Any] = []  # preprocessed tensors, or the error of that input
        workers = min(self.ctx.threads.decode_workers, max(1, len(files)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool:
            for future in [pool.submit(prepare, data) for data in files]:
                try:
                    prepared.append(future.result())
                except (UnsupportedImage, ImageTooLarge) as exc:
                    prepared.append(exc)
        good = [i for i, p in enumerate(prepared) if not isinstance(p, ServiceError)]
        vectors: dict[int, FloatArray] = {}
        size = settings.batch_size
        for chunk in chunked(good, size):
            encoded = encoder.encode_preprocessed([prepared[i] for i in chunk])
            vectors.update(zip(chunk, encoded, strict=True))
        items = [
            EmbedItem(None, p) if isinstance(p, ServiceError) else EmbedItem(vectors[i], None)
            for i, p in enumerate(prepared)
        ]
        outcome = EmbedOutcome(spec, items, (time.perf_counter() - started) * 1000)
        _log("image", outcome, sum(len(d) for d in files))
        return outcome

    def embed_texts(self, texts: Sequence[str], *, model: ModelKey) -> EmbedOutcome:
        if not texts:
            raise InvalidRequest("texts must not be empty")
        if len(texts) > MAX_TEXTS:
            raise InvalidRequest(f"at most {MAX_TEXTS} texts per request")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequest(f"texts[{i}] is empty")
            if len(text) > MAX_QUERY_CHARS:
                raise InvalidRequest(f"texts[{i}] is longer than {MAX_QUERY_CHARS} characters")
        started = time.perf_counter()
        spec = self.ctx.spec(model)
        encoder = self.ctx.encoder(model)
        size = self.ctx.settings.batch_size
        items: list[EmbedItem] = []
        for batch in chunked(texts, size):
            chunk = [t.strip() for t in batch]
            items.extend(EmbedItem(v, None) for v in encoder.encode_text(chunk))
        outcome = EmbedOutcome(spec, items, (time.perf_counter() - started) * 1000)
        _log("text", outcome, sum(len(t.encode()) for t in texts))
        return outcome


def _log(kind: str, outcome: EmbedOutcome, size: int) -> None:
    logger.info(
        "embed %s: model=%s items=%d failed=%d bytes=%d took_ms=%.1f",
        kind,
        outcome.spec.key,
        len(outcome.items),
        outcome.failed,
        size,
        outcome.took_ms,
    )
