"""Text embeddings from Ollama's HTTP API (``POST /api/embed``), nomic-style task prefixes.

Ollama runs beside the service (docs/configuration.md, "Caption space"); it may be
down, still loading its model, missing the model, or configured with a model of another
dimension. Every one of those is a :class:`CaptionEmbeddingFailed` with a reason a
person can act on, never a crash: the caller keeps the photo indexed by its image.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import numpy as np

from image_search_service.core.batching import chunked
from image_search_service.core.config import Settings
from image_search_service.core.specs import ModelIdentity
from image_search_service.encoders.base import FloatArray

# nomic-embed-text is trained with these task prefixes; without them its documents and
# queries land in different regions of the space.
DOCUMENT_PREFIX = "search_document: "
QUERY_PREFIX = "search_query: "
# The stamp's "pretrained" part: who serves the model, so an Ollama model never matches
# an open_clip stamp of the same name.
PROVIDER = "ollama"


class CaptionEmbeddingFailed(Exception):
    """Ollama could not embed: the reason is recorded and the work retried later."""


class OllamaEmbedder:
    def __init__(
        self,
        *,
        url: str,
        model: str,
        dim: int,
        timeout_s: float,
        batch_size: int,
        query_timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.query_timeout_s = query_timeout_s or timeout_s
        self._client = httpx.Client(
            base_url=url.rstrip("/"), timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OllamaEmbedder:
        return cls(
            url=settings.ollama_url,
            model=settings.ollama_embed_model,
            dim=settings.ollama_embed_dim,
            timeout_s=settings.ollama_timeout_s,
            batch_size=settings.ollama_batch_size,
            query_timeout_s=settings.ollama_query_timeout_s,
        )

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.model, PROVIDER, self.dim)

    def embed_documents(self, texts: Sequence[str]) -> FloatArray:
        """Unit vectors of ``texts`` (captions), one request per batch."""
        parts = [
            self._embed([DOCUMENT_PREFIX + t for t in batch], timeout_s=self.timeout_s)
            for batch in chunked(list(texts), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> FloatArray:
        vector: FloatArray = self._embed([QUERY_PREFIX + text], timeout_s=self.query_timeout_s)[0]
        return vector

    def _embed(self, texts: list[str], *, timeout_s: float) -> FloatArray:
        try:
            response = self._client.post(
                "/api/embed", json={"model": self.model, "input": texts}, timeout=timeout_s
            )
        except httpx.TimeoutException:
            raise CaptionEmbeddingFailed(
                f"Ollama at {self._client.base_url} did not answer within "
                f"{timeout_s}s (OLLAMA_TIMEOUT_S / OLLAMA_QUERY_TIMEOUT_S)"
            ) from None
        except httpx.HTTPError as exc:
            raise CaptionEmbeddingFailed(
                f"Ollama at {self._client.base_url} is unreachable ({type(exc).__name__}); "
                "is `ollama serve` running (OLLAMA_URL)?"
            ) from None
        if response.status_code != 200:
            raise CaptionEmbeddingFailed(self._error(response))
        try:
            rows = response.json()["embeddings"]
            vectors = np.asarray(rows, dtype=np.float32)
        except (ValueError, KeyError, TypeError):
            raise CaptionEmbeddingFailed("Ollama answered /api/embed without embeddings") from None
        if vectors.shape != (len(texts), self.dim):
            got = vectors.shape[1] if vectors.ndim == 2 else "no"
            raise CaptionEmbeddingFailed(
                f"{self.model} returned {got}-d vectors, OLLAMA_EMBED_DIM is {self.dim}"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        result: FloatArray = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return result

    def _error(self, response: httpx.Response) -> str:
        try:
            detail = str(response.json().get("error", ""))
        except ValueError:
            detail = response.text[:200]
        if response.status_code == 404 and "not found" in detail:
            return f"{detail} (run `ollama pull {self.model}` where Ollama runs)"
        return f"Ollama answered {response.status_code}: {detail or response.reason_phrase}"

    def close(self) -> None:
        self._client.close()
