"""The re-embed use case, for the CLI and the API alike: make sure the model's
collection exists, plan the assets, reset failures when retrying, then queue the work
on RQ or run it in this process (``jobs.queue.choose_runner`` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from uuid import UUID

from rq import Queue

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.db import repository as repo
from image_search_service.jobs.dispatcher import BackgroundJob, Dispatcher, JobControl
from image_search_service.jobs.queue import (
    QUEUE_NAME,
    Runner,
    choose_runner,
    connect,
    enqueue_many,
    job_data,
    jobs_of,
    waiting_jobs,
    work_queue,
)
from image_search_service.jobs.retry import DEFAULT_POLICY, RetryPolicy
from image_search_service.services.library.indexing import ProgressFactory
from image_search_service.services.reembed.batch import DEFAULT_JOB_SIZE, REEMBED_JOB
from image_search_service.services.reembed.runner import RunReport, run_in_process

REEMBED = "reembed"  # the dispatcher's job kind


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


@dataclass
class Submission:
    model: ModelKey
    runner: Literal["rq", "in-process"]
    planned: int
    created_collection: bool
    note: str | None = None
    enqueued: EnqueueReport | None = None  # runner "rq"
    run: RunReport | None = None  # in-process, waited for
    background: BackgroundJob | None = None  # in-process, on the dispatcher (the API)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "runner": self.runner,
            "planned": self.planned,
            "created_collection": self.created_collection,
            "note": self.note,
        }
        if self.enqueued is not None:
            data.update(self.enqueued.as_dict())
        if self.run is not None:
            data.update(self.run.as_dict())
        if self.background is not None:
            data["running_in_background"] = self.background.state in ("queued", "running")
        return data


def submit_reembed(
    ctx: ServiceContext,
    key: ModelKey,
    *,
    force: bool = False,
    only_failed: bool = False,
    job_size: int = DEFAULT_JOB_SIZE,
    runner: Runner = "auto",
    dispatcher: Dispatcher | None = None,
    progress: ProgressFactory | None = None,
) -> Submission:
    """Re-embed every pending asset of ``key`` (``force``: all; ``only_failed``: the
    failed ones, reset to pending first). Idempotent: finished assets and assets
    already queued are skipped. In-process, the run happens now (with ``progress``), or
    as a job of ``dispatcher`` (a server: the request returns at once)."""
    chosen, note = choose_runner(ctx.settings, runner)
    created = ctx.ensure_collection(key)
    spec = ctx.spec(key)
    with ctx.transaction() as session:
        ids = repo.asset_ids_to_embed(session, spec, force=force, only_failed=only_failed)
        if only_failed:
            repo.reset_failed(session, spec, ids)  # counted as pending again, not failed
    submission = Submission(
        model=key, runner=chosen, planned=len(ids), created_collection=created, note=note
    )
    if chosen == "rq":
        assert ctx.settings.redis_url
        connection = connect(ctx.settings.redis_url)
        try:
            queue = work_queue(connection)
            if only_failed:
                clear_failed_jobs(queue, key)
            submission.enqueued = enqueue_reembed(queue, key, ids, job_size=job_size, force=force)
        finally:
            connection.close()
    elif dispatcher is not None:

        def body(control: JobControl) -> RunReport:
            control.phase("embedding", total=len(ids))
            return run_in_process(
                ctx,
                key,
                ids,
                job_size=job_size,
                force=force,
                on_progress=control.advance,
                stop=control.stop,
            )

        submission.background, _new = dispatcher.submit(
            REEMBED,
            body,
            key=key,
            description=f"re-embedding {len(ids)} assets with {key}",
            labels={"model": key},
        )
    else:
        tick = progress(len(ids)) if progress else None
        submission.run = run_in_process(
            ctx, key, ids, job_size=job_size, force=force, on_progress=tick
        )
    return submission


# -- on RQ ------------------------------------------------------------------------------
def _model_jobs(queue: Queue, key: ModelKey, job_ids: Sequence[str]) -> list[Any]:
    return [job for job in jobs_of(queue, REEMBED_JOB, job_ids) if job.args and job.args[0] == key]


def waiting_asset_ids(queue: Queue, key: ModelKey) -> set[str]:
    """Assets already in a queued job or a job scheduled for retry (re-queueing the
    assets of a started job is harmless: a job skips finished ones)."""
    waiting: set[str] = set()
    for job in waiting_jobs(queue, REEMBED_JOB):
        if job.args and job.args[0] == key:
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
    enqueue_many(
        queue,
        [
            job_data(
                REEMBED_JOB,
                (key, [str(i) for i in batch], force),
                description=f"re-embed {len(batch)} assets with {key}",
                meta={"model": key, "assets": len(batch)},
                policy=policy,
            )
            for batch in batches
        ],
    )
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
    jobs = _model_jobs(queue, key, registry.get_job_ids())
    for job in jobs:
        registry.remove(job, delete_job=True)
    return len(jobs)
