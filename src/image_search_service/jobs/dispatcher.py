"""Background work inside one process: one thread runs jobs one at a time, in order.

Every kind of background work an API process does (index runs of folders and watched
folders, bucket ingests without RQ, re-embedding without RQ) goes through one
:class:`Dispatcher`, so they never write at once: they would share the CPU, the encoders
and the embedded store's single writer, and side by side each would only run slower.
RQ is the other backend (``jobs.queue``): with ``REDIS_URL`` and ``QDRANT_URL`` set,
ingests and re-embedding batches go to worker processes instead
(``jobs.queue.choose_runner``).

A job is a callable given a :class:`JobControl` (progress, phase, a stop flag). A job
submitted with the ``key`` of one still waiting is not queued twice (a burst of changes
to one folder costs one more run, not one per file). Finished jobs are kept, the last
:data:`MAX_FINISHED` per kind, for the status pages.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from image_search_service.core.errors import ServiceError

logger = logging.getLogger(__name__)

MAX_FINISHED = 20
JobState = Literal["queued", "running", "done", "failed"]


class ShuttingDown(ServiceError):
    status_code = 503


class JobStopped(Exception):
    """Raised inside a job (from :meth:`JobControl.tick`) to end it at a batch boundary."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BackgroundJob:
    """One job: what it is, where it stands, and how it ended."""

    id: int
    kind: str  # index, ingest, reembed
    key: str  # what it works on: waiting jobs with the same kind and key are one job
    description: str
    queued_at: datetime
    labels: dict[str, str] = field(default_factory=dict)  # kind-specific: path, model...
    state: JobState = "queued"
    phase: str = "queued"  # the job's own words for its step (scanning, embedding...)
    start_phase: str = "running"
    keep_on_close: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    total: int | None = None  # items to process, once known
    done: int = 0
    result: Any = None
    error: str | None = None


class JobControl:
    """What a running job may do: report progress and notice a stop request."""

    def __init__(self, job: BackgroundJob, lock: threading.Condition, stop: threading.Event):
        self._job, self._lock, self._stop = job, lock, stop

    def phase(self, phase: str, *, total: int | None = None) -> None:
        with self._lock:
            self._job.phase = phase
            if total is not None:
                self._job.total = total

    def advance(self, count: int) -> None:
        """``count`` more items done."""
        with self._lock:
            self._job.done += count

    def tick(self, count: int) -> None:
        """:meth:`advance`, then raise :class:`JobStopped` once a stop was asked (for
        work that has no stop flag of its own)."""
        self.advance(count)
        if self._stop.is_set():
            raise JobStopped

    def progress(self, total: int) -> Callable[[int], None]:
        """A progress factory as the indexing and re-embedding services take it."""
        self.phase("embedding", total=total)
        return self.tick

    @property
    def stop(self) -> threading.Event:
        return self._stop


JobBody = Callable[[JobControl], Any]


class Dispatcher:
    """Runs submitted jobs on one daemon thread, one at a time; thread-safe."""

    def __init__(
        self,
        *,
        name: str = "background",
        on_finished: Callable[[BackgroundJob], None] | None = None,
    ) -> None:
        self._on_finished = on_finished
        self._lock = threading.Condition()
        self._queue: deque[tuple[BackgroundJob, JobBody]] = deque()
        self._current: BackgroundJob | None = None
        self._finished: dict[str, deque[BackgroundJob]] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        kind: str,
        body: JobBody,
        *,
        key: str,
        description: str,
        labels: dict[str, str] | None = None,
        start_phase: str = "running",
        keep_on_close: bool = False,
    ) -> tuple[BackgroundJob, bool]:
        """Queue ``body``; returns the job and whether it is new (False: a job of this
        kind and key was already waiting, and is returned instead). ``start_phase`` is
        the job's phase once it starts, until the job says otherwise. A job with
        ``keep_on_close`` still runs, to its end, when the dispatcher closes (work a
        client was told is accepted); the others are dropped or stopped."""
        with self._lock:
            if self._stop.is_set():
                raise ShuttingDown("the server is shutting down")
            for waiting, _ in self._queue:
                if waiting.kind == kind and waiting.key == key:
                    return waiting, False
            job = BackgroundJob(
                id=next(self._ids),
                kind=kind,
                key=key,
                description=description,
                queued_at=_now(),
                labels=dict(labels or {}),
                start_phase=start_phase,
                keep_on_close=keep_on_close,
            )
            self._queue.append((job, body))
            self._lock.notify_all()
            return job, True

    # -- reading ------------------------------------------------------------------------
    def current(self, kind: str | None = None) -> BackgroundJob | None:
        with self._lock:
            job = self._current
            return job if job is not None and kind in (None, job.kind) else None

    def queued(self, kind: str | None = None) -> list[BackgroundJob]:
        with self._lock:
            return [job for job, _ in self._queue if kind in (None, job.kind)]

    def finished(self, kind: str | None = None) -> list[BackgroundJob]:
        """Newest first."""
        with self._lock:
            kinds = [kind] if kind is not None else list(self._finished)
            jobs = [job for k in kinds for job in self._finished.get(k, ())]
        return sorted(jobs, key=lambda job: job.id, reverse=True)

    def busy(self, kind: str | None = None) -> bool:
        return self.current(kind) is not None or bool(self.queued(kind))

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is running or waiting (tests, the CLI hand-off)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._current is not None or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, drop the waiting ones (but those kept on close), stop the
        running one at its next batch boundary (what it finished stays recorded) and
        wait for the thread, at most ``timeout`` seconds."""
        with self._lock:
            self._stop.set()
            kept = [(job, body) for job, body in self._queue if job.keep_on_close]
            self._queue.clear()
            self._queue.extend(kept)
            self._lock.notify_all()
        self._thread.join(timeout)

    # -- the worker thread --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stop.is_set():
                    self._lock.wait()
                if not self._queue:  # stopped, and nothing kept to run
                    return
                job, body = self._queue.popleft()
                self._current = job
                job.state, job.phase, job.started_at = "running", job.start_phase, _now()
            self._run(job, body)
            with self._lock:
                job.finished_at = _now()
                self._current = None
                self._finished.setdefault(job.kind, deque(maxlen=MAX_FINISHED)).append(job)
                self._lock.notify_all()
            if self._on_finished is not None:
                try:
                    self._on_finished(job)
                except Exception:  # a hook must not kill the worker
                    logger.exception("background job hook failed")

    def _run(self, job: BackgroundJob, body: JobBody) -> None:
        # A job kept on close runs to its end: it never sees the stop request.
        control = JobControl(
            job, self._lock, threading.Event() if job.keep_on_close else self._stop
        )
        try:
            job.result = body(control)
            job.state = job.phase = "done"
        except JobStopped:
            job.state = job.phase = "failed"
            job.error = "stopped: the server is shutting down"
        except ServiceError as exc:
            job.state = job.phase = "failed"
            job.error = exc.detail
            logger.warning("%s failed: %s", job.description, exc.detail)
        except OSError as exc:  # a folder went away or became unreadable mid-run
            job.state = job.phase = "failed"
            job.error = f"cannot read: {exc}"
            logger.warning("%s failed: %s", job.description, exc)
        except Exception as exc:  # the thread has nobody to raise to: keep it for the status
            job.state = job.phase = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
            logger.exception("%s failed", job.description)
