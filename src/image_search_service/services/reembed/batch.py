"""Re-embedding a library with one model: the plan and the job body.

Runner-agnostic. The RQ job (:func:`reembed_batch`) and the in-process runner
(``runner.py``) both call :func:`run_batch`, which re-reads each asset's state, so
running a batch twice, or after a crash, never duplicates work or points (point id =
asset UUID).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from uuid import UUID

from rq import get_current_job
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InsufficientStorage,
    VectorStoreUnavailable,
)
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.db.session import session_scope
from image_search_service.jobs.process import job_context
from image_search_service.services.library.decoding import AssetRef
from image_search_service.services.library.pipeline import ProgressFn, embed_assets

logger = logging.getLogger(__name__)

DEFAULT_JOB_SIZE = 64  # asset ids per job: small enough to retry cheaply, big enough to batch

# Worth retrying: the service or the network, not the data. Anything else is a bug or a
# configuration error (wrong model, missing collection) that a retry cannot fix.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    VectorStoreUnavailable,
    DatabaseUnavailable,
    InsufficientStorage,  # space may come back before the next attempt
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


# -- planning -------------------------------------------------------------------------
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
        ctx.disk.check(f"re-embed with {key}")
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
            decode_processes=ctx.settings.decode_processes,
            device_decode=ctx.settings.jpeg_device_decode,
            max_pixels=ctx.settings.max_image_pixels,
            on_progress=on_progress,
            before_write=lambda: ctx.disk.check(f"re-embed with {key}"),
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


def reembed_batch(model_key: str, asset_ids: list[str], force: bool = False) -> dict[str, Any]:
    """The RQ job: embed these assets with one model. Transient errors propagate, so
    RQ's ``Retry`` runs the job again; any other error fails it at once."""
    if model_key not in MODEL_KEYS:
        raise ValueError(f"unknown model key {model_key!r}")
    key: ModelKey = model_key
    job = get_current_job()
    final_attempt = job is None or not job.retries_left
    try:
        result = run_batch(
            job_context(),
            key,
            [UUID(i) for i in asset_ids],
            force=force,
            final_attempt=final_attempt,
        )
    except Exception as exc:
        if job is not None and not is_transient(exc):
            job.retries_left = 0  # a wrong model or a missing collection stays wrong
        raise
    logger.info(
        "re-embedded %d/%d assets with %s (%d failed, %d skipped) in %.1fs",
        result.done,
        result.requested,
        key,
        result.failed,
        result.skipped,
        result.seconds,
    )
    # RQ keeps a job's result in Redis: a summary, not every failure.
    return asdict(replace(result, failures=result.failures[:20]))


REEMBED_JOB = f"{__name__}.{reembed_batch.__qualname__}"
