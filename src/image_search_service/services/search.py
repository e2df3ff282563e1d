"""Search by text, by example image, or by a stored asset's vector."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import numpy as np
from cachetools import LRUCache

from image_search_service.core.config import INTERLEAVED, Arm, ModelKey
from image_search_service.core.errors import AssetNotFound, InvalidRequest
from image_search_service.core.specs import BASELINE, CANDIDATE, ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.encoders.base import Encoder, FloatArray
from image_search_service.images.loading import load_image
from image_search_service.services.context import ServiceContext
from image_search_service.services.interleaving import draft_seed, team_draft

if TYPE_CHECKING:
    from image_search_service.services.embedding_router import RouteDecision
from image_search_service.vector.base import SearchFilter

MAX_QUERY_CHARS = 1000
MAX_LIMIT = 100
MAX_OFFSET = 10_000


@dataclass(frozen=True)
class SearchHit:
    asset_id: UUID
    path: str
    score: float
    calibrated_score: float | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    model: ModelKey  # the model that found it (for interleaving: the team that picked it)

    def as_dict(self) -> dict[str, Any]:
        return {
            "asset_id": str(self.asset_id),
            "model": self.model,
            "path": self.path,
            "score": round(self.score, 6),
            "calibrated_score": (
                round(self.calibrated_score, 6) if self.calibrated_score is not None else None
            ),
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
        }


@dataclass(frozen=True)
class SearchOutcome:
    results: list[SearchHit]
    model: ModelKey
    collection: str
    limit: int
    offset: int
    took_ms: float
    interleaved: bool = False  # both models answered; each hit says which one

    @property
    def arm(self) -> Arm:
        return INTERLEAVED if self.interleaved else self.model

    def as_dict(self) -> dict[str, Any]:
        return {
            "results": [hit.as_dict() for hit in self.results],
            "model": self.arm,
            "collection": self.collection,
            "limit": self.limit,
            "offset": self.offset,
            "took_ms": round(self.took_ms, 2),
        }


@dataclass(frozen=True)
class SearchOptions:
    limit: int = 20
    offset: int = 0
    min_score: float | None = None
    search_filter: SearchFilter | None = None

    def validate(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidRequest(f"offset must be between 0 and {MAX_OFFSET}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidRequest("min_score must be between -1 and 1 (cosine similarity)")
        f = self.search_filter
        if f and f.taken_after and f.taken_before and f.taken_after >= f.taken_before:
            raise InvalidRequest("taken_after must be earlier than taken_before")


SearchRun = Callable[[ModelKey, "SearchOptions"], "SearchOutcome"]


def answer(
    decision: RouteDecision,
    run: SearchRun,
    options: SearchOptions,
    *,
    kind: str,
    query: str,
) -> SearchOutcome:
    """Run a routed search: the decided model, or both merged when the user is in the
    interleaving share. ``query`` identifies the query (text, image digest, asset id)
    so that the same user paging the same query sees one merged order."""
    if decision.interleave:
        seed = draft_seed(decision.user_id or "", kind, query)
        return interleaved_search(run, options, seed=seed)
    return run(decision.model, options)


def interleaved_search(run: SearchRun, options: SearchOptions, *, seed: int) -> SearchOutcome:
    """Both models answer the same query; their rankings are merged by team draft.

    Each model is asked for ``offset + limit`` results from the top (at most
    ``MAX_LIMIT``), and the merged list is cut at ``offset``, so (with the same
    ``seed``) page two continues page one.
    """
    options.validate()
    started = time.perf_counter()
    wide = SearchOptions(
        limit=min(options.offset + options.limit, MAX_LIMIT),
        offset=0,
        min_score=options.min_score,
        search_filter=options.search_filter,
    )
    baseline = run(BASELINE, wide)
    candidate = run(CANDIDATE, wide)
    merged = team_draft(
        [(h.asset_id, h) for h in baseline.results],
        [(h.asset_id, h) for h in candidate.results],
        length=options.offset + options.limit,
        rng=random.Random(seed),
    )
    return SearchOutcome(
        results=[hit for hit, _team in merged[options.offset :]],
        model=CANDIDATE,
        collection=f"{baseline.collection}+{candidate.collection}",
        limit=options.limit,
        offset=options.offset,
        took_ms=(time.perf_counter() - started) * 1000,
        interleaved=True,
    )


class TextEmbeddingCache:
    """A small LRU of query embeddings per model: repeated queries skip the encoder."""

    def __init__(self, size: int = 512) -> None:
        self._data: LRUCache[tuple[ModelSpec, str], FloatArray] = LRUCache(maxsize=size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, encoder: Encoder, text: str) -> FloatArray:
        key = (encoder.spec, text)
        with self._lock:
            cached: FloatArray | None = self._data.get(key)
            if cached is not None:
                self.hits += 1
                return cached
        # Encoded outside the lock: a slow forward pass must not block cache hits.
        vector: FloatArray = encoder.encode_text([text])[0]
        vector.setflags(write=False)
        with self._lock:
            self.misses += 1
            self._data[key] = vector
        return vector

    def warm(self, encoder: Encoder, texts: list[str]) -> None:
        """Encode ``texts`` in one batch and keep them (known frequent queries)."""
        vectors: FloatArray = encoder.encode_text(texts)
        with self._lock:
            for text, vector in zip(texts, vectors, strict=True):
                vector.setflags(write=False)
                self._data[(encoder.spec, text)] = vector


class SearchService:
    def __init__(self, ctx: ServiceContext, *, text_cache: TextEmbeddingCache | None = None):
        self.ctx = ctx
        self.text_cache = text_cache or TextEmbeddingCache()

    def search_text(self, query: str, *, model: ModelKey, options: SearchOptions) -> SearchOutcome:
        text = query.strip()
        if not text:
            raise InvalidRequest("query must not be empty")
        if len(text) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is longer than {MAX_QUERY_CHARS} characters")
        options.validate()
        started = time.perf_counter()
        # A missing or mismatched collection is reported before paying for a model load.
        self.ctx.verify_collection(model)
        encoder = self.ctx.encoder(model)
        vector = self.text_cache.get(encoder, text)
        return self._search(vector, model=model, options=options, started=started, text=True)

    def search_image(
        self, source: bytes | Path, *, model: ModelKey, options: SearchOptions
    ) -> SearchOutcome:
        options.validate()
        started = time.perf_counter()
        self.ctx.verify_collection(model)
        encoder = self.ctx.encoder(model)
        loaded = load_image(
            source, max_pixels=self.ctx.settings.max_image_pixels, min_side=encoder.image_size
        )
        vector = encoder.encode_images([loaded.image])[0]
        return self._search(vector, model=model, options=options, started=started)

    def search_similar(
        self, asset_id: UUID, *, model: ModelKey, options: SearchOptions
    ) -> SearchOutcome:
        options.validate()
        started = time.perf_counter()
        collection = self.ctx.spec(model).collection
        with self.ctx.transaction() as session:
            asset = repo.get_asset(session, asset_id)
            if asset is None or asset.status == AssetStatus.MISSING:
                raise AssetNotFound(f"asset {asset_id} not found")
        self.ctx.verify_collection(model)
        stored = self.ctx.store.retrieve_vectors(collection, [asset_id]).get(asset_id)
        if stored is None:
            raise AssetNotFound(
                f"asset {asset_id} has no vector in {collection!r} yet (not embedded by {model})"
            )
        base = options.search_filter or SearchFilter()
        exclude = SearchFilter(
            taken_after=base.taken_after,
            taken_before=base.taken_before,
            format=base.format,
            exclude_ids=(*base.exclude_ids, asset_id),
        )
        options = SearchOptions(
            limit=options.limit,
            offset=options.offset,
            min_score=options.min_score,
            search_filter=exclude,
        )
        return self._search(stored, model=model, options=options, started=started)

    def _search(
        self,
        vector: np.ndarray[Any, Any],
        *,
        model: ModelKey,
        options: SearchOptions,
        started: float,
        text: bool = False,
    ) -> SearchOutcome:
        spec = self.ctx.spec(model)
        hits = self.ctx.store.search(
            spec.collection,
            vector.astype(np.float32),
            limit=options.limit,
            offset=options.offset,
            search_filter=options.search_filter,
            min_score=options.min_score,
        )
        encoder = self.ctx.encoder(model) if text else None
        with self.ctx.transaction() as session:
            assets = repo.get_assets(session, [h.id for h in hits])
        results = []
        for hit in hits:
            asset = assets.get(hit.id)
            if asset is None or asset.status != AssetStatus.ACTIVE:
                continue  # a point whose asset was deleted meanwhile: never show it
            results.append(
                SearchHit(
                    asset_id=hit.id,
                    path=asset.path,
                    score=hit.score,
                    calibrated_score=encoder.calibrated_score(hit.score) if encoder else None,
                    width=asset.width,
                    height=asset.height,
                    format=asset.format,
                    taken_at=asset.taken_at,
                    model=model,
                )
            )
        return SearchOutcome(
            results=results,
            model=model,
            collection=spec.collection,
            limit=options.limit,
            offset=options.offset,
            took_ms=(time.perf_counter() - started) * 1000,
        )
