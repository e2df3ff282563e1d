"""Find image files under folders, and hash their contents."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from image_search_service.images.loading import SUPPORTED_SUFFIXES

_HASH_CHUNK = 1 << 20


def scan_images(roots: Iterable[Path]) -> Iterator[Path]:
    """Yield image files (by suffix) below each root, sorted, skipping hidden entries."""
    seen: set[Path] = set()
    for root in roots:
        root = root.resolve()
        if root.is_file():
            candidates: Iterable[Path] = [root]
        else:
            candidates = _walk(root)
        for path in candidates:
            if path.suffix.lower() in SUPPORTED_SUFFIXES and path not in seen:
                seen.add(path)
                yield path


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not filename.startswith("."):
                yield Path(dirpath) / filename


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
