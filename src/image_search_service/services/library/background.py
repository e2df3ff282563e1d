"""Index runs in the background of a server: requests from ``POST /api/v1/admin/index``
and watched folders run on the process's :class:`~jobs.dispatcher.Dispatcher`, one at a
time; a request for a folder already waiting is not queued twice. Progress of the
current run and the outcome of the last ones are kept for ``GET /api/v1/admin/index``
and the page. :class:`LeaderDuties` is what one process of a deployment does for all:
repair uploads after a crash and watch ``LIBRARY_PATHS``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from image_search_service.context import ServiceContext
from image_search_service.jobs.dispatcher import BackgroundJob, Dispatcher, JobControl
from image_search_service.services.library.assets import AssetService
from image_search_service.services.library.folders import check_folder
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import IndexReport, models_to_index
from image_search_service.services.library.watcher import LibraryWatcher

logger = logging.getLogger(__name__)

INDEX = "index"  # the dispatcher's job kind
WATCHER_LOCK = "watcher"  # the jobs.leader lock of LeaderDuties: one process per database


@dataclass(frozen=True)
class IndexRun:
    """One index run as the status shows it."""

    path: str
    reason: str  # api, watch, start, cli
    model: str  # auto, all, or one model key (see models_to_index)
    phase: str  # queued, scanning, embedding, done, failed
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int | None  # assets to embed, once scanned
    done: int
    report: IndexReport | None
    error: str | None

    @classmethod
    def of(cls, job: BackgroundJob) -> IndexRun:
        return cls(
            path=job.labels["path"],
            reason=job.labels["reason"],
            model=job.labels["model"],
            phase=job.phase,
            queued_at=job.queued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            total=job.total,
            done=job.done,
            report=job.result if isinstance(job.result, IndexReport) else None,
            error=job.error,
        )


@dataclass(frozen=True)
class IndexStatus:
    running: bool
    current: IndexRun | None
    queued: list[IndexRun]
    finished: list[IndexRun]  # newest first
    problems: list[str]
    # The process that watches LIBRARY_PATHS for the deployment ("image-search watcher
    # HOST:PID"), if known; None without watched folders.
    watched_by: str | None = None


def submit_index(
    dispatcher: Dispatcher,
    ctx: ServiceContext,
    raw_path: str | Path,
    *,
    reason: str = "api",
    model: str = "auto",
) -> IndexRun:
    """Queue an index run of ``raw_path`` (checked now: a missing or unreadable folder is
    an error). Returns the waiting run, or the one already waiting for the same folder."""
    path = str(check_folder(raw_path))
    ctx.disk.check(f"index {path}")  # the watcher pauses on this, and resumes later

    def body(control: JobControl) -> IndexReport:
        root = check_folder(path)
        keys = models_to_index(ctx, model)
        report = index_paths(ctx, [root], model_keys=keys, progress=control.progress)
        logger.info(
            "indexed %s (%s): %d new, %d failed, %d missing",
            path,
            reason,
            report.indexed,
            report.failed,
            report.missing,
        )
        return report

    job, _new = dispatcher.submit(
        INDEX,
        body,
        key=f"{path}\x00{model}",
        description=f"indexing {path}",
        labels={"path": path, "reason": reason, "model": model},
        start_phase="scanning",
    )
    return IndexRun.of(job)


def submit_reconcile_uploads(
    dispatcher: Dispatcher, ctx: ServiceContext, assets: AssetService
) -> IndexRun:
    """On start: repair what a crash left of uploads (see ``reconcile_uploads``)."""
    path = str(ctx.settings.uploads_dir)
    job, _new = dispatcher.submit(
        INDEX,
        lambda _control: assets.reconcile_uploads(),
        key=f"{path}\x00reconcile",
        description=f"checking uploads in {path}",
        labels={"path": path, "reason": "start", "model": "auto"},
        start_phase="scanning",
    )
    return IndexRun.of(job)


def index_status(
    dispatcher: Dispatcher, *, problems: Sequence[str] = (), watched_by: str | None = None
) -> IndexStatus:
    current = dispatcher.current(INDEX)
    return IndexStatus(
        running=current is not None,
        current=IndexRun.of(current) if current is not None else None,
        queued=[IndexRun.of(job) for job in dispatcher.queued(INDEX)],
        finished=[IndexRun.of(job) for job in dispatcher.finished(INDEX)],
        problems=list(problems),
        watched_by=watched_by,
    )


class LeaderDuties:
    """The once-per-deployment work of a server, done by the process that holds the
    watcher lock (``jobs.leader``): on taking it, repair what a crash left of uploads
    and watch ``LIBRARY_PATHS``; on losing it, stop watching. ``watcher`` is the watch
    in force, if any."""

    def __init__(self, dispatcher: Dispatcher, ctx: ServiceContext, assets: AssetService) -> None:
        self._dispatcher = dispatcher
        self._ctx = ctx
        self._assets = assets
        self.watcher: LibraryWatcher | None = None

    def start(self) -> None:
        settings = self._ctx.settings
        if settings.uploads_dir.is_dir():  # a crash may have cut an upload short
            submit_reconcile_uploads(self._dispatcher, self._ctx, self._assets)
        if settings.library_paths:
            watcher = LibraryWatcher(
                lambda path, reason: submit_index(self._dispatcher, self._ctx, path, reason=reason),
                settings.library_paths,
                debounce_ms=settings.library_debounce_ms,
                check_disk=lambda: self._ctx.disk.check("index watched folders"),
            )
            watcher.start()
            self.watcher = watcher
            logger.info("watching %s", ", ".join(map(str, settings.library_paths)))

    def stop(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.close()
            logger.info("stopped watching %s", ", ".join(map(str, watcher.roots)))
