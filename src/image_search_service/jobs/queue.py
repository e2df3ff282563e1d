"""The RQ side, knowing no use case: connect, the queue, enqueue a job by its dotted
path, see what is waiting, count jobs. Job bodies live beside their use case
(``services/<domain>``) and are named here by dotted path only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy.engine import make_url

from image_search_service.core.config import Settings
from image_search_service.core.errors import ServiceError
from image_search_service.jobs.retry import DEFAULT_POLICY, RetryPolicy

QUEUE_NAME = "reembed"  # kept: workers and queued jobs of earlier versions use it
# Far above a batch's real cost (64 SigLIP images on 2 CPU cores: ~15 s), and also how
# long RQ waits before retrying a batch whose worker died without a word (SIGKILL).
JOB_TIMEOUT_S = 900
RESULT_TTL_S = 24 * 3600
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)

Runner = Literal["auto", "rq", "in-process"]

_EMBEDDED_NOTE = (
    "REDIS_URL is set but the vector store is embedded (QDRANT_URL unset); a worker in "
    "another process could not open it, so the jobs run here."
)


class QueueUnavailable(ServiceError):
    status_code = 503


def choose_runner(
    settings: Settings, requested: Runner = "auto"
) -> tuple[Literal["rq", "in-process"], str | None]:
    """Where background work runs, and a note when the settings overrule the request:
    RQ when ``REDIS_URL`` and ``QDRANT_URL`` are set (a worker in another process could
    not open the embedded store while this one holds it), this process otherwise."""
    if requested == "in-process" or not settings.redis_url:
        return "in-process", None
    if not settings.qdrant_url:
        return "in-process", _EMBEDDED_NOTE
    return "rq", None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say nothing of it
        return "<unparsable URL>"


def connect(redis_url: str) -> redis.Redis[bytes]:
    connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        connection.ping()
    except redis.exceptions.RedisError as exc:
        connection.close()
        raise QueueUnavailable(
            f"cannot reach Redis at REDIS_URL={redact(redis_url)}: {exc}"
        ) from exc
    return connection


def work_queue(connection: redis.Redis[bytes]) -> Queue:
    """The one queue every background job goes to (re-embedding, ingest)."""
    return Queue(QUEUE_NAME, connection=connection, default_timeout=JOB_TIMEOUT_S)


def job_data(
    func: str,
    args: tuple[Any, ...],
    *,
    description: str,
    job_id: str | None = None,
    meta: dict[str, Any] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Any:
    """One job for :func:`enqueue_many`, named by the dotted path of its body."""
    return Queue.prepare_data(
        func,
        args=args,
        timeout=JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        description=description,
        job_id=job_id,
        meta=meta,
        retry=policy.for_rq(),
    )


def enqueue_many(queue: Queue, datas: Sequence[Any]) -> int:
    if datas:
        queue.enqueue_many(list(datas))
    return len(datas)


def is_waiting(connection: redis.Redis[bytes], job_id: str) -> bool:
    """A job with this id is queued, scheduled for a retry or deferred."""
    existing = Job.fetch_many([job_id], connection=connection)[0]
    return existing is not None and existing.get_status(refresh=False) in WAITING


def jobs_of(queue: Queue, func: str, job_ids: Iterable[str]) -> list[Job]:
    """The jobs among ``job_ids`` that run ``func`` (a dotted path)."""
    jobs = Job.fetch_many(list(job_ids), connection=queue.connection)
    return [job for job in jobs if job is not None and job.func_name == func]


def waiting_jobs(queue: Queue, func: str) -> list[Job]:
    """Jobs of ``func`` queued or scheduled for a retry. Jobs that have *started* are not
    counted: their worker may have died (SIGKILL, OOM)."""
    ids = queue.get_job_ids() + queue.scheduled_job_registry.get_job_ids()
    return jobs_of(queue, func, ids)


def next_retry_at(queue: Queue) -> float | None:
    """Epoch seconds of the earliest retry RQ has scheduled on this queue, if any."""
    registry = queue.scheduled_job_registry
    first = queue.connection.zrange(registry.key, 0, 0, withscores=True)
    return float(first[0][1]) if first else None


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


def queue_snapshot(redis_url: str) -> QueueSnapshot:
    """Job counts of the queue; a down Redis is reported, not raised."""
    from rq import Worker

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
