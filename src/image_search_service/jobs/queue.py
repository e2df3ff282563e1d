"""The RQ side: connect, enqueue re-embedding jobs, inspect what is already queued."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import redis
from rq import Queue
from rq.job import Job, JobStatus

from image_search_service.core.config import ModelKey
from image_search_service.core.errors import ServiceError
from image_search_service.jobs.retry import DEFAULT_POLICY, RetryPolicy
from image_search_service.jobs.tasks import reembed_batch
from image_search_service.services.reembed import DEFAULT_JOB_SIZE, QUEUE_NAME, chunked

# Far above a batch's real cost (64 SigLIP images on 2 CPU cores: ~15 s), and also how
# long RQ waits before retrying a batch whose worker died without a word (SIGKILL).
JOB_TIMEOUT_S = 900
RESULT_TTL_S = 24 * 3600
_TASK = f"{reembed_batch.__module__}.{reembed_batch.__qualname__}"


class QueueUnavailable(ServiceError):
    status_code = 503


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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


def reembed_queue(connection: redis.Redis[bytes]) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, default_timeout=JOB_TIMEOUT_S)


@dataclass
class EnqueueReport:
    model: str
    planned: int
    already_queued: int
    enqueued_assets: int
    jobs: int
    queue: str = QUEUE_NAME

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _jobs_for(queue: Queue, key: ModelKey, job_ids: Sequence[str]) -> list[Job]:
    jobs = Job.fetch_many(list(job_ids), connection=queue.connection)
    return [
        job
        for job in jobs
        if job is not None and job.func_name == _TASK and job.args and job.args[0] == key
    ]


def waiting_asset_ids(queue: Queue, key: ModelKey) -> set[str]:
    """Assets already in a queued job or a job scheduled for retry.

    Jobs that have *started* are not counted: their worker may have died (SIGKILL,
    OOM), and re-queueing their assets is harmless because a job skips finished ones.
    """
    ids = queue.get_job_ids() + queue.scheduled_job_registry.get_job_ids()
    waiting: set[str] = set()
    for job in _jobs_for(queue, key, ids):
        waiting.update(str(i) for i in job.args[1])
    return waiting


def enqueue_reembed(
    queue: Queue,
    key: ModelKey,
    asset_ids: Sequence[UUID],
    *,
    job_size: int = DEFAULT_JOB_SIZE,
    force: bool = False,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> EnqueueReport:
    """Queue ``asset_ids`` in jobs of ``job_size`` ids, leaving out those already waiting.

    Callers pass ids whose rows are committed: a job re-reads them from the DB.
    """
    waiting = waiting_asset_ids(queue, key)
    todo = [i for i in asset_ids if str(i) not in waiting]
    batches = chunked(todo, job_size)
    datas = [
        Queue.prepare_data(
            reembed_batch,
            args=(key, [str(i) for i in batch], force),
            timeout=JOB_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            description=f"re-embed {len(batch)} assets with {key}",
            meta={"model": key, "assets": len(batch)},
            retry=policy.for_rq(),
        )
        for batch in batches
    ]
    if datas:
        queue.enqueue_many(datas)
    return EnqueueReport(
        model=key,
        planned=len(asset_ids),
        already_queued=len(asset_ids) - len(todo),
        enqueued_assets=len(todo),
        jobs=len(batches),
    )


def clear_failed_jobs(queue: Queue, key: ModelKey) -> int:
    """Forget this model's failed jobs: their assets are re-queued from the DB instead."""
    registry = queue.failed_job_registry
    jobs = _jobs_for(queue, key, registry.get_job_ids())
    for job in jobs:
        registry.remove(job, delete_job=True)
    return len(jobs)


def next_retry_at(queue: Queue) -> float | None:
    """Epoch seconds of the earliest retry RQ has scheduled on this queue, if any."""
    registry = queue.scheduled_job_registry
    first = queue.connection.zrange(registry.key, 0, 0, withscores=True)
    return float(first[0][1]) if first else None


def enqueue_ingest(redis_url: str, uris: list[str], *, job_id: str) -> bool:
    """Queue an ingest of ``uris`` under ``job_id``; False when a job with that id is
    still waiting (a redelivered notification), so it is not queued twice."""
    from image_search_service.jobs.tasks import ingest_objects_job

    connection = connect(redis_url)
    try:
        queue = reembed_queue(connection)
        existing = Job.fetch_many([job_id], connection=connection)[0]
        if existing is not None and existing.get_status(refresh=False) in (
            JobStatus.QUEUED,
            JobStatus.SCHEDULED,
            JobStatus.DEFERRED,
        ):
            return False
        queue.enqueue(
            ingest_objects_job,
            uris,
            job_id=job_id,
            job_timeout=JOB_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            description=f"ingest {len(uris)} objects",
            retry=DEFAULT_POLICY.for_rq(),
        )
        return True
    finally:
        connection.close()
