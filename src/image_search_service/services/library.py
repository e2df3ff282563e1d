"""A live library: index runs on one background thread, and folders that are watched.

:class:`LibraryIndexer` owns one thread that runs index requests one at a time, in
order; a request for a folder already waiting is not queued twice, so a burst of
changes costs one more run, not one per file. Progress of the current run and the
outcome of the last ones are kept for ``GET /api/v1/admin/index`` and the page.

:class:`LibraryWatcher` watches ``LIBRARY_PATHS`` (the ``watchfiles`` package) and
hands a debounced batch of changes to the indexer as one request per folder. A folder
that disappears is reported (logged, and in the index status) and looked for again
every few seconds; its assets are left alone until it is back (an unmounted disk is
not a deleted library).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from image_search_service.core.errors import FolderNotFound, FolderUnreadable, ServiceError
from image_search_service.images.s3 import as_s3_uri
from image_search_service.services.context import ServiceContext
from image_search_service.services.indexing import IndexReport, index_paths, models_to_index

logger = logging.getLogger(__name__)

MAX_FINISHED = 20  # finished runs kept for the status
RECHECK_MISSING_S = 5.0
MAX_BATCH_FACTOR = 10


def check_folder(raw: str | Path) -> Path | str:
    """The absolute folder (or file) to index, or a clear error for the client. An
    ``s3://bucket/prefix`` URI is returned as it is: the run reports a missing bucket
    or refused credentials in one line (see services/buckets.py)."""
    text = str(raw).strip()
    if not text or "\x00" in text:
        raise FolderNotFound("give the path of a folder on the server")
    if isinstance(raw, str) and as_s3_uri(text) is not None:
        return text
    path = Path(os.path.expanduser(text)).resolve()
    if not path.exists():
        raise FolderNotFound(f"no such folder on the server: {path}")
    readable = os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0))
    if not readable:
        raise FolderUnreadable(f"the server may not read {path}")
    if path.is_dir():
        try:
            next(os.scandir(path), None)
        except OSError as exc:
            raise FolderUnreadable(f"cannot list {path}: {exc.strerror or exc}") from None
    return path


class ShuttingDown(ServiceError):
    status_code = 503


class _Stopped(Exception):
    """Raised from a progress tick to end a run at a batch boundary on shutdown."""


@dataclass
class IndexRun:
    path: str
    reason: str  # api, watch, start, cli
    queued_at: datetime
    model: str = "auto"  # auto, all, or one model key (see models_to_index)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    phase: str = "queued"  # queued, scanning, embedding, done, failed
    total: int | None = None  # assets to embed, once scanned
    done: int = 0
    report: IndexReport | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "reason": self.reason,
            "model": self.model,
            "phase": self.phase,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "total": self.total,
            "done": self.done,
            "report": self.report.as_dict() if self.report else None,
            "error": self.error,
        }


def _now() -> datetime:
    return datetime.now(UTC)


class LibraryIndexer:
    """Index requests run one at a time on a daemon thread; thread-safe."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        on_finished: Callable[[IndexRun], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._on_finished = on_finished
        self._lock = threading.Condition()
        self._queue: deque[IndexRun] = deque()
        self._current: IndexRun | None = None
        self._finished: deque[IndexRun] = deque(maxlen=MAX_FINISHED)
        self._problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="library-indexer", daemon=True)
        self._thread.start()

    # -- requests ----------------------------------------------------------------------
    def submit(self, raw_path: str | Path, *, reason: str = "api", model: str = "auto") -> IndexRun:
        """Queue ``raw_path`` (checked now: a missing or unreadable folder is an error).
        Returns the waiting request, or the one already waiting for the same folder."""
        path = str(check_folder(raw_path))
        with self._lock:
            if self._stop.is_set():
                raise ShuttingDown("the server is shutting down")
            for waiting in self._queue:
                if waiting.path == path and waiting.model == model:
                    return waiting
            run = IndexRun(path=path, reason=reason, queued_at=_now(), model=model)
            self._queue.append(run)
            self._lock.notify_all()
            return run

    def report_problem(self, key: str, message: str | None) -> None:
        """Set (or clear, with None) a standing problem shown in the status."""
        with self._lock:
            if message is None:
                self._problems.pop(key, None)
            else:
                self._problems[key] = message

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

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "running": self._current is not None,
                "current": self._current.as_dict() if self._current else None,
                "queued": [run.as_dict() for run in self._queue],
                "finished": [run.as_dict() for run in reversed(self._finished)],
                "problems": [self._problems[k] for k in sorted(self._problems)],
            }

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the batch in progress (what it embedded stays recorded)."""
        with self._lock:
            self._stop.set()
            self._queue.clear()
            self._lock.notify_all()
        self._thread.join(timeout)

    # -- the worker ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stop.is_set():
                    self._lock.wait()
                if self._stop.is_set():
                    return
                run = self._queue.popleft()
                self._current = run
                run.started_at, run.phase = _now(), "scanning"
            self._run(run)
            with self._lock:
                run.finished_at = _now()
                self._current = None
                self._finished.append(run)
                self._lock.notify_all()
            if self._on_finished is not None:
                try:
                    self._on_finished(run)
                except Exception:  # a hook must not kill the worker
                    logger.exception("index run hook failed")

    def _run(self, run: IndexRun) -> None:
        def progress(total: int) -> Callable[[int], None]:
            with self._lock:
                run.total, run.phase = total, "embedding"

            def tick(count: int) -> None:
                with self._lock:
                    run.done += count
                if self._stop.is_set():
                    raise _Stopped

            return tick

        try:
            root = check_folder(run.path)
            keys = models_to_index(self._ctx, run.model)
            run.report = index_paths(self._ctx, [root], model_keys=keys, progress=progress)
            run.phase = "done"
            logger.info(
                "indexed %s (%s): %d new, %d failed, %d missing",
                run.path,
                run.reason,
                run.report.indexed,
                run.report.failed,
                run.report.missing,
            )
        except _Stopped:
            run.phase, run.error = "failed", "stopped: the server is shutting down"
        except ServiceError as exc:
            run.phase, run.error = "failed", exc.detail
            logger.warning("indexing %s failed: %s", run.path, exc.detail)
        except OSError as exc:  # the folder went away or became unreadable mid-run
            run.phase, run.error = "failed", f"cannot read: {exc}"
            logger.warning("indexing %s failed: %s", run.path, exc)
        except Exception as exc:  # the thread has nobody to raise to; keep it for the status
            run.phase, run.error = "failed", f"{type(exc).__name__}: {exc}"
            logger.exception("indexing %s failed", run.path)


def _identity(path: Path) -> tuple[int, int] | None:
    """Which folder a path names now (device and inode), or None when it names none."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


@dataclass
class _Root:
    path: Path
    present: bool = True
    next_check: float = 0.0
    changes: int = field(default=0)
    watched_before: bool = False


class LibraryWatcher:
    """Watches folders and queues one index request per changed folder per batch."""

    def __init__(
        self,
        indexer: LibraryIndexer,
        roots: Sequence[Path],
        *,
        debounce_ms: int = 1000,
        poll_ms: int = 1000,
    ) -> None:
        self._indexer = indexer
        self._roots = [_Root(Path(os.path.expanduser(str(r))).resolve()) for r in roots]
        self._debounce_ms = debounce_ms
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="library-watcher", daemon=True)

    def start(self) -> None:
        """Watch the folders; each is indexed (incrementally) once its watch is in place,
        so nothing written between the scan and the watch is missed."""
        for root in self._roots:
            self._check_present(root)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _queue(self, root: Path | _Root, reason: str) -> None:
        item = root if isinstance(root, _Root) else next(r for r in self._roots if r.path == root)
        try:
            self._indexer.submit(item.path, reason=reason)
        except ServiceError as exc:
            self._mark_missing(item, exc.detail)
        else:
            self._mark_present(item)

    def _mark_missing(self, root: _Root, detail: str) -> None:
        if root.present:
            logger.warning("watched folder %s is unavailable: %s", root.path, detail)
        root.present = False
        root.next_check = time.monotonic() + RECHECK_MISSING_S
        self._indexer.report_problem(
            f"watch:{root.path}", f"watched folder {root.path} is unavailable: {detail}"
        )

    def _mark_present(self, root: _Root) -> None:
        if not root.present:
            logger.info("watched folder %s is back", root.path)
        root.present = True
        self._indexer.report_problem(f"watch:{root.path}", None)

    def _check_present(self, root: _Root) -> bool:
        try:
            check_folder(root.path)
        except ServiceError as exc:
            self._mark_missing(root, exc.detail)
            return False
        self._mark_present(root)
        return True

    def _loop(self) -> None:
        from watchfiles import watch

        while not self._stop.is_set():
            watched = [r for r in self._roots if r.present and r.path.is_dir()]
            if not watched:
                self._stop.wait(RECHECK_MISSING_S)
                self._recheck_missing()
                continue
            scanned = False
            # A folder deleted and made again at once is a new folder: the watch on the
            # old one would hear nothing from it. An event on the folder itself, or a
            # new identity (inodes may be reused, so not alone), starts a new watch.
            identities = {r.path: _identity(r.path) for r in watched}
            try:
                for changes in watch(
                    *[r.path for r in watched],
                    # Yield once the folders were quiet for debounce_ms; during a long
                    # import, at least every MAX_BATCH_FACTOR x that.
                    step=self._debounce_ms,
                    debounce=max(self._debounce_ms * MAX_BATCH_FACTOR, 10_000),
                    stop_event=self._stop,
                    rust_timeout=self._poll_ms,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                    ignore_permission_denied=True,
                ):
                    if not scanned:  # the first yield: the watch is in place now
                        scanned = True
                        for root in watched:
                            self._queue(root, "watch" if root.watched_before else "start")
                            root.watched_before = True
                    paths = {path for _, path in changes}
                    self._handle(watched, paths)
                    if (
                        any(str(r.path) in paths for r in watched)  # the folder itself
                        or self._recheck_missing()
                        or any(not r.path.is_dir() for r in watched)
                        or any(_identity(r.path) != identities[r.path] for r in watched)
                    ):
                        break  # a folder came back, went away or was replaced: watch again
            except (OSError, RuntimeError) as exc:  # a folder vanished under the watcher
                logger.warning("watching %s stopped: %s", [str(r.path) for r in watched], exc)
                self._stop.wait(1.0)
            for root in watched:
                if not root.path.is_dir():
                    self._mark_missing(root, "the folder is gone")

    def _handle(self, watched: Sequence[_Root], paths: set[str]) -> None:
        for root in watched:
            prefix = str(root.path) + os.sep
            hits = [p for p in paths if p.startswith(prefix) or p == str(root.path)]
            if not hits:
                continue
            if not root.path.is_dir():
                self._mark_missing(root, "the folder is gone")
                continue
            root.changes += len(hits)
            logger.info("%d changes under %s: re-indexing it", len(hits), root.path)
            self._queue(root, "watch")

    def _recheck_missing(self) -> bool:
        """Look again for missing folders whose time has come; True if one is back."""
        back = False
        now = time.monotonic()
        for root in self._roots:
            if root.present or now < root.next_check:
                continue
            if self._check_present(root):
                back = True  # the next watch session indexes it once it is watched again
            else:
                root.next_check = now + RECHECK_MISSING_S
        return back
