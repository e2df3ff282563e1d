"""Re-embedding progress, per model, from the metadata DB alone (per-asset state and
its ``updated_at``), so it is the same whichever runner did the work; the RQ queue is
reported on top when ``REDIS_URL`` is set."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import VectorStoreUnavailable
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.session import session_scope
from image_search_service.jobs.queue import QueueSnapshot, queue_snapshot
from image_search_service.vector.base import VectorStore

RATE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class ModelProgress:
    """One model's share of the library (:class:`repo.Coverage`), its recent rate, and
    its collection as the store sees it (None: not read)."""

    model: ModelKey
    collection: str
    model_name: str
    counts: repo.Coverage
    rate: float  # assets finished per second over the last minutes
    last_activity: datetime | None
    collection_exists: bool | None = None
    points: int | None = None

    @property
    def total(self) -> int:
        return self.counts.present

    @property
    def done(self) -> int:
        return self.counts.done

    @property
    def failed(self) -> int:
        return self.counts.failed

    @property
    def pending(self) -> int:
        return self.counts.pending

    @property
    def eta_seconds(self) -> float | None:
        if self.pending == 0:
            return 0.0
        return round(self.pending / self.rate, 1) if self.rate > 0 else None

    @property
    def coverage(self) -> float:
        return round(self.counts.ratio, 4)


@dataclass(frozen=True)
class ReembedProgress:
    """Progress per model, with the ``target`` model (the migration) as the headline:
    its figures read through at the top level (``ReembedProgressOut``)."""

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

    @property
    def total(self) -> int:
        return self.headline.total

    @property
    def done(self) -> int:
        return self.headline.done

    @property
    def failed(self) -> int:
        return self.headline.failed

    @property
    def pending(self) -> int:
        return self.headline.pending

    @property
    def rate(self) -> float:
        return self.headline.rate

    @property
    def eta_seconds(self) -> float | None:
        return self.headline.eta_seconds

    @property
    def coverage(self) -> float:
        return self.headline.coverage


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
        counts=repo.coverage(session, spec),
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
