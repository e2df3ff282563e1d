"""Free space on DATA_DIR's disk, checked before writes rather than found by a crash.

The embedded vector store writes through memory-mapped, sparsely preallocated files: on
a full filesystem a write to one of their pages kills the process with SIGBUS, with no
error to catch. So every write path asks :meth:`DiskSpace.check` first (each index
batch, upload, re-embed batch and ingest) and is refused with
:class:`InsufficientStorage` (507) while less than ``MIN_FREE_DISK_MB`` is free; reads
and searches never ask.
"""

from __future__ import annotations

import errno
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from image_search_service.core.errors import InsufficientStorage

logger = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class DiskState:
    path: Path
    free_mb: int
    reserve_mb: int

    @property
    def low(self) -> bool:
        return self.free_mb < self.reserve_mb


class DiskSpace:
    """DATA_DIR's filesystem and the free space kept in reserve on it."""

    def __init__(self, path: Path, reserve_mb: int) -> None:
        self.path = path
        self.reserve_mb = reserve_mb

    def free_bytes(self) -> int:
        """Free bytes for this process (the nearest existing folder's filesystem)."""
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def state(self) -> DiskState:
        return DiskState(self.path, self.free_bytes() // MB, self.reserve_mb)

    def check(self, what: str) -> None:
        """Raise :class:`InsufficientStorage` if ``what`` (a write) may not start now."""
        state = self.state()
        if state.low:
            raise InsufficientStorage(
                f"cannot {what}: the disk of {self.path} has {state.free_mb} MB free, "
                f"less than the {state.reserve_mb} MB kept free (MIN_FREE_DISK_MB); "
                "free some space and try again"
            )


def is_disk_full(exc: BaseException) -> bool:
    """An ENOSPC (or SQLite's "database or disk is full") anywhere in the chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(current) or "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(what: str, path: Path) -> InsufficientStorage:
    return InsufficientStorage(
        f"cannot {what}: the disk of {path} is full; free some space and try again"
    )
