"""The RQ worker: one process, context and models loaded once, jobs run without forking.

RQ's default ``Worker`` forks a work horse per job, which would either reload the model
per job or carry the parent's DB connections across the fork. ``SimpleWorker`` runs
jobs in the worker process itself, so the context opened here serves every job. For
more throughput, run more worker processes (each loads the model once).

Retries RQ schedules (``Retry(interval=...)``) are moved back onto the queue by a thread
here, not by RQ's scheduler process: that one is forked from the worker, would inherit
the DB engine, the model and any store lock, and outlives a worker killed with SIGKILL.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.scheduler import RQScheduler

from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.core.errors import ConfigError
from image_search_service.jobs.process import bind_context
from image_search_service.jobs.queue import next_retry_at, work_queue

logger = logging.getLogger(__name__)

_MAX_RETRY_WAIT_S = 600.0


class JobWorker(SimpleWorker):
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
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


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


class RetryPromoter(threading.Thread):
    """Every ``interval`` seconds, put retries that are due back on the queue (one
    promoter per queue at a time, through RQ's scheduler lock)."""

    def __init__(self, queue: Queue, *, interval: float = 1.0) -> None:
        super().__init__(name="rq-retry-promoter", daemon=True)
        self.scheduler = RQScheduler([queue], connection=queue.connection, interval=1)
        self.interval = interval
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            try:
                self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
                if self.scheduler.acquired_locks:
                    self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            except redis.exceptions.RedisError as exc:  # Redis restarting: try again soon
                logger.debug("retry promoter: %s", exc)
        try:
            self.scheduler.release_locks()  # type: ignore[no-untyped-call]
        except redis.exceptions.RedisError:
            pass

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def _interrupted_during(seconds: float, main_thread: bool) -> bool:
    """Sleep between burst passes; SIGTERM/SIGINT meanwhile end the worker quietly (RQ's
    handlers, still installed, would raise from inside the sleep)."""
    if not main_thread:
        time.sleep(seconds)
        return False
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    previous_int = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        return stop.wait(seconds)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@dataclass
class WorkerReport:
    jobs: int = 0
    passes: int = 0


def run_worker(
    ctx: ServiceContext,
    connection: redis.Redis[bytes],
    *,
    burst: bool,
    max_jobs: int | None = None,
    name: str | None = None,
    logging_level: str = "INFO",
) -> WorkerReport:
    """Work the queue (re-embedding batches, ingests) with ``ctx``.

    ``burst``: exit once the queue is empty *and* no failed job is waiting for its
    retry (RQ keeps those in a schedule; a plain burst worker would leave them behind).
    """
    bind_context(ctx)
    report = WorkerReport()
    queue = work_queue(connection)
    promoter = RetryPromoter(queue)
    promoter.start()
    # RQ installs its own SIGINT/SIGTERM handlers; give the caller's back afterwards.
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = (
        (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) if main_thread else None
    )
    try:
        while True:
            worker = JobWorker([queue], connection=connection, name=name)
            worker.work(
                burst=burst,
                with_scheduler=False,
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
                if _interrupted_during(5, main_thread):
                    return report
                continue
            due = next_retry_at(queue)
            if due is None and queue.count == 0:
                return report
            wait = min(max(0.0, (due or time.time()) - time.time()), _MAX_RETRY_WAIT_S)
            logger.info("waiting %.0fs for scheduled retries", wait)
            if _interrupted_during(wait + 0.5, main_thread):
                return report
    finally:
        promoter.stop()
        bind_context(None)
        if handlers is not None:
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
