"""Watched folders: :class:`LibraryWatcher` watches ``LIBRARY_PATHS`` (the
``watchfiles`` package) and asks for a debounced index run per changed folder (they run
on the process's dispatcher, see ``background.py``). A folder that disappears is
reported (logged, and in the index status) and looked for again every few seconds; its
assets are left alone until it is back (an unmounted disk is not a deleted library).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from image_search_service.core.errors import InsufficientStorage, ServiceError
from image_search_service.services.library.folders import check_folder

logger = logging.getLogger(__name__)

RECHECK_MISSING_S = 5.0
MAX_BATCH_FACTOR = 10


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
    paused: bool = False  # present, but the disk is below its reserve


# Asks for an index run of a folder, for a reason ("start", "watch"); raises a
# ServiceError when the folder cannot be indexed now.
SubmitIndex = Callable[[Path, str], object]


class LibraryWatcher:
    """Watches folders and asks for one index run per changed folder per batch."""

    def __init__(
        self,
        submit: SubmitIndex,
        roots: Sequence[Path],
        *,
        debounce_ms: int = 1000,
        poll_ms: int = 1000,
        check_disk: Callable[[], None] = lambda: None,
    ) -> None:
        self._submit = submit
        self._check_disk = check_disk  # raises InsufficientStorage while writes wait
        self._problems: dict[Path, str] = {}
        self._problems_lock = threading.Lock()
        self._roots = [_Root(Path(os.path.expanduser(str(r))).resolve()) for r in roots]
        self._debounce_ms = debounce_ms
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="library-watcher", daemon=True)

    @property
    def roots(self) -> list[Path]:
        return [root.path for root in self._roots]

    def problems(self) -> list[str]:
        """Standing problems for the index status: watched folders that are unavailable."""
        with self._problems_lock:
            return [self._problems[path] for path in sorted(self._problems)]

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
            self._submit(item.path, reason)
        except InsufficientStorage as exc:
            # Paused, not lost: once space returns, the folder is watched again and its
            # first run re-reads it whole, so changes made meanwhile are indexed then.
            self._mark_missing(item, exc.detail, paused=True)
        except ServiceError as exc:
            self._mark_missing(item, exc.detail)
        else:
            self._mark_present(item)

    def _mark_missing(self, root: _Root, detail: str, *, paused: bool = False) -> None:
        problem = (
            f"indexing of watched folder {root.path} is paused: {detail}"
            if paused
            else f"watched folder {root.path} is unavailable: {detail}"
        )
        if root.present:
            logger.warning("%s", problem)
        root.present = False
        root.paused = paused
        root.next_check = time.monotonic() + RECHECK_MISSING_S
        with self._problems_lock:
            self._problems[root.path] = problem

    def _mark_present(self, root: _Root) -> None:
        if not root.present:
            logger.info(
                "watched folder %s: %s",
                root.path,
                "indexing resumes" if root.paused else "the folder is back",
            )
        root.present, root.paused = True, False
        with self._problems_lock:
            self._problems.pop(root.path, None)

    def _check_present(self, root: _Root) -> bool:
        try:
            check_folder(root.path)
            if root.paused:
                self._check_disk()
        except InsufficientStorage as exc:
            self._mark_missing(root, exc.detail, paused=True)
            return False
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
