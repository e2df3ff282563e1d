"""Find image files under folders, and hash their contents."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from image_search_service.images.loading import SUPPORTED_SUFFIXES


def scan_images(
    roots: Iterable[Path],
    *,
    on_refused: Callable[[Path, str], None] | None = None,
    on_skipped: Callable[[Path], None] | None = None,
    exclude: Iterable[Path] = (),
) -> Iterator[Path]:
    """Yield image files (by suffix) below each root, sorted, skipping hidden entries
    and the folders in ``exclude`` (the service's own data folder, when it lies inside
    a library).

    Every other (non-hidden) file is passed to ``on_skipped``, so a caller can report
    what it did not index instead of leaving it out silently.

    Symlink policy: a root given by the user is resolved and trusted. Below it, a
    symlinked file is indexed only when its target lies inside the same root (so the
    library never reaches outside the folders it was pointed at); one pointing
    elsewhere is reported to ``on_refused`` with its reason and skipped. Symlinked
    folders are not followed.
    """
    seen: set[Path] = set()
    skip = frozenset(p.resolve() for p in exclude)
    for root in roots:
        root = root.resolve()
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = _walk(root, skip)
        for path in candidates:
            if path in seen:
                continue
            seen.add(path)
            if not is_image_name(path.name):
                if on_skipped is not None:
                    on_skipped(path)
                continue
            if path.is_symlink() and not _inside(path, root):
                if on_refused is not None:
                    on_refused(path, "symlink to a file outside the indexed folder; not indexed")
                continue
            yield path


def is_image_name(name: str) -> bool:
    """Whether a file (or object key) has the suffix of a format we decode."""
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # dangling or looping link
        return False


def _walk(root: Path, skip: frozenset[Path] = frozenset()) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and Path(dirpath, d) not in skip
        )
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath) / filename


def content_hash(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
