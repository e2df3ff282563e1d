"""RQ job functions: ids in, a small summary out. Importable by dotted path.

A job opens nothing itself: it uses this process's :func:`worker_context`, built once
from the environment (settings, DB engine, vector store, encoders) and kept, so the
model loads once per worker, not once per job.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from uuid import UUID

from rq import get_current_job

from image_search_service.core.config import MODEL_KEYS, ModelKey, load_settings
from image_search_service.services.context import ServiceContext, open_context
from image_search_service.services.reembed import is_transient, run_batch

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_context: ServiceContext | None = None
_context_pid: int | None = None


def bind_context(ctx: ServiceContext | None) -> None:
    """Use ``ctx`` for jobs run by this process (a worker that opened it, or a test)."""
    global _context, _context_pid
    with _lock:
        _context, _context_pid = ctx, (os.getpid() if ctx is not None else None)


def worker_context() -> ServiceContext:
    """This process's context, opened from the environment on first use."""
    global _context, _context_pid
    with _lock:
        # A forked child must not reuse its parent's DB connections or HTTP clients.
        if _context is None or _context_pid != os.getpid():
            _context = open_context(load_settings())
            _context_pid = os.getpid()
            engine = _context.engine
            os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        return _context


def reembed_batch(model_key: str, asset_ids: list[str], force: bool = False) -> dict[str, Any]:
    """Embed these assets with one model (the RQ job). Transient errors propagate, so
    RQ's ``Retry`` runs the job again; any other error fails it at once."""
    if model_key not in MODEL_KEYS:
        raise ValueError(f"unknown model key {model_key!r}")
    key: ModelKey = model_key
    job = get_current_job()
    final_attempt = job is None or not job.retries_left
    try:
        result = run_batch(
            worker_context(),
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
    return {k: v for k, v in result.as_dict().items() if k != "failures"} | {
        "failures": result.failures[:20]
    }


def ingest_objects_job(uris: list[str]) -> dict[str, Any]:
    """Bring these S3 objects up to date in the index (queued by POST /api/v1/ingest)."""
    from image_search_service.services.ingest import ingest_objects

    report = ingest_objects(worker_context(), uris)
    data = report.as_dict()
    data["failures"] = data["failures"][:20]
    data["unsupported_files"] = data["unsupported_files"][:20]
    return data
