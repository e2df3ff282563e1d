"""Search by text, by example image, or by a stored asset's vector."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import numpy as np
from cachetools import LRUCache

from image_search_service.captions.ollama import CaptionEmbeddingFailed
from image_search_service.captions.space import caption_collection, caption_embedder
from image_search_service.context import ServiceContext
from image_search_service.core.config import INTERLEAVED, Arm, ModelKey, Settings
from image_search_service.core.errors import AssetNotFound, CollectionMissing, InvalidRequest
from image_search_service.core.specs import BASELINE, CANDIDATE, ModelSpec, relevance_floor
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.metadata_repository import AssetLabels
from image_search_service.db.models import AssetStatus
from image_search_service.encoders.base import Encoder, FloatArray
from image_search_service.images.loading import load_image
from image_search_service.images.metadata import PersonRegion, normalise_name
from image_search_service.services.rollout.interleaving import draft_seed, team_draft
from image_search_service.services.search.fusion import Space, fuse, matched_by
from image_search_service.services.search.query import split_negatives, understand

if TYPE_CHECKING:
    from image_search_service.services.rollout.router import RouteDecision
from image_search_service.vector.base import SearchFilter, verify_collection
from image_search_service.vector.schema import payload_timestamp

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 1000
MAX_LIMIT = 100
MAX_OFFSET = 10_000
# What is embedded when a query named only people: the filter does the selecting.
PEOPLE_ONLY_CONCEPT = "a photo"
MAX_EXAMPLES = 8  # example images (uploaded or stored) in one combined query
MAX_NEGATIVES = 8
MAX_WEIGHT = 10.0
# Candidates each ranking contributes to the fusion, however small the page: a caption
# match that the visual ranking places 40th still gets credit for both.
TEXT_CANDIDATES = 200
FUSION_DEPTH = 100
# What a text search with no result above its model's relevance floor offers instead.
NEAREST_FEW = 6

MatchedBy = Literal["image", "text", "both"]


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
    labels: AssetLabels = AssetLabels()
    matched_by: MatchedBy = "image"
    fused_score: float | None = None  # the fusion's score, when words took part
    # Where it was found: image (the picture), text (caption words), caption (meaning).
    spaces: tuple[Space, ...] = ("image",)

    # SearchResult reads the labels at the top level of a hit.
    @property
    def people(self) -> tuple[PersonRegion, ...]:
        return self.labels.people

    @property
    def tags(self) -> tuple[str, ...]:
        return self.labels.tags

    @property
    def caption(self) -> str | None:
        return self.labels.caption

    @property
    def title(self) -> str | None:
        return self.labels.title


@dataclass(frozen=True)
class SearchOutcome:
    results: list[SearchHit]
    model: ModelKey
    collection: str
    limit: int
    offset: int
    took_ms: float
    understood: Understood | None = None
    interleaved: bool = False  # both models answered; each hit says which one
    # The cosine floor the results had to reach (the model's relevance floor, or the
    # caller's min_score); None: none (off, not a text search, or interleaved scales).
    relevance_floor: float | None = None
    # False: nothing reached the floor and ``results`` are the nearest few instead.
    close_matches: bool = True

    @property
    def arm(self) -> Arm:
        return INTERLEAVED if self.interleaved else self.model

    @property
    def has_more(self) -> bool:
        """Whether the next page may hold more: a full page of close matches."""
        return self.close_matches and len(self.results) >= self.limit


@dataclass(frozen=True)
class SearchAnswer:
    """One search as its client gets it (``SearchResponse``): the outcome, with what
    the request around it adds."""

    outcome: SearchOutcome
    took_ms: float  # the whole request's, routing included (the CLI's: the search's)
    search_id: UUID | None = None  # None: not recorded (the request named its model)
    fallback_reason: str | None = None  # why the routed model did not answer

    @property
    def results(self) -> list[SearchHit]:
        return self.outcome.results

    @property
    def model(self) -> Arm:
        return self.outcome.arm

    @property
    def collection(self) -> str:
        return self.outcome.collection

    @property
    def limit(self) -> int:
        return self.outcome.limit

    @property
    def offset(self) -> int:
        return self.outcome.offset

    @property
    def understood(self) -> Understood | None:
        return self.outcome.understood

    @property
    def relevance_floor(self) -> float | None:
        return self.outcome.relevance_floor

    @property
    def close_matches(self) -> bool:
        return self.outcome.close_matches

    @property
    def has_more(self) -> bool:
        return self.outcome.has_more


@dataclass(frozen=True)
class Understood:
    """How a search was read: the concept embedded and the filters applied."""

    query: str | None  # the text as given (None for image and similar searches)
    concept: str | None  # the text that was embedded
    people: tuple[str, ...] = ()  # all of these (recognised in the text or given)
    people_any: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    recognised_people: tuple[str, ...] = ()  # the subset found in the text
    negative: tuple[str, ...] = ()  # texts pushed away from
    examples: int = 0  # example images (uploaded or stored) added to the query
    full_text: bool = False  # captions/titles/tags took part in the ranking
    caption_space: bool = False  # the caption space answered and took part


@dataclass(frozen=True)
class SearchOptions:
    limit: int = 20
    offset: int = 0
    min_score: float | None = None
    search_filter: SearchFilter | None = None
    # Read known person names out of a text query as filters (False: embed it as is).
    understand: bool = True

    def validate(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidRequest(f"offset must be between 0 and {MAX_OFFSET}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise InvalidRequest("min_score must be between -1 and 1 (cosine similarity)")
        f = self.search_filter
        # Compared as instants: a naive time is UTC, so mixed forms never fail to compare.
        after = payload_timestamp(f.taken_after) if f else None
        before = payload_timestamp(f.taken_before) if f else None
        if after is not None and before is not None and after >= before:
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
    # Each model applied its own floor (two scales); a model's nearest few never mix
    # with the other's close matches.
    close = baseline.close_matches or candidate.close_matches
    length = options.offset + options.limit if close else min(options.limit, NEAREST_FEW)
    merged = team_draft(
        [(h.asset_id, h) for h in baseline.results if baseline.close_matches or not close],
        [(h.asset_id, h) for h in candidate.results if candidate.close_matches or not close],
        length=length,
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
        close_matches=close,
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


@dataclass(frozen=True)
class Example:
    """An example image in a combined query: the file's bytes (or path), or a stored
    asset's id (its stored vector), with a weight."""

    source: bytes | Path | UUID
    weight: float = 1.0


@dataclass(frozen=True)
class CombinedQuery:
    """Text, example images and negative texts in one query, each weighted (rclip's
    ``+``/``-`` queries). The query vector is the normalised weighted sum of the parts'
    unit vectors, negatives subtracted."""

    text: str | None = None
    text_weight: float = 1.0
    examples: tuple[Example, ...] = ()
    negatives: tuple[str, ...] = ()
    negative_weight: float = 1.0

    def validate(self) -> None:
        if self.text is not None and len(self.text) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"query is longer than {MAX_QUERY_CHARS} characters")
        if len(self.examples) > MAX_EXAMPLES:
            raise InvalidRequest(f"at most {MAX_EXAMPLES} example images")
        if len(self.negatives) > MAX_NEGATIVES:
            raise InvalidRequest(f"at most {MAX_NEGATIVES} negative texts")
        for negative in self.negatives:
            if not negative.strip() or len(negative) > MAX_QUERY_CHARS:
                raise InvalidRequest("negative texts must be 1 to 1000 characters")
        weights = [self.text_weight, self.negative_weight, *(e.weight for e in self.examples)]
        if any(not 0.0 <= w <= MAX_WEIGHT for w in weights):
            raise InvalidRequest(f"weights must be between 0 and {MAX_WEIGHT}")
        positive = (self.text or "").strip() and self.text_weight > 0
        if not positive and not any(e.weight > 0 for e in self.examples):
            raise InvalidRequest("give a text or an example image with a weight above 0")


class SearchService:
    def __init__(self, ctx: ServiceContext, *, text_cache: TextEmbeddingCache | None = None):
        self.ctx = ctx
        self.text_cache = text_cache or TextEmbeddingCache()
        self.captions = caption_embedder(ctx.settings)  # None: the caption space is off

    def search_text(self, query: str, *, model: ModelKey, options: SearchOptions) -> SearchOutcome:
        text = query.strip()
        if not text:
            raise InvalidRequest("query must not be empty")
        return self.search_combined(CombinedQuery(text=text), model=model, options=options)

    def search_image(
        self, source: bytes | Path, *, model: ModelKey, options: SearchOptions
    ) -> SearchOutcome:
        return self.search_combined(
            CombinedQuery(examples=(Example(source),)), model=model, options=options
        )

    def search_combined(
        self, query: CombinedQuery, *, model: ModelKey, options: SearchOptions
    ) -> SearchOutcome:
        """Text (read for people names and ``-negative`` words), example images and
        negative texts, fused with full-text matches on captions, titles and tags."""
        query.validate()
        options.validate()
        started = time.perf_counter()
        for example in query.examples:
            if isinstance(example.source, Path) and not example.source.is_file():
                # Checked before the model loads, and named in full: "photo.jpg" alone
                # does not say which folder was searched.
                raise InvalidRequest(f"no such image file: {example.source.absolute()}")
        # A missing or mismatched collection is reported before paying for a model load.
        self._verify_collection(model)
        text = (query.text or "").strip()
        concept = ""
        recognised: tuple[str, ...] = ()
        negatives = list(query.negatives)
        if text:
            text, inline_negatives = split_negatives(text)
            negatives.extend(inline_negatives)
            concept = text
            if options.understand and text:
                options, concept, recognised = self._understand(text, options)
        stored = [e.source for e in query.examples if isinstance(e.source, UUID)]
        exclude = self._stored_vectors(model, stored)
        encoder = (
            self.ctx.encoder(model)
            if (text or negatives or len(exclude) < len(query.examples))
            else None
        )
        parts: list[tuple[float, FloatArray]] = []
        if text and query.text_weight > 0:
            assert encoder is not None
            # Only names: the filter selects the photos and a neutral vector orders them.
            parts.append((query.text_weight, self.text_vector(encoder, model, concept)))
        for example in query.examples:
            if isinstance(example.source, UUID):
                parts.append((example.weight, exclude[example.source]))
            else:
                assert encoder is not None
                loaded = load_image(
                    example.source,
                    max_pixels=self.ctx.settings.max_image_pixels,
                    min_side=encoder.image_size,
                )
                parts.append((example.weight, encoder.encode_images([loaded.image])[0]))
        for negative in negatives:
            assert encoder is not None
            parts.append((-query.negative_weight, self.text_cache.get(encoder, negative)))
        vector = _combine(parts)
        if exclude:  # "more like these" never returns the examples themselves
            base = options.search_filter or SearchFilter()
            options = dataclasses.replace(
                options,
                search_filter=dataclasses.replace(base, exclude_ids=(*base.exclude_ids, *exclude)),
            )
        understood = _understood(
            query.text.strip() if query.text else None,
            concept if query.text else None,
            options,
            recognised,
        )
        understood = dataclasses.replace(
            understood, negative=tuple(negatives), examples=len(query.examples)
        )
        text_ids: list[UUID] = []
        caption_hits: list[tuple[UUID, float]] = []
        if concept and query.text_weight > 0:
            with self.ctx.transaction() as session:
                text_ids = meta_repo.text_matches(session, concept, limit=TEXT_CANDIDATES)
            caption_hits = self._caption_hits(concept)
            if caption_hits and not self.ctx.settings.caption_full_text:
                text_ids = []  # the caption space matched the same words by meaning
        return self._search(
            vector,
            model=model,
            options=options,
            started=started,
            # A probability is only meaningful for one plain text against an image.
            text=bool(text) and not query.examples and not negatives,
            # The floors are calibrated for that too, and a query of names only is
            # ordered by a neutral text that no floor fits.
            floored=bool(concept) and not query.examples and not negatives,
            understood=dataclasses.replace(
                understood, full_text=bool(text_ids), caption_space=bool(caption_hits)
            ),
            text_ids=text_ids,
            caption_hits=caption_hits,
        )

    def text_vector(self, encoder: Encoder, model: ModelKey, concept: str) -> FloatArray:
        """The concept's text embedding; with prompt templates configured for the model,
        the normalised mean of the templates' embeddings (a prompt ensemble)."""
        if not concept:  # only names: the filter selects, a neutral text orders
            return self.text_cache.get(encoder, PEOPLE_ONLY_CONCEPT)
        templates = prompt_templates(self.ctx.settings, model)
        if not templates:
            return self.text_cache.get(encoder, concept)
        return _combine(
            [(1.0, self.text_cache.get(encoder, t.replace("{}", concept))) for t in templates]
        )

    def _caption_hits(self, concept: str) -> list[tuple[UUID, float]]:
        """The caption space's ranking for ``concept`` (asset id, caption cosine), best
        first; empty while it is off, empty or unreachable (the search goes on without
        it). A collection stamped for another text model is a ModelMismatch."""
        if self.captions is None:
            return []
        spec = caption_collection(self.ctx.settings, self.captions)
        if not self.ctx.store.has_collection(spec.name):
            return []
        verify_collection(self.ctx.store, spec)
        try:
            vector = self.captions.embed_query(concept)
        except CaptionEmbeddingFailed as exc:
            logger.warning("caption space left out of a search: %s", exc)
            return []
        hits = self.ctx.store.search(
            spec.name,
            vector,
            limit=TEXT_CANDIDATES,
            min_score=self.ctx.settings.caption_min_score,
        )
        return [(h.id, h.score) for h in hits]

    def _understand(
        self, text: str, options: SearchOptions
    ) -> tuple[SearchOptions, str, tuple[str, ...]]:
        with self.ctx.transaction() as session:
            known = meta_repo.known_people(session)
        parsed = understand(text, known) if known else None
        if parsed is None or not parsed.people:
            return options, text, ()
        base = options.search_filter or SearchFilter()
        people = tuple(dict.fromkeys((*base.people, *parsed.people_keys)))
        options = dataclasses.replace(
            options, search_filter=dataclasses.replace(base, people=people)
        )
        return options, parsed.concept, parsed.people

    def _stored_vectors(self, model: ModelKey, ids: Sequence[UUID]) -> dict[UUID, FloatArray]:
        if not ids:
            return {}
        collection = self.ctx.spec(model).collection
        with self.ctx.transaction() as session:
            assets = repo.get_assets(session, ids)
        for asset_id in ids:
            asset = assets.get(asset_id)
            if asset is None or asset.status == AssetStatus.MISSING:
                raise AssetNotFound(f"asset {asset_id} not found")
        stored = self.ctx.store.retrieve_vectors(collection, list(ids))
        for asset_id in ids:
            if asset_id not in stored:
                raise AssetNotFound(
                    f"asset {asset_id} has no vector in {collection!r} yet (not embedded by "
                    f"{model})"
                )
        return stored

    def search_similar(
        self, asset_id: UUID, *, model: ModelKey, options: SearchOptions
    ) -> SearchOutcome:
        return self.search_combined(
            CombinedQuery(examples=(Example(asset_id),)), model=model, options=options
        )

    def _verify_collection(self, model: ModelKey) -> None:
        spec = self.ctx.collection_spec(model)
        try:
            self.ctx.verify_collection(model)
        except CollectionMissing:
            if model == BASELINE:
                how = "Run `image-search index FOLDER` first (or upload photos to /api/v1/assets)"
            else:  # indexing fills the baseline; the candidate is filled by re-embedding
                how = (
                    f"Run `image-search reembed --to {model}` (or `image-search index "
                    f"FOLDER --model {model}`) first"
                )
            raise CollectionMissing(
                f"nothing indexed yet for {model}: collection {spec.name!r} does not exist. "
                f"{how}; the library is in {self.ctx.settings.data_dir.absolute()} (DATA_DIR)"
            ) from None

    def _search(
        self,
        vector: np.ndarray[Any, Any],
        *,
        model: ModelKey,
        options: SearchOptions,
        started: float,
        text: bool = False,
        floored: bool = False,
        understood: Understood | None = None,
        text_ids: Sequence[UUID] = (),
        caption_hits: Sequence[tuple[UUID, float]] = (),
    ) -> SearchOutcome:
        spec = self.ctx.spec(model)
        query = vector.astype(np.float32)
        floor = self._relevance_floor(model) if floored and options.min_score is None else None
        if floor is not None:
            options = dataclasses.replace(options, min_score=floor)
        ranked: list[tuple[UUID, float, tuple[Space, ...], float | None]]
        if not text_ids and not caption_hits:
            hits = self.ctx.store.search(
                spec.collection,
                query,
                limit=options.limit,
                offset=options.offset,
                search_filter=options.search_filter,
                min_score=options.min_score,
            )
            ranked = [(h.id, h.score, ("image",), None) for h in hits]
        else:
            ranked = self._fused(spec.collection, query, options, text_ids, caption_hits)
        close = True
        if floor is not None and not ranked and options.offset == 0:
            # Nothing is a close match: the nearest few, offered as such.
            nearest = self.ctx.store.search(
                spec.collection,
                query,
                limit=min(options.limit, NEAREST_FEW),
                search_filter=options.search_filter,
            )
            ranked = [(h.id, h.score, ("image",), None) for h in nearest]
            close = False
        encoder = self.ctx.encoder(model) if text else None
        ids = [r[0] for r in ranked]
        with self.ctx.transaction() as session:
            assets = repo.get_assets(session, ids)
            labels = meta_repo.labels_for(session, ids)
        results = []
        for asset_id, score, spaces, fused in ranked:
            asset = assets.get(asset_id)
            if asset is None or asset.status != AssetStatus.ACTIVE:
                continue  # a point whose asset was deleted meanwhile: never show it
            results.append(
                SearchHit(
                    asset_id=asset_id,
                    path=asset.path,
                    score=score,
                    calibrated_score=encoder.calibrated_score(score) if encoder else None,
                    width=asset.width,
                    height=asset.height,
                    format=asset.format,
                    taken_at=asset.taken_at,  # UTC-aware: db.models.UtcTimestamp
                    labels=labels.get(asset_id, AssetLabels()),
                    matched_by=matched_by(spaces),
                    spaces=spaces,
                    fused_score=fused,
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
            understood=understood,
            relevance_floor=options.min_score
            if options.min_score is not None and options.min_score > -1.0
            else None,
            close_matches=close,
        )

    def _relevance_floor(self, model: ModelKey) -> float | None:
        """The model's floor as a cosine (a probability through its own calibration)."""
        floor = relevance_floor(self.ctx.settings, model)
        if floor is None:
            return None
        if floor.probability is not None:
            return self.ctx.encoder(model).cosine_at(floor.probability)
        return floor.cosine

    def _fused(
        self,
        collection: str,
        vector: FloatArray,
        options: SearchOptions,
        text_ids: Sequence[UUID],
        caption_hits: Sequence[tuple[UUID, float]],
    ) -> list[tuple[UUID, float, tuple[Space, ...], float | None]]:
        """The visual ranking fused with the full-text and caption-space rankings
        (fusion.py). Every list obeys the filters: the word matches are scored by the
        image collection restricted to them, so a caption match that lacks the people
        asked for is out."""
        depth = options.offset + options.limit
        visual = self.ctx.store.search(
            collection,
            vector,
            limit=max(depth, FUSION_DEPTH),
            search_filter=options.search_filter,
            min_score=options.min_score,
        )
        words = list(dict.fromkeys([*text_ids, *(i for i, _ in caption_hits)]))
        base = options.search_filter or SearchFilter()
        allowed = self.ctx.store.search(
            collection,
            vector,
            limit=len(words),
            search_filter=dataclasses.replace(base, include_ids=tuple(words)),
        )
        scores = {h.id: h.score for h in allowed}
        scores.update((h.id, h.score) for h in visual)
        fused = fuse(
            visual=[h.id for h in visual],
            full_text=[i for i in text_ids if i in scores],
            caption=[(i, c) for i, c in caption_hits if i in scores],
            image_scores=scores,
            method=self.ctx.settings.caption_fusion,
            caption_weight=self.ctx.settings.caption_weight,
            caption_floor=caption_floor(self.ctx.settings.caption_min_score, caption_hits),
        )
        return [
            (f.asset_id, scores[f.asset_id], f.spaces, f.score)
            for f in fused[options.offset : depth]
        ]


def _combine(parts: Sequence[tuple[float, FloatArray]]) -> FloatArray:
    """The normalised weighted sum of unit vectors (negative weights push away)."""
    if not parts:
        raise InvalidRequest("the query has nothing to search for")
    total = np.zeros_like(np.asarray(parts[0][1], dtype=np.float32))
    for weight, vector in parts:
        unit = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(unit))
        if norm > 0:
            total += weight * unit / norm
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise InvalidRequest("the query's parts cancel out; change their weights")
    result: FloatArray = total / norm
    return result


def _understood(
    query: str | None, concept: str | None, options: SearchOptions, recognised: tuple[str, ...]
) -> Understood:
    f = options.search_filter or SearchFilter()
    return Understood(
        query=query,
        concept=concept,
        people=f.people,
        people_any=f.people_any,
        tags=f.tags,
        recognised_people=recognised,
    )


def caption_floor(min_score: float, hits: Sequence[tuple[UUID, float]]) -> float:
    """What a photo outside the caption hits scored at most: below the list's last
    cosine when the list was cut at TEXT_CANDIDATES, else below ``min_score``."""
    if len(hits) >= TEXT_CANDIDATES:
        return min(score for _, score in hits)
    return min_score


def prompt_templates(settings: Settings, model: ModelKey) -> list[str]:
    """The model's prompt ensemble (CLIP_/SIGLIP_PROMPT_TEMPLATES); empty: none."""
    return settings.clip_prompt_templates if model == BASELINE else settings.siglip_prompt_templates


def name_filter(names: Sequence[str] | None) -> tuple[str, ...]:
    """Names a client gave (people or tags) as the normalised keys payloads hold."""
    keys = (normalise_name(n) for n in names or ())
    return tuple(dict.fromkeys(k for k in keys if k))
