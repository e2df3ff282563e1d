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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import DatabaseUnavailable, VectorStoreUnavailable
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetEmbedding, AssetStatus, EmbeddingState
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
def _done_by(spec: ModelSpec) -> Any:
    return and_(
        AssetEmbedding.state == EmbeddingState.DONE,
        AssetEmbedding.model_name == spec.model_name,
        AssetEmbedding.pretrained == spec.pretrained,
        AssetEmbedding.dim == spec.embedding_dim,
    )


def plan_asset_ids(
    session: Session, spec: ModelSpec, *, force: bool = False, only_failed: bool = False
) -> list[UUID]:
    """Assets a run for ``spec`` should process, oldest first.

    Default: every present asset this exact model has neither embedded nor given up on
    (failures wait for ``retry-failed``). Unreadable files are included when the model
    has no verdict on them yet, so every asset ends up done or failed for every model.
    """
    query = select(Asset.id).where(Asset.status != AssetStatus.MISSING)
    if only_failed:
        failed = select(AssetEmbedding.asset_id).where(
            AssetEmbedding.model_key == spec.key, AssetEmbedding.state == EmbeddingState.FAILED
        )
        query = query.where(Asset.id.in_(failed))
    elif not force:
        settled = select(AssetEmbedding.asset_id).where(
            AssetEmbedding.model_key == spec.key,
            or_(_done_by(spec), AssetEmbedding.state == EmbeddingState.FAILED),
        )
        query = query.where(Asset.id.not_in(settled))
    return list(session.scalars(query.order_by(Asset.created_at, Asset.id)))


def chunked(ids: Sequence[UUID], size: int) -> list[list[UUID]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


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
        ctx.store.verify_collection(ctx.collection_spec(key))
        with ctx.session_factory() as session:
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
    result.done, result.failed = outcome.done, outcome.failed
    paths = {r.id: str(r.path) for r in refs}
    result.failures = [
        {"asset_id": str(i), "path": paths[i], "error": reason} for i, reason in outcome.failures
    ]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _refs_to_embed(
    session: Session, spec: ModelSpec, asset_ids: Sequence[UUID], *, force: bool
) -> list[AssetRef]:
    """Re-read state now, not when the job was queued: other jobs, an index run or a
    delete may have got there first."""
    assets = repo.get_assets(session, list(asset_ids))
    done: set[UUID] = set()
    if not force and assets:
        done = set(
            session.scalars(
                select(AssetEmbedding.asset_id).where(
                    AssetEmbedding.asset_id.in_(list(assets)),
                    AssetEmbedding.model_key == spec.key,
                    _done_by(spec),
                )
            )
        )
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
        with session_factory() as session:
            done = set(
                session.scalars(
                    select(AssetEmbedding.asset_id).where(
                        AssetEmbedding.asset_id.in_(list(ids)),
                        AssetEmbedding.model_key == spec.key,
                        _done_by(spec),
                    )
                )
            )
            for asset_id in ids:
                if asset_id not in done:
                    repo.mark_embedding_failed(session, asset_id, spec, reason)
            session.commit()
    except OperationalError:
        # The DB itself is what failed: the assets stay pending and the next
        # `image-search reembed` run picks them up.
        logger.warning("could not record the failure of %d assets: the DB is down", len(ids))


def reset_failed(session: Session, spec: ModelSpec, ids: Iterable[UUID]) -> int:
    """Failed -> pending for ``ids``, so progress counts them as work again."""
    rows = session.scalars(
        select(AssetEmbedding).where(
            AssetEmbedding.asset_id.in_(list(ids)),
            AssetEmbedding.model_key == spec.key,
            AssetEmbedding.state == EmbeddingState.FAILED,
        )
    )
    count = 0
    for row in rows:
        row.state = EmbeddingState.PENDING
        count += 1
    return count


# -- progress -------------------------------------------------------------------------
def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite drops tz


def coverage_of(session: Session, spec: ModelSpec) -> float:
    counts = repo.embedding_counts(session, spec)
    active = repo.library_counts(session).active
    return counts.done / active if active else 1.0


def model_progress(
    session: Session, spec: ModelSpec, *, now: datetime | None = None
) -> dict[str, Any]:
    """Counts for one model, and its rate over the last few minutes from row timestamps."""
    now = now or datetime.now(UTC)
    # The same partition as plan_asset_ids: every present asset is done, failed or
    # pending for each model, so pending reaches 0 exactly when a run has nothing left.
    present = Asset.status != AssetStatus.MISSING
    total = int(session.scalar(select(func.count()).select_from(Asset).where(present)) or 0)

    def rows(*where: Any) -> int:
        query = select(func.count()).select_from(AssetEmbedding).join(Asset)
        return int(
            session.scalar(query.where(present, AssetEmbedding.model_key == spec.key, *where)) or 0
        )

    done = rows(_done_by(spec))
    failed = rows(AssetEmbedding.state == EmbeddingState.FAILED)
    # Coverage is the router's measure: searchable assets this exact model has embedded.
    ratio = coverage_of(session, spec)
    window_start = now - RATE_WINDOW
    recent, oldest, newest = session.execute(
        select(
            func.count(),
            func.min(AssetEmbedding.updated_at),
            func.max(AssetEmbedding.updated_at),
        ).where(
            AssetEmbedding.model_key == spec.key,
            AssetEmbedding.state.in_([EmbeddingState.DONE, EmbeddingState.FAILED]),
            AssetEmbedding.updated_at >= window_start,
        )
    ).one()
    oldest_utc, newest_utc = _as_utc(oldest), _as_utc(newest)
    rate = 0.0
    if recent and oldest_utc is not None:
        # Over the span actually worked in the window: a run that started a minute ago
        # is not diluted by four idle minutes before it, and a stalled one decays to 0.
        span = max((now - oldest_utc).total_seconds(), 1.0)
        rate = recent / span
    pending = max(0, total - done - failed)
    eta: float | None
    if pending == 0:
        eta = 0.0
    elif rate > 0:
        eta = round(pending / rate, 1)
    else:
        eta = None
    return {
        "model": spec.key,
        "collection": spec.collection,
        "model_name": spec.model_name,
        "total": total,
        "done": done,
        "failed": failed,
        "pending": pending,
        "coverage": round(ratio, 4),
        "rate": round(rate, 3),
        "eta_seconds": eta,
        "last_activity": newest_utc.isoformat() if newest_utc else None,
    }


def collect_progress(
    *,
    session_factory: sessionmaker[Session],
    specs: dict[ModelKey, ModelSpec],
    store: VectorStore | None,
    redis_url: str | None,
    target: ModelKey | None = None,
) -> dict[str, Any]:
    """Progress per model plus a headline for the target (see :func:`reembed_progress`).

    ``store`` may be None (the embedded store is open in another process): collection
    existence and point counts are then reported as unknown.
    """
    with session_factory() as session:
        models = {key: model_progress(session, specs[key]) for key in MODEL_KEYS}
    store_error = None
    for key, entry in models.items():
        entry["collection_exists"], entry["points"] = None, None
        if store is None or store_error is not None:
            continue
        try:
            info = store.collection_info(specs[key].collection)
        except VectorStoreUnavailable as exc:  # progress is DB-derived; report, go on
            store_error = exc.detail
            continue
        entry["collection_exists"] = info is not None
        entry["points"] = info.points if info is not None else None
    chosen = target or _default_target(models)
    headline = models[chosen]
    data: dict[str, Any] = {
        "target": chosen,
        **{k: headline[k] for k in ("total", "done", "failed", "pending", "rate", "eta_seconds")},
        "coverage": headline["coverage"],
        "complete": headline["pending"] == 0,
        "models": models,
        "runner": "rq" if redis_url else "in-process",
        "queue": queue_snapshot(redis_url) if redis_url else None,
        "vector_store_error": store_error,
    }
    return data


def _default_target(models: dict[ModelKey, dict[str, Any]]) -> ModelKey:
    """The migration in progress: among models with a collection, the one with the most
    work left (ties: the later model, the candidate)."""
    existing = [k for k in MODEL_KEYS if models[k]["collection_exists"] is not False]
    candidates = existing or list(MODEL_KEYS)
    return max(reversed(candidates), key=lambda k: models[k]["pending"])


def reembed_progress(ctx: ServiceContext, *, target: ModelKey | None = None) -> dict[str, Any]:
    """For ``GET /api/v1/admin/reembed`` and ``image-search reembed status``.

    Top level: the ``target`` model (default: the existing collection with the most work
    left) - total, done, failed, pending, rate (assets/s over the last minutes),
    eta_seconds (None when stalled), coverage. ``models`` has the same per model.
    ``queue`` is the RQ picture when ``REDIS_URL`` is set (None otherwise; Redis is
    never contacted without it).
    """
    return collect_progress(
        session_factory=ctx.session_factory,
        specs=ctx.specs,
        store=ctx.store,
        redis_url=ctx.settings.redis_url,
        target=target,
    )


def queue_snapshot(redis_url: str) -> dict[str, Any]:
    """Job counts of the re-embedding queue; a down Redis is reported, not raised."""
    import redis
    from rq import Queue

    try:
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            queue = Queue(QUEUE_NAME, connection=connection)
            return {
                "name": QUEUE_NAME,
                "queued": queue.count,
                "started": queue.started_job_registry.count,
                "scheduled_retries": queue.scheduled_job_registry.count,
                "failed_jobs": queue.failed_job_registry.count,
                "workers": _worker_count(queue),
                "error": None,
            }
        finally:
            connection.close()
    except redis.exceptions.RedisError as exc:
        return {"name": QUEUE_NAME, "error": f"Redis unreachable: {exc}"}


def _worker_count(queue: Any) -> int:
    from rq import Worker

    return int(Worker.count(queue=queue))


def failed_assets(
    session: Session, spec: ModelSpec, *, limit: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """The assets this model gave up on, with their reasons (newest first), and how many."""
    where = (
        AssetEmbedding.model_key == spec.key,
        AssetEmbedding.state == EmbeddingState.FAILED,
        Asset.status != AssetStatus.MISSING,
    )
    total = session.scalar(
        select(func.count()).select_from(AssetEmbedding).join(Asset).where(*where)
    )
    rows = session.execute(
        select(Asset.id, Asset.path, AssetEmbedding.last_error, AssetEmbedding.attempts)
        .join(Asset)
        .where(*where)
        .order_by(AssetEmbedding.updated_at.desc(), Asset.id)
        .limit(limit)
    ).all()
    items = [
        {"asset_id": str(i), "path": p, "error": err or "", "attempts": n} for i, p, err, n in rows
    ]
    return items, int(total or 0)
