"""The RQ worker: one process, context and models loaded once, jobs run without forking.

RQ's default ``Worker`` forks a work horse per job, which would either reload the model
per job or carry the parent's DB connections across the fork. ``SimpleWorker`` runs
jobs in the worker process itself, so the context opened here serves every job. For
more throughput, run more worker processes (each loads the model once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.core.errors import ConfigError
from image_search_service.jobs.queue import next_retry_at, reembed_queue
from image_search_service.jobs.tasks import bind_context
from image_search_service.services.context import ServiceContext

logger = logging.getLogger(__name__)

_MAX_RETRY_WAIT_S = 600.0


class ReembedWorker(SimpleWorker):
    """A non-forking worker (the model stays loaded between jobs) that counts its jobs
    and remembers a stop request (SIGTERM/SIGINT), so the burst loop ends too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs_run = 0
        self.stop_seen = False

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            self.jobs_run += 1

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_seen = True
        super().request_stop(signum, frame)


def check_worker_settings(settings: Settings) -> None:
    """Refuse set-ups where a separate worker process cannot work, saying why."""
    if not settings.redis_url:
        raise ConfigError(
            "REDIS_URL is not set: there is no queue to work on. Without Redis, "
            "`image-search reembed` runs the jobs in its own process."
        )
    if not settings.qdrant_url:
        raise ConfigError(
            "the embedded vector store (DATA_DIR/qdrant) can be open in one process at a "
            "time, so a separate worker would lock out the API and the CLI. Set QDRANT_URL "
            "to a Qdrant server to run workers, or run `image-search reembed` without "
            "REDIS_URL to re-embed in-process."
        )


def preload(ctx: ServiceContext, keys: list[ModelKey] | None = None) -> list[ModelKey]:
    """Load the encoders jobs will need before the first job: those with a collection."""
    chosen = keys if keys is not None else [k for k in MODEL_KEYS if ctx.has_collection(k)]
    for key in chosen:
        ctx.encoder(key).load()
    return chosen


@dataclass
class WorkerReport:
    jobs: int = 0
    passes: int = 0


def run_worker(
    ctx: ServiceContext,
    connection: redis.Redis,
    *,
    burst: bool,
    max_jobs: int | None = None,
    name: str | None = None,
    logging_level: str = "INFO",
) -> WorkerReport:
    """Work the re-embedding queue with ``ctx``.

    ``burst``: exit once the queue is empty *and* no failed job is waiting for its
    retry (RQ keeps those in a schedule; a plain burst worker would leave them behind).
    """
    bind_context(ctx)
    report = WorkerReport()
    queue = reembed_queue(connection)
    try:
        while True:
            worker = ReembedWorker([queue], connection=connection, name=name)
            worker.work(
                burst=burst,
                with_scheduler=True,
                max_jobs=None if max_jobs is None else max_jobs - report.jobs,
                logging_level=logging_level,
            )
            report.passes += 1
            report.jobs += worker.jobs_run
            if worker.stop_seen or (max_jobs is not None and report.jobs >= max_jobs):
                return report
            if not burst:
                # work() returns unasked only after an error it has logged, such as Redis
                # going away mid-job: start over (RQ reconnects while it waits for jobs).
                logger.warning("worker loop ended unexpectedly; restarting in %ds", 5)
                time.sleep(5)
                continue
            due = next_retry_at(queue)
            if due is None and queue.count == 0:
                return report
            wait = min(max(0.0, (due or time.time()) - time.time()), _MAX_RETRY_WAIT_S)
            logger.info("waiting %.0fs for scheduled retries", wait)
            time.sleep(wait + 0.5)
    finally:
        bind_context(None)
