"""Decode -> encode -> upsert -> record, for a list of assets and one or more models.

Decoding (and each model's preprocessing) runs ahead of the model, in order, on every
decoder the machine has (:mod:`.decoding`: CPU threads or processes, and the GPU's JPEG
decoder where the models run there). Storing a batch (the files' metadata, the vector
upserts, then the DB marks) runs in one writer thread while the next batch is encoded, so
the forward pass is the only thing the caller's thread waits for. Used by folder
indexing, uploads and re-embedding jobs alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import DeviceDecodeMode
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.metadata_repository import AssetLabels
from image_search_service.db.session import session_scope
from image_search_service.encoders.base import Encoder, FloatArray
from image_search_service.encoders.device_decode import decoder_for
from image_search_service.services.library.decoding import AssetRef, Decoded, decoded_in_order
from image_search_service.vector.base import VectorPoint, VectorStore
from image_search_service.vector.schema import point_payload

logger = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    done: int = 0
    failed: int = 0
    failures: list[tuple[UUID, str]] = field(default_factory=list)
    encode_seconds: float = 0.0
    vanished: list[UUID] = field(default_factory=list)  # files gone before they were read


ProgressFn = Callable[[int], None]


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
    device_decode: DeviceDecodeMode = "auto",
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
    decoded = decoded_in_order(
        refs,
        encoders,
        workers=decode_workers,
        processes=decode_processes,
        max_pixels=max_pixels,
        lookahead=max(2 * batch_size, max(decode_workers, decode_processes) * 2),
        device=decoder_for(encoders, device_decode),
    )
    writer = _Writer(encoders, store, session_factory, result, on_progress)
    batch: list[Decoded] = []
    failed_batch: list[Decoded] = []
    # Closed here, not when the generator is collected: a run stopped by an error (the
    # disk's reserve, a failed write) stops its decode threads and processes at once.
    with contextlib.closing(decoded), contextlib.closing(writer):
        for item in decoded:
            if item.vanished:  # left pending here; the caller decides (see run_batch)
                result.vanished.append(item.ref.id)
                continue
            if item.error is not None:
                failed_batch.append(item)
            else:
                batch.append(item)
            if len(batch) >= batch_size or len(failed_batch) >= batch_size:
                writer.store(batch, failed_batch, before_write)
                batch, failed_batch = [], []
        if batch or failed_batch:
            writer.store(batch, failed_batch, before_write)
        writer.finish()
    return result


@dataclass
class _Encoded:
    batch: list[Decoded]
    failed: list[Decoded]
    vectors: dict[str, FloatArray]


class _Writer:
    """Encodes each batch on the caller's thread and stores it (the file's metadata, the
    vectors with their payloads, the DB marks) in one writer thread, so batch N is stored
    while batch N+1 is encoded. At most one batch waits to be stored;
    what storing raised comes back on the caller's thread, with progress and results."""

    def __init__(
        self,
        encoders: Sequence[Encoder],
        store: VectorStore,
        session_factory: sessionmaker[Session],
        result: PipelineResult,
        on_progress: ProgressFn | None,
    ):
        self._encoders = encoders
        self._store = store
        self._session_factory = session_factory
        self._result = result
        self._on_progress = on_progress
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._pending: tuple[Future[None], _Encoded] | None = None

    def store(
        self,
        batch: list[Decoded],
        failed: list[Decoded],
        before_write: Callable[[], None] | None,
    ) -> None:
        encoded = self._encode(batch, failed)
        self.finish()  # the previous batch is stored (or raises) before this one starts
        if before_write is not None:
            before_write()
        self._pending = (self._thread.submit(self._write, encoded), encoded)

    def finish(self) -> None:
        """Wait for the batch being stored; count it and tell the progress."""
        if self._pending is None:
            return
        future, encoded = self._pending
        self._pending = None
        future.result()
        result = self._result
        result.done += len(encoded.batch)
        result.failed += len(encoded.failed)
        result.failures.extend((d.ref.id, d.error or "") for d in encoded.failed)
        if self._on_progress:
            self._on_progress(len(encoded.batch) + len(encoded.failed))

    def close(self) -> None:
        """Stop the writer thread (after an error: once the batch in flight is done, what
        storing it raised said in the log; the caller's error is the one raised)."""
        self._thread.shutdown(wait=True)
        if self._pending is not None:
            future, encoded = self._pending
            self._pending = None
            if future.exception() is not None:
                logger.warning(
                    "storing a batch of %d photos also failed: %s",
                    len(encoded.batch) + len(encoded.failed),
                    future.exception(),
                )

    def _encode(self, batch: list[Decoded], failed: list[Decoded]) -> _Encoded:
        vectors: dict[str, FloatArray] = {}
        if batch:
            started = time.perf_counter()
            for enc in self._encoders:
                pixels = [d.tensors[enc.spec.key] for d in batch if d.tensors]
                vectors[enc.spec.key] = enc.encode_preprocessed(pixels)
            self._result.encode_seconds += time.perf_counter() - started
        return _Encoded(batch, failed, vectors)

    def _write(self, encoded: _Encoded) -> None:
        batch, failed = encoded.batch, encoded.failed
        labels: dict[UUID, AssetLabels] = {}
        if batch:
            # What the file says, merged with the user's edits, before the vectors: the
            # payload carries the people and tags search filters on.
            with session_scope(self._session_factory) as session:
                meta_repo.apply_files_metadata(
                    session,
                    [(d.ref.id, d.photo, d.sidecar) for d in batch if d.photo is not None],
                )
                labels = meta_repo.labels_for(session, [d.ref.id for d in batch])
        for enc in self._encoders:
            points = []
            for d, vec in zip(batch, encoded.vectors.get(enc.spec.key, []), strict=True):
                assert d.meta is not None
                own = labels.get(d.ref.id, AssetLabels())
                payload = point_payload(d.ref.id, d.meta, people=own.people_keys, tags=own.tag_keys)
                points.append(VectorPoint(id=d.ref.id, vector=vec, payload=payload))
            if points:
                self._store.upsert(enc.spec.collection, points)
        # The vectors are stored before the DB says "done": a crash in between leaves
        # "pending", which the next run redoes (upserts are idempotent by asset id).
        with session_scope(self._session_factory) as session:
            for enc in self._encoders:  # first: it loads the batch's assets for record_metadata
                repo.mark_embedded(session, [d.ref.id for d in batch], enc.spec)
            for d in batch:
                assert d.meta is not None
                repo.record_metadata(session, d.ref.id, d.meta)
            for d in failed:
                assert d.error is not None
                repo.record_unreadable(session, d.ref.id, d.error)
                for enc in self._encoders:
                    repo.mark_embedding_failed(session, d.ref.id, enc.spec, d.error)
