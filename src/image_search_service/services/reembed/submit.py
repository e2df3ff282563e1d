"""The re-embed use case, for the CLI and the API alike: make sure the model's
collection exists, plan the assets, reset failures when retrying, then queue the work
on RQ or run it in this process (``jobs.queue.choose_runner`` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class Submission:
    """What a re-embed submission did; read as ``ReembedSubmissionOut``, with the figures
    of the RQ enqueue or of the in-process run at the top level (None where they do not
    apply)."""

    model: ModelKey
    runner: Literal["rq", "in-process"]
    planned: int
    created_collection: bool
    note: str | None = None
    enqueued: EnqueueReport | None = None  # runner "rq"
    run: RunReport | None = None  # in-process, waited for
    background: BackgroundJob | None = None  # in-process, on the dispatcher (the API)

    @property
    def enqueued_assets(self) -> int | None:
        return self.enqueued.enqueued_assets if self.enqueued is not None else None

    @property
    def already_queued(self) -> int | None:
        return self.enqueued.already_queued if self.enqueued is not None else None

    @property
    def queue(self) -> str | None:
        return self.enqueued.queue if self.enqueued is not None else None

    @property
    def done(self) -> int | None:
        return self.run.done if self.run is not None else None

    @property
    def failed(self) -> int | None:
        return self.run.failed if self.run is not None else None

    @property
    def skipped(self) -> int | None:
        return self.run.skipped if self.run is not None else None

    @property
    def retries(self) -> int | None:
        return self.run.retries if self.run is not None else None

    @property
    def seconds(self) -> float | None:
        return self.run.seconds if self.run is not None else None

    @property
    def images_per_second(self) -> float | None:
        return self.run.images_per_second if self.run is not None else None

    @property
    def failures(self) -> list[dict[str, str]] | None:
        return self.run.failures if self.run is not None else None

    @property
    def aborted(self) -> str | None:
        return self.run.aborted if self.run is not None else None

    @property
    def jobs(self) -> int | None:
        report = self.enqueued or self.run
        return report.jobs if report is not None else None

    @property
    def running_in_background(self) -> bool | None:
        if self.background is None:
            return None
        return self.background.state in ("queued", "running")


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
