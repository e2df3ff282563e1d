"""The re-embed use case, for the CLI and the API alike: make sure the model's
collection exists, plan the assets, reset failures when retrying, then queue the work
on RQ or run it in this process.

Which runner: RQ when ``REDIS_URL`` and ``QDRANT_URL`` are set, since a worker in
another process could not open the embedded store while this one holds it; the
in-process runner otherwise (or when asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from image_search_service.core.config import ModelKey
from image_search_service.db import repository as repo
from image_search_service.jobs.queue import (
    EnqueueReport,
    clear_failed_jobs,
    connect,
    enqueue_reembed,
    reembed_queue,
)
from image_search_service.jobs.runner import (
    BackgroundRun,
    RunReport,
    run_in_process,
    start_in_background,
)
from image_search_service.services.context import ServiceContext
from image_search_service.services.indexing import ProgressFactory
from image_search_service.services.reembed import DEFAULT_JOB_SIZE

Runner = Literal["auto", "rq", "in-process"]

_EMBEDDED_NOTE = (
    "REDIS_URL is set but the vector store is embedded (QDRANT_URL unset); a worker in "
    "another process could not open it, so the jobs run here."
)


@dataclass
class Submission:
    model: ModelKey
    runner: Literal["rq", "in-process"]
    planned: int
    created_collection: bool
    note: str | None = None
    enqueued: EnqueueReport | None = None  # runner "rq"
    run: RunReport | None = None  # in-process, waited for
    background: BackgroundRun | None = None  # in-process, on a thread (the API)

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
            data["running_in_background"] = self.background.running
        return data


def choose_runner(
    ctx: ServiceContext, requested: Runner
) -> tuple[Literal["rq", "in-process"], str | None]:
    """The runner for a submission, and a note when the settings overrule the request."""
    if requested == "in-process" or not ctx.settings.redis_url:
        return "in-process", None
    if not ctx.settings.qdrant_url:
        return "in-process", _EMBEDDED_NOTE
    return "rq", None


def submit_reembed(
    ctx: ServiceContext,
    key: ModelKey,
    *,
    force: bool = False,
    only_failed: bool = False,
    job_size: int = DEFAULT_JOB_SIZE,
    runner: Runner = "auto",
    background: bool = False,
    progress: ProgressFactory | None = None,
) -> Submission:
    """Re-embed every pending asset of ``key`` (``force``: all; ``only_failed``: the
    failed ones, reset to pending first). Idempotent: finished assets and assets
    already queued are skipped."""
    chosen, note = choose_runner(ctx, runner)
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
            queue = reembed_queue(connection)
            if only_failed:
                clear_failed_jobs(queue, key)
            submission.enqueued = enqueue_reembed(queue, key, ids, job_size=job_size, force=force)
        finally:
            connection.close()
    elif background:
        submission.background = start_in_background(ctx, key, ids, job_size=job_size, force=force)
    else:
        tick = progress(len(ids)) if progress else None
        submission.run = run_in_process(
            ctx, key, ids, job_size=job_size, force=force, on_progress=tick
        )
    return submission
