"""Index folders: scan, dedupe by content hash, reconcile with the DB, embed.

Incremental: files whose size and mtime are unchanged are not re-read; files that
disappeared are marked missing and their points removed from every collection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG
from uuid import UUID

from sqlalchemy.orm import Session

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import FolderNotFound, FolderUnreadable
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.images.s3 import as_s3_uri
from image_search_service.images.scan import content_hash, scan_images
from image_search_service.services.library.decoding import AssetRef
from image_search_service.services.library.indexing import (
    IndexReport,
    ProgressFactory,
    embed_refs,
    forget_asset,
    models_needed,
    prepare_collections,
    upsert_asset,
)
from image_search_service.services.metadata.service import needs_metadata_refresh, refresh_metadata


def check_folder(raw: str | Path) -> Path | str:
    """The absolute folder (or file) to index, or a clear error for the client. An
    ``s3://bucket/prefix`` URI is returned as it is: the run reports a missing bucket
    or refused credentials in one line (see ``buckets.py``)."""
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


def index_folders(
    ctx: ServiceContext,
    roots: Sequence[Path],
    *,
    model_keys: Sequence[ModelKey],
    report: IndexReport,
    progress: ProgressFactory | None = None,
) -> bool:
    """Index these folders and files; True when anything was embedded."""
    specs = [ctx.spec(k) for k in model_keys]
    refresh: list[tuple[UUID, Path]] = []
    with ctx.transaction() as session:
        to_embed = _reconcile(ctx, session, roots, specs, report, refresh)
    prepare_collections(ctx, model_keys, to_embed)
    embed_refs(ctx, to_embed, report=report, progress=progress)
    report.metadata_refreshed = refresh_metadata(ctx, refresh)
    return bool(to_embed)


def _reconcile(
    ctx: ServiceContext,
    session: Session,
    roots: Sequence[Path],
    specs: Sequence[ModelSpec],
    report: IndexReport,
    refresh: list[tuple[UUID, Path]],
) -> list[tuple[AssetRef, tuple[ModelKey, ...]]]:
    """Bring the DB in line with the files; returns what each asset still needs embedded
    and fills ``refresh`` with unchanged photos whose sidecar metadata changed."""
    to_embed: list[tuple[AssetRef, tuple[ModelKey, ...]]] = []
    seen: set[str] = set()
    all_models = tuple(s.key for s in specs)
    refused: list[Path] = []

    def refuse(path: Path, reason: str) -> None:
        refused.append(path)
        report.failed += 1
        report.failures.append({"path": str(path), "error": reason})

    found: list[tuple[Path, int, int]] = []
    for path in scan_images(
        roots,
        on_refused=refuse,
        on_skipped=lambda p: report.note_unsupported(str(p)),
        exclude=[ctx.settings.data_dir],  # its thumbnails are not photos of the library
    ):
        report.scanned += 1
        key = str(path)
        seen.add(key)
        try:
            stat = path.stat()
        except OSError as exc:
            report.failed += 1
            report.failures.append({"path": key, "error": f"cannot read: {exc}"})
            continue
        if not S_ISREG(stat.st_mode):
            # Opening a named pipe blocks until someone writes to it: never try.
            refuse(path, "not a regular file (a pipe, socket or device); not indexed")
            continue
        found.append((path, stat.st_size, stat.st_mtime_ns))
    # The DB is asked in bulk (a query per 500 files, not several per file): on a first
    # index this loop runs before the model can start, on one core.
    recorded = repo.assets_by_paths(session, [str(path) for path, _, _ in found])
    # Hashing new or changed files (a few ms per MB) runs in threads.
    with ThreadPoolExecutor(max_workers=ctx.threads.decode_workers) as pool:
        probes: list[tuple[Path, Asset | None, Future[str] | None, int, int]] = []
        for path, size, mtime_ns in found:
            asset = recorded.get(str(path))
            unchanged = (
                asset is not None
                and asset.size_bytes == size
                and asset.mtime_ns == mtime_ns
                and asset.status != AssetStatus.MISSING
            )
            hashing = None if unchanged else pool.submit(content_hash, path)
            probes.append((path, asset, hashing, size, mtime_ns))
        digests: dict[Path, str] = {}
        for path, _, future, _, _ in probes:
            if future is not None:
                try:
                    digests[path] = future.result()
                except OSError as exc:
                    report.failed += 1
                    report.failures.append({"path": str(path), "error": f"cannot read: {exc}"})
    taken = repo.known_hashes(session, list(digests.values()))
    refused_keys = {str(path) for path in refused}

    def present(asset: Asset) -> bool:
        # A path refused in this run (now a link out of the library) holds nothing: an
        # identical copy elsewhere takes its asset over (id and edits kept), rather than
        # counting as a duplicate of an asset that is about to be forgotten.
        return asset.path not in refused_keys and _file_present(asset)

    for path, asset, future, size, mtime_ns in probes:
        unchanged = future is None
        new = False
        if future is not None:
            digest = digests.get(path)
            if digest is None:  # could not be read (reported above)
                continue
            if asset is None and digest not in taken:
                # New content at a new path, the common case of a first index.
                asset = repo.add_asset(
                    session,
                    path=str(path),
                    content_hash=digest,
                    size_bytes=size,
                    mtime_ns=mtime_ns,
                    flush=False,  # flushed together, by the next query or below
                )
                new = True
            else:
                asset = upsert_asset(
                    ctx,
                    session,
                    key=str(path),
                    digest=digest,
                    size=size,
                    mtime_ns=mtime_ns,
                    report=report,
                    present=present,
                )
            taken.add(digest)  # a copy later in this run is a duplicate of this one
        if asset is None:  # a duplicate of another asset
            continue
        if asset.status == AssetStatus.FAILED and unchanged:
            report.skipped += 1  # unreadable and unchanged: its reason is already recorded
            continue
        needed = all_models if new else models_needed(session, asset, specs=specs)
        if needed:
            to_embed.append((AssetRef(asset.id, path), needed))  # reads metadata too
        else:
            report.skipped += 1
            if needs_metadata_refresh(path, asset.sidecar_signature):
                refresh.append((asset.id, path))
    for path in refused:  # it was a library file once: it is not one now
        known = repo.asset_by_path(session, str(path))
        if known is not None:
            forget_asset(ctx, session, known)
    session.flush()
    _mark_missing(ctx, session, roots, seen, report)
    return to_embed


def _file_present(asset: Asset) -> bool:
    return asset.status != AssetStatus.MISSING and Path(asset.path).exists()


def _mark_missing(
    ctx: ServiceContext,
    session: Session,
    roots: Sequence[Path],
    seen: set[str],
    report: IndexReport,
) -> None:
    prefixes = [
        str(r.resolve()) + os.sep if r.resolve().is_dir() else str(r.resolve()) for r in roots
    ]
    gone = [
        asset_id
        for asset_id, path in repo.asset_paths_under(session, prefixes)
        if path not in seen and not Path(path).exists()
    ]
    for chunk in chunked(gone, 500):
        for asset in repo.get_assets(session, chunk).values():
            ctx.delete_points([asset.id])
            repo.clear_embeddings(session, asset.id)
            asset.status = AssetStatus.MISSING
            report.missing += 1
