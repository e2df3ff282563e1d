"""Re-embedding a library with one model: plan, the job body, progress.

Runner-agnostic. RQ jobs (``jobs.tasks``) and the in-process runner (``jobs.runner``)
both call :func:`run_batch`, which re-reads each asset's state, so running a batch
twice, or after a crash, never duplicates work or points (point id = asset UUID).

Progress comes from the metadata DB alone (per-asset state and its ``updated_at``), so it
is the same whichever runner did the work; the RQ queue is reported on top when
``REDIS_URL`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import DatabaseUnavailable, VectorStoreUnavailable
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.db.session import session_scope
from image_search_service.services.context import ServiceContext
from image_search_service.services.pipeline import AssetRef, ProgressFn, embed_assets
from image_search_service.vector.base import VectorStore

logger = logging.getLogger(__name__)

QUEUE_NAME = "reembed"
DEFAULT_JOB_SIZE = 64  # asset ids per job: small enough to retry cheaply, big enough to batch
RATE_WINDOW = timedelta(minutes=5)

# Worth retrying: the service or the network, not the data. Anything else is a bug or a
# configuration error (wrong model, missing collection) that a retry cannot fix.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    VectorStoreUnavailable,
    DatabaseUnavailable,
    OperationalError,
    ConnectionError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


@dataclass
class BatchResult:
    model: str
    requested: int = 0
    skipped: int = 0  # already done, deleted or missing
    done: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- planning -------------------------------------------------------------------------
def plan_asset_ids(
    session: Session, spec: ModelSpec, *, force: bool = False, only_failed: bool = False
) -> list[UUID]:
    """Assets a run for ``spec`` should process, oldest first: the pending ones (every
    present asset this exact model has neither embedded nor given up on; failures wait
    for ``retry-failed``), all of them with ``force``, or only the failed ones."""
    return repo.asset_ids_to_embed(session, spec, force=force, only_failed=only_failed)


def chunked(ids: Sequence[UUID], size: int) -> list[list[UUID]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


GONE_REASON = (
    "the file is gone since the library was indexed: run `image-search index` to update "
    "the library (or put the file back, then `image-search reembed retry-failed`)"
)


# -- the job body ---------------------------------------------------------------------
def run_batch(
    ctx: ServiceContext,
    key: ModelKey,
    asset_ids: Sequence[UUID],
    *,
    force: bool = False,
    final_attempt: bool = True,
    on_progress: ProgressFn | None = None,
) -> BatchResult:
    """Embed ``asset_ids`` with one model: decode, encode, upsert, record per asset.

    Raises only what a retry might fix (see :data:`TRANSIENT_ERRORS`) or what no retry
    can (``ModelMismatch``, ``CollectionMissing``). On the ``final_attempt`` a transient
    error is also written to each unfinished asset, so ``reembed status`` lists it and
    ``reembed retry-failed`` picks it up.
    """
    started = time.perf_counter()
    spec = ctx.spec(key)
    result = BatchResult(model=key, requested=len(asset_ids))
    try:
        # Fail the batch before any work if the collection is gone or holds another model.
        ctx.verify_collection(key)
        with ctx.transaction() as session:
            refs = _refs_to_embed(session, spec, asset_ids, force=force)
        result.skipped = len(asset_ids) - len(refs)
        if on_progress and result.skipped:
            on_progress(result.skipped)
        outcome = embed_assets(
            refs,
            encoders=[ctx.encoder(key)],
            store=ctx.store,
            session_factory=ctx.session_factory,
            batch_size=ctx.settings.batch_size,
            decode_workers=ctx.threads.decode_workers,
            max_pixels=ctx.settings.max_image_pixels,
            on_progress=on_progress,
        )
    except TRANSIENT_ERRORS as exc:
        if final_attempt:
            _record_gave_up(ctx.session_factory, spec, asset_ids, exc)
        raise
    failures = list(outcome.failures)
    if outcome.vanished:
        # Left pending, the run would never finish: nothing but an index run changes a
        # gone file. Failed for this model instead, with what to do; `retry-failed`
        # takes it up again once the file is back.
        with ctx.transaction() as session:
            for asset_id in outcome.vanished:
                repo.mark_embedding_failed(session, asset_id, spec, GONE_REASON)
        failures += [(asset_id, GONE_REASON) for asset_id in outcome.vanished]
        if on_progress:
            on_progress(len(outcome.vanished))
    result.done, result.failed = outcome.done, outcome.failed + len(outcome.vanished)
    paths = {r.id: str(r.path) for r in refs}
    result.failures = [
        {"asset_id": str(i), "path": paths[i], "error": reason} for i, reason in failures
    ]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _refs_to_embed(
    session: Session, spec: ModelSpec, asset_ids: Sequence[UUID], *, force: bool
) -> list[AssetRef]:
    """Re-read state now, not when the job was queued: other jobs, an index run or a
    delete may have got there first."""
    assets = repo.get_assets(session, list(asset_ids))
    done = set() if force else repo.done_asset_ids(session, spec, list(assets))
    return [
        AssetRef(asset.id, Path(asset.path))
        for asset_id in asset_ids
        if (asset := assets.get(asset_id)) is not None
        and asset.status != AssetStatus.MISSING
        and asset_id not in done
    ]


def _record_gave_up(
    session_factory: sessionmaker[Session], spec: ModelSpec, ids: Sequence[UUID], exc: BaseException
) -> None:
    reason = f"gave up after retries: {type(exc).__name__}: {exc}"[:2000]
    try:
        with session_scope(session_factory) as session:
            done = repo.done_asset_ids(session, spec, ids)
            for asset_id in ids:
                if asset_id not in done:
                    repo.mark_embedding_failed(session, asset_id, spec, reason)
    except OperationalError:
        # The DB itself is what failed: the assets stay pending and the next
        # `image-search reembed` run picks them up.
        logger.warning("could not record the failure of %d assets: the DB is down", len(ids))


# -- progress -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelProgress:
    """One model's share of the library (:class:`repo.Coverage`), its recent rate, and
    its collection as the store sees it (None: not read)."""

    model: ModelKey
    collection: str
    model_name: str
    coverage: repo.Coverage
    rate: float  # assets finished per second over the last minutes
    last_activity: datetime | None
    collection_exists: bool | None = None
    points: int | None = None

    @property
    def total(self) -> int:
        return self.coverage.present

    @property
    def done(self) -> int:
        return self.coverage.done

    @property
    def failed(self) -> int:
        return self.coverage.failed

    @property
    def pending(self) -> int:
        return self.coverage.pending

    @property
    def eta_seconds(self) -> float | None:
        if self.pending == 0:
            return 0.0
        return round(self.pending / self.rate, 1) if self.rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "collection": self.collection,
            "model_name": self.model_name,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "coverage": round(self.coverage.ratio, 4),
            "rate": round(self.rate, 3),
            "eta_seconds": self.eta_seconds,
            "last_activity": self.last_activity.isoformat() if self.last_activity else None,
            "collection_exists": self.collection_exists,
            "points": self.points,
        }


@dataclass(frozen=True)
class QueueSnapshot:
    name: str
    queued: int = 0
    started: int = 0
    scheduled_retries: int = 0
    failed_jobs: int = 0
    workers: int = 0
    error: str | None = None

    @property
    def busy(self) -> bool:
        return bool(self.queued or self.started or self.scheduled_retries)


@dataclass(frozen=True)
class ReembedProgress:
    """Progress per model, with the ``target`` model (the migration) as the headline."""

    target: ModelKey
    models: dict[ModelKey, ModelProgress]
    runner: str  # "rq" or "in-process"
    queue: QueueSnapshot | None
    vector_store_error: str | None = None
    note: str | None = None

    @property
    def headline(self) -> ModelProgress:
        return self.models[self.target]

    @property
    def complete(self) -> bool:
        return self.headline.pending == 0

    @property
    def finished(self) -> bool:
        """Complete, and nothing is left queued or waiting to retry."""
        return self.complete and not (self.queue is not None and self.queue.busy)

    def as_dict(self) -> dict[str, Any]:
        head = self.headline.as_dict()
        return {
            "target": self.target,
            **{k: head[k] for k in ("total", "done", "failed", "pending", "rate", "eta_seconds")},
            "coverage": head["coverage"],
            "complete": self.complete,
            "models": {key: m.as_dict() for key, m in self.models.items()},
            "runner": self.runner,
            "queue": asdict(self.queue) if self.queue is not None else None,
            "vector_store_error": self.vector_store_error,
            "note": self.note,
        }


def model_progress(
    session: Session, spec: ModelSpec, *, now: datetime | None = None
) -> ModelProgress:
    """Counts for one model, and its rate over the last few minutes from row timestamps."""
    now = now or datetime.now(UTC)
    activity = repo.recent_activity(session, spec, since=now - RATE_WINDOW)
    rate = 0.0
    if activity.finished and activity.oldest is not None:
        # Over the span actually worked in the window: a run that started a minute ago
        # is not diluted by four idle minutes before it, and a stalled one decays to 0.
        span = max((now - activity.oldest).total_seconds(), 1.0)
        rate = activity.finished / span
    return ModelProgress(
        model=spec.key,
        collection=spec.collection,
        model_name=spec.model_name,
        coverage=repo.coverage(session, spec),
        rate=rate,
        last_activity=activity.newest,
    )


def collect_progress(
    *,
    session_factory: sessionmaker[Session],
    specs: dict[ModelKey, ModelSpec],
    store: VectorStore | None,
    redis_url: str | None,
    target: ModelKey | None = None,
    note: str | None = None,
) -> ReembedProgress:
    """Progress per model plus a headline for the target (see :func:`reembed_progress`).

    ``store`` may be None (the embedded store is open in another process): collection
    existence and point counts are then reported as unknown.
    """
    with session_scope(session_factory) as session:
        models = {key: model_progress(session, specs[key]) for key in MODEL_KEYS}
    store_error = None
    if store is not None:
        for key, entry in models.items():
            try:
                info = store.collection_info(specs[key].collection)
            except VectorStoreUnavailable as exc:  # progress is DB-derived; report, go on
                store_error = exc.detail
                break
            models[key] = replace(
                entry,
                collection_exists=info is not None,
                points=info.points if info is not None else None,
            )
    return ReembedProgress(
        target=target or _default_target(models),
        models=models,
        runner="rq" if redis_url else "in-process",
        queue=queue_snapshot(redis_url) if redis_url else None,
        vector_store_error=store_error,
        note=note,
    )


def _default_target(models: dict[ModelKey, ModelProgress]) -> ModelKey:
    """The migration in progress: among models with a collection, the one with the most
    work left (ties: the later model, the candidate)."""
    existing = [k for k in MODEL_KEYS if models[k].collection_exists is not False]
    candidates = existing or list(MODEL_KEYS)
    return max(reversed(candidates), key=lambda k: models[k].pending)


def reembed_progress(ctx: ServiceContext, *, target: ModelKey | None = None) -> ReembedProgress:
    """For ``GET /api/v1/admin/reembed`` and ``image-search reembed status``.

    The ``target`` model (default: the existing collection with the most work left) is
    the headline; ``queue`` is the RQ picture when ``REDIS_URL`` is set (Redis is never
    contacted without it).
    """
    return collect_progress(
        session_factory=ctx.session_factory,
        specs=ctx.specs,
        store=ctx.store,
        redis_url=ctx.settings.redis_url,
        target=target,
    )


def queue_snapshot(redis_url: str) -> QueueSnapshot:
    """Job counts of the re-embedding queue; a down Redis is reported, not raised."""
    import redis
    from rq import Queue, Worker

    try:
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            queue = Queue(QUEUE_NAME, connection=connection)
            return QueueSnapshot(
                name=QUEUE_NAME,
                queued=queue.count,
                started=queue.started_job_registry.count,
                scheduled_retries=queue.scheduled_job_registry.count,
                failed_jobs=queue.failed_job_registry.count,
                workers=int(Worker.count(queue=queue)),
            )
        finally:
            connection.close()
    except redis.exceptions.RedisError as exc:
        return QueueSnapshot(name=QUEUE_NAME, error=f"Redis unreachable: {exc}")
