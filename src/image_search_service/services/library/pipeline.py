"""Decode -> encode -> upsert -> record, for a list of assets and one or more models.

Decoding (and each model's preprocessing) runs in a bounded pool ahead of the model,
in order, so the forward pass is the only thing the caller waits for: threads by default
(the JPEG decoder and Pillow's resize release the GIL), or ``decode_processes`` worker
processes where threads stop scaling (each gets the encoders' picklable batch
preprocessing, never the models). Used by folder indexing, uploads and re-embedding
jobs alike.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import ModelKey
from image_search_service.core.errors import ImageTooLarge, UnsupportedImage
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.metadata_repository import AssetLabels
from image_search_service.db.session import session_scope
from image_search_service.encoders.base import Encoder
from image_search_service.images.loading import ImageMeta, load_image
from image_search_service.images.metadata import PhotoMetadata, read_metadata, sidecar_signature
from image_search_service.vector.base import VectorPoint, VectorStore
from image_search_service.vector.schema import point_payload

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetRef:
    id: UUID
    path: Path


@dataclass
class PipelineResult:
    done: int = 0
    failed: int = 0
    failures: list[tuple[UUID, str]] = field(default_factory=list)
    encode_seconds: float = 0.0
    vanished: list[UUID] = field(default_factory=list)  # files gone before they were read


@dataclass(frozen=True)
class _Decoded:
    ref: AssetRef
    meta: ImageMeta | None
    tensors: dict[ModelKey, Any] | None  # each encoder's preprocessed input
    error: str | None
    photo: PhotoMetadata | None = None  # people, tags, caption, title (never fails)
    sidecar: str | None = None
    vanished: bool = False  # the file was deleted or moved away before it was read


ProgressFn = Callable[[int], None]
# Each model's per-image preprocessing: the encoder's own (threads), or its picklable
# BatchPreprocess (processes); both make what the encoder's encode_preprocessed takes.
Preprocessors = Mapping[ModelKey, Callable[[Image.Image], Any]]


def _decode(
    ref: AssetRef, preprocessors: Preprocessors, min_side: int, max_pixels: int
) -> _Decoded:
    try:
        loaded = load_image(ref.path, max_pixels=max_pixels, min_side=min_side)
        tensors = {key: prepare(loaded.image) for key, prepare in preprocessors.items()}
        photo = read_metadata(ref.path)
        return _Decoded(ref, loaded.meta, tensors, None, photo, sidecar_signature(ref.path))
    except (UnsupportedImage, ImageTooLarge) as exc:
        if not ref.path.exists():
            # Not unreadable: gone (a watched folder changing under us, an unmounted disk).
            # It stays pending; the next index run marks it missing or embeds it.
            return _Decoded(ref, None, None, None, vanished=True)
        return _Decoded(ref, None, None, exc.detail)
    except Exception as exc:  # one file's failure, whatever it is, never the batch's
        logger.warning("cannot prepare %s: %s: %s", ref.path, type(exc).__name__, exc)
        return _Decoded(ref, None, None, f"{ref.path.name}: {type(exc).__name__}: {exc}")


def decode_pool(
    encoders: Sequence[Encoder], *, workers: int, processes: int
) -> tuple[Executor, Preprocessors]:
    """The pool that decodes ahead and what it preprocesses with: ``processes`` worker
    processes when asked for and every encoder's preprocessing can travel to them
    (see :mod:`image_search_service.encoders.preprocess`), else ``workers`` threads."""
    if processes > 0:
        portable = {enc.spec.key: getattr(enc, "batch_preprocess", None) for enc in encoders}
        if all(portable.values()):
            # forkserver: a clean child, never a fork of a process holding model threads.
            context = multiprocessing.get_context("forkserver")
            return ProcessPoolExecutor(processes, mp_context=context), portable  # type: ignore[return-value]
        logger.info("decoding in threads: a model's preprocessing cannot run in a process")
    threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    return threads, {enc.spec.key: enc.preprocess for enc in encoders}


def _decoded_in_order(
    refs: Sequence[AssetRef],
    encoders: Sequence[Encoder],
    *,
    workers: int,
    processes: int = 0,
    max_pixels: int,
    lookahead: int,
) -> Iterator[_Decoded]:
    """Decode ahead in the pool, yielding in input order, never holding more than
    ``lookahead`` decoded images in memory."""
    min_side = max(enc.image_size for enc in encoders)
    pool, preprocessors = decode_pool(encoders, workers=workers, processes=processes)
    with pool:
        pending: deque[Future[_Decoded]] = deque()
        items = iter(refs)
        for ref in items:
            pending.append(pool.submit(_decode, ref, preprocessors, min_side, max_pixels))
            if len(pending) >= lookahead:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(items, None)
            if nxt is not None:
                pending.append(pool.submit(_decode, nxt, preprocessors, min_side, max_pixels))
            yield result


def embed_assets(
    refs: Sequence[AssetRef],
    *,
    encoders: Sequence[Encoder],
    store: VectorStore,
    session_factory: sessionmaker[Session],
    batch_size: int,
    decode_workers: int,
    max_pixels: int,
    on_progress: ProgressFn | None = None,
    before_write: Callable[[], None] | None = None,
    decode_processes: int = 0,
) -> PipelineResult:
    """Embed ``refs`` with every encoder; one bad file fails alone with its reason.
    ``before_write`` runs before each batch is stored and may stop the run by raising
    (the disk's reserve): what was stored stays, the rest stays pending."""
    result = PipelineResult()
    if not refs or not encoders:
        return result
    for enc in encoders:
        enc.load()  # before the threads start, so the first batch pays no surprise
        store.note_runtime(enc.spec.collection, enc.runtime)
    # A GPU wants bigger batches than the CPU default (idle between small launches).
    batch_size = max([batch_size, *(getattr(e, "preferred_batch_size", 0) for e in encoders)])
    batch: list[_Decoded] = []
    decoded = _decoded_in_order(
        refs,
        encoders,
        workers=decode_workers,
        processes=decode_processes,
        max_pixels=max_pixels,
        lookahead=max(2 * batch_size, max(decode_workers, decode_processes) * 2),
    )
    failed_batch: list[_Decoded] = []
    for item in decoded:
        if item.vanished:  # left pending here; the caller decides (see run_batch)
            result.vanished.append(item.ref.id)
            continue
        if item.error is not None:
            failed_batch.append(item)
        else:
            batch.append(item)
        if len(batch) >= batch_size or len(failed_batch) >= batch_size:
            if before_write is not None:
                before_write()
            _flush(batch, failed_batch, encoders, store, session_factory, result, on_progress)
            batch, failed_batch = [], []
    if before_write is not None and (batch or failed_batch):
        before_write()
    _flush(batch, failed_batch, encoders, store, session_factory, result, on_progress)
    return result


def _flush(
    batch: list[_Decoded],
    failed: list[_Decoded],
    encoders: Sequence[Encoder],
    store: VectorStore,
    session_factory: sessionmaker[Session],
    result: PipelineResult,
    on_progress: ProgressFn | None,
) -> None:
    if not batch and not failed:
        return
    vectors_by_key = {}
    labels: dict[UUID, AssetLabels] = {}
    if batch:
        # What the file says, merged with the user's edits, before the vectors: the
        # payload carries the people and tags search filters on.
        with session_scope(session_factory) as session:
            meta_repo.apply_files_metadata(
                session, [(d.ref.id, d.photo, d.sidecar) for d in batch if d.photo is not None]
            )
            labels = meta_repo.labels_for(session, [d.ref.id for d in batch])
        started = time.perf_counter()
        for enc in encoders:
            vectors = enc.encode_preprocessed([d.tensors[enc.spec.key] for d in batch if d.tensors])
            vectors_by_key[enc.spec.key] = vectors
        result.encode_seconds += time.perf_counter() - started
        for enc in encoders:
            points = []
            for d, vec in zip(batch, vectors_by_key[enc.spec.key], strict=True):
                assert d.meta is not None
                own = labels.get(d.ref.id, AssetLabels())
                payload = point_payload(d.ref.id, d.meta, people=own.people_keys, tags=own.tag_keys)
                points.append(VectorPoint(id=d.ref.id, vector=vec, payload=payload))
            store.upsert(enc.spec.collection, points)
    # The vectors are stored before the DB says "done": a crash in between leaves
    # "pending", which the next run redoes (upserts are idempotent by asset id).
    with session_scope(session_factory) as session:
        for enc in encoders:  # first: it loads the batch's assets for record_metadata
            repo.mark_embedded(session, [d.ref.id for d in batch], enc.spec)
        for d in batch:
            assert d.meta is not None
            repo.record_metadata(session, d.ref.id, d.meta)
        for d in failed:
            assert d.error is not None
            repo.record_unreadable(session, d.ref.id, d.error)
            for enc in encoders:
                repo.mark_embedding_failed(session, d.ref.id, enc.spec, d.error)
    result.done += len(batch)
    result.failed += len(failed)
    result.failures.extend((d.ref.id, d.error or "") for d in failed)
    if on_progress:
        on_progress(len(batch) + len(failed))
