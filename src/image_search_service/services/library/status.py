"""Library and per-model status: counts, collections, coverage."""

from __future__ import annotations

from dataclasses import dataclass

from image_search_service.captions.space import caption_collection, caption_embedder
from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.disk import DiskState
from image_search_service.core.specs import ModelIdentity, ModelSpec
from image_search_service.db import caption_repository as caption_repo
from image_search_service.db import repository as repo
from image_search_service.db.caption_repository import CaptionCoverage
from image_search_service.vector.base import CollectionInfo


@dataclass(frozen=True)
class EncoderState:
    """What this process knows of a model's encoder without loading it."""

    loaded: bool
    precision: dict[str, str] | None  # per tower, e.g. {"image": "onnx-int8", ...}
    int8_refused: str | None
    cpu_isa: str | None  # the CPU class INT8 is chosen and verified for
    int8_decision: str | None = None  # each INT8 method tried: accepted/refused, measured


@dataclass(frozen=True)
class ModelStatus:
    """One model's collection and coverage; read as ``ModelStatusOut``."""

    model: ModelKey
    collection: str
    configured_model: ModelIdentity
    configured_runtime: str  # what would encode now, e.g. "onnx-int8"
    counts: repo.Coverage
    info: CollectionInfo | None
    identity_matches: bool | None  # None: no collection
    encoder: EncoderState

    @property
    def model_loaded(self) -> bool:
        return self.encoder.loaded

    @property
    def precision(self) -> dict[str, str] | None:
        return self.encoder.precision

    @property
    def int8_refused(self) -> str | None:
        return self.encoder.int8_refused

    @property
    def cpu_isa(self) -> str | None:
        return self.encoder.cpu_isa

    @property
    def int8_decision(self) -> str | None:
        return self.encoder.int8_decision

    @property
    def exists(self) -> bool:
        return self.info is not None

    @property
    def embedded(self) -> int:
        return self.counts.done

    @property
    def failed(self) -> int:
        return self.counts.failed

    @property
    def pending(self) -> int:
        return self.counts.pending

    @property
    def coverage(self) -> float:
        return round(self.counts.ratio, 4)

    @property
    def points(self) -> int:
        return self.info.points if self.info is not None else 0

    @property
    def model_identity(self) -> ModelIdentity | None:
        return self.info.identity if self.info is not None else None

    @property
    def dim(self) -> int | None:
        return self.info.dim if self.info is not None else None

    @property
    def distance(self) -> str | None:
        return self.info.distance if self.info is not None else None

    @property
    def quantization(self) -> str | None:
        return self.info.quantization if self.info is not None else None

    @property
    def hnsw(self) -> dict[str, int | None] | None:
        if self.info is None:
            return None
        return {"m": self.info.hnsw_m, "ef_construct": self.info.hnsw_ef_construct}

    @property
    def runtimes(self) -> list[str]:
        return list(self.info.runtimes) if self.info is not None else []


@dataclass(frozen=True)
class LibraryStatus:
    """Asset counts and each model's status; read as ``LibraryStatusOut``."""

    library: repo.LibraryCounts
    searchable: int
    models: dict[ModelKey, ModelStatus]
    vector_store: str
    database: str
    disk: DiskState
    captions: CaptionStatus | None = None  # None: the caption space is off

    @property
    def assets(self) -> int:
        return self.searchable

    @property
    def indexing(self) -> int:
        return self.library.active - self.searchable

    @property
    def assets_total(self) -> int:
        return self.library.total

    @property
    def failed(self) -> int:
        return self.library.failed

    @property
    def missing(self) -> int:
        return self.library.missing


@dataclass(frozen=True)
class CaptionStatus:
    """The caption space's coverage; read as ``CaptionStatusOut``."""

    embedder: str
    collection: str
    counts: CaptionCoverage
    points: int

    @property
    def with_text(self) -> int:
        return self.counts.with_text

    @property
    def embedded(self) -> int:
        return self.counts.done

    @property
    def pending(self) -> int:
        return self.counts.pending

    @property
    def last_error(self) -> str | None:
        return self.counts.last_error


def caption_status(ctx: ServiceContext) -> CaptionStatus | None:
    """Read from the DB and the store only: status never calls Ollama."""
    embedder = caption_embedder(ctx.settings)
    if embedder is None:
        return None
    embedder.close()
    spec = caption_collection(ctx.settings, embedder)
    with ctx.transaction() as session:
        counts = caption_repo.caption_coverage(session, embedder.identity)
    info = ctx.store.collection_info(spec.name)
    return CaptionStatus(
        embedder=embedder.identity.describe(),
        collection=spec.name,
        counts=counts,
        points=info.points if info else 0,
    )


def encoder_state(ctx: ServiceContext, spec: ModelSpec) -> EncoderState:
    """What the encoder this process already made for ``spec`` says. Never makes or loads
    one: ``ctx.encoder()`` would (importing torch, and minutes of export on a first start)."""
    encoder = ctx.encoders.peek(spec)
    isa = getattr(encoder, "cpu_isa", None)
    if isa is None and ctx.encoders.runtime == "onnx-int8":
        from image_search_service.encoders.cpu import cpu_isa

        try:
            isa = cpu_isa()  # as the encoder will resolve it (ONNX_CPU_ISA, else detected)
        except ValueError:  # a bad ONNX_CPU_ISA: the encoder will say so when it is made
            isa = None
    if encoder is None or not encoder.loaded:
        return EncoderState(loaded=False, precision=None, int8_refused=None, cpu_isa=isa)
    towers: dict[str, str] | None = getattr(encoder, "tower_runtimes", None)
    return EncoderState(
        loaded=True,
        precision=towers or {"image": encoder.runtime, "text": encoder.runtime},
        int8_refused=getattr(encoder, "int8_refused", None),
        cpu_isa=isa,
        int8_decision=getattr(encoder, "int8_decision", None),
    )


def library_status(ctx: ServiceContext) -> LibraryStatus:
    with ctx.transaction() as session:
        library = repo.library_counts(session)
        coverages = {
            key: repo.coverage(session, ctx.spec(key), library=library) for key in MODEL_KEYS
        }
        searchable = repo.count_searchable(session, [ctx.spec(key) for key in MODEL_KEYS])
    models = {}
    for key in MODEL_KEYS:
        spec = ctx.spec(key)
        info = ctx.store.collection_info(spec.collection)
        models[key] = ModelStatus(
            model=key,
            collection=spec.collection,
            configured_model=spec.identity,
            configured_runtime=ctx.encoders.runtime,
            counts=coverages[key],
            info=info,
            identity_matches=None if info is None else info.identity == spec.identity,
            encoder=encoder_state(ctx, spec),
        )
    return LibraryStatus(
        library=library,
        searchable=searchable,
        models=models,
        vector_store=ctx.store.kind,
        database=ctx.engine.url.get_backend_name(),
        disk=ctx.disk.state(),
        captions=caption_status(ctx),
    )
