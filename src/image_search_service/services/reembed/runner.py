"""The in-process runner: the same job body as the RQ workers, run here, batch by batch.

Used without ``REDIS_URL`` (the embedded default): the CLI runs it synchronously with a
progress bar; the API runs it as a job on its dispatcher, since the embedded store is
open in one process only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.jobs.retry import DEFAULT_POLICY, RetryPolicy
from image_search_service.services.reembed.batch import (
    DEFAULT_JOB_SIZE,
    BatchResult,
    is_transient,
    run_batch,
)

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
BatchFn = Callable[..., BatchResult]


@dataclass
class RunReport:
    model: str
    planned: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    jobs: int = 0
    retries: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    aborted: str | None = None  # why the run stopped early; the rest stays pending


def run_in_process(
    ctx: ServiceContext,
    key: ModelKey,
    asset_ids: Sequence[UUID],
    *,
    job_size: int = DEFAULT_JOB_SIZE,
    force: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    batch_fn: BatchFn = run_batch,
) -> RunReport:
    """Run ``asset_ids`` through the job body in jobs of ``job_size``, retrying transient
    errors like RQ would. A job that still fails stops the run: the next ones would
    hit the same outage; their assets stay pending for the next run. In a server it runs
    as a dispatcher job (``submit.py``), never beside another index or re-embed run."""
    return _run(ctx, key, asset_ids, job_size, force, policy, on_progress, stop, batch_fn)


def _run(
    ctx: ServiceContext,
    key: ModelKey,
    asset_ids: Sequence[UUID],
    job_size: int,
    force: bool,
    policy: RetryPolicy,
    on_progress: ProgressFn | None,
    stop: threading.Event | None,
    batch_fn: BatchFn,
) -> RunReport:
    started = time.perf_counter()
    stop = stop or threading.Event()
    report = RunReport(model=key, planned=len(asset_ids))
    for batch in chunked(asset_ids, job_size):
        if stop.is_set():
            report.aborted = "stopped on request"
            break
        retry = 0
        while True:
            final = retry >= policy.max_retries
            try:
                result = batch_fn(
                    ctx, key, batch, force=force, final_attempt=final, on_progress=on_progress
                )
                break
            except Exception as exc:
                if not is_transient(exc) or final:
                    report.aborted = f"{type(exc).__name__}: {exc}"
                    logger.error("re-embedding with %s stopped: %s", key, report.aborted)
                    break
                retry += 1
                report.retries += 1
                delay = policy.delay(retry)
                logger.warning(
                    "re-embedding batch failed (%s); retry %d/%d in %ds",
                    exc,
                    retry,
                    policy.max_retries,
                    delay,
                )
                if stop.wait(delay):
                    report.aborted = "stopped on request"
                    break
        if report.aborted:
            break
        report.jobs += 1
        report.done += result.done
        report.failed += result.failed
        report.skipped += result.skipped
        report.failures.extend(result.failures)
    if report.done:
        # The embedded store indexes (HNSW) only when asked; a server does it by itself.
        ctx.store.optimize(ctx.spec(key).collection)
    report.seconds = round(time.perf_counter() - started, 3)
    if report.seconds:
        report.images_per_second = round(report.done / report.seconds, 2)
    return report
