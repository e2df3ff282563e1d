"""Index folders: scan, dedupe by content hash, reconcile with the DB, embed.

Incremental: files whose size and mtime are unchanged are not re-read; files that
disappeared are marked missing and their points removed from every collection.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any
from uuid import UUID

from sqlalchemy.orm import Session

from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import ModelMismatch
from image_search_service.core.specs import BASELINE, ModelSpec
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.images.s3 import as_s3_uri
from image_search_service.images.scan import content_hash, scan_images
from image_search_service.services.context import ServiceContext
from image_search_service.services.metadata import needs_metadata_refresh, refresh_metadata
from image_search_service.services.pipeline import AssetRef, embed_assets
from image_search_service.vector.base import verify_collection

logger = logging.getLogger(__name__)


MAX_LISTED_UNSUPPORTED = 1000


@dataclass
class IndexReport:
    scanned: int = 0
    indexed: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    missing: int = 0
    metadata_refreshed: int = 0  # unchanged photos whose sidecar changed: re-read
    seconds: float = 0.0
    images_per_second: float = 0.0
    models: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    # Files not indexed because their format is not one we decode (by suffix): counted,
    # and listed up to MAX_LISTED_UNSUPPORTED paths.
    unsupported: int = 0
    unsupported_files: list[str] = field(default_factory=list)

    def note_unsupported(self, path: str) -> None:
        self.unsupported += 1
        if len(self.unsupported_files) < MAX_LISTED_UNSUPPORTED:
            self.unsupported_files.append(path)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFactory = Callable[[int], Callable[[int], None]]


def models_to_index(ctx: ServiceContext, requested: str) -> list[ModelKey]:
    """``auto``: the baseline plus every model whose collection exists, so that new
    photos land in a collection being migrated to and the migration stays finished."""
    if requested == "all":
        return list(MODEL_KEYS)
    if requested in MODEL_KEYS:
        return [requested]
    return [k for k in MODEL_KEYS if k == BASELINE or ctx.has_collection(k)]


def index_paths(
    ctx: ServiceContext,
    roots: Sequence[Path | str],
    *,
    model_keys: Sequence[ModelKey],
    progress: ProgressFactory | None = None,
) -> IndexReport:
    """Index folders, files and ``s3://bucket/prefix`` URIs (see services/buckets.py)."""
    started = time.perf_counter()
    report = IndexReport(models=list(model_keys))
    specs = [ctx.spec(k) for k in model_keys]
    local: list[Path] = []
    buckets: list[str] = []
    for root in roots:
        uri = as_s3_uri(root)
        if uri is not None:
            buckets.append(uri)
            continue
        path = Path(root)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path.absolute()}")
        local.append(path)
    for key in model_keys:
        # Before anything is written: a stamp mismatch stops the run with nothing changed.
        _check_or_renew_collection(ctx, key)

    embedded = False
    if local:
        refresh: list[tuple[UUID, Path]] = []
        with ctx.transaction() as session:
            to_embed = _reconcile(ctx, session, local, specs, report, refresh)
        prepare_collections(ctx, model_keys, to_embed)
        embed_refs(ctx, to_embed, report=report, progress=progress)
        embedded = bool(to_embed)
        report.metadata_refreshed = refresh_metadata(ctx, refresh)
    if buckets:
        from image_search_service.services.buckets import index_bucket

        prepare_collections(ctx, model_keys, [])
        for uri in buckets:
            embedded |= index_bucket(ctx, uri, specs=specs, report=report, progress=progress)
    if not local and not buckets:
        prepare_collections(ctx, model_keys, [])
    if embedded:
        for spec in specs:
            ctx.store.optimize(spec.collection)
    report.seconds = round(time.perf_counter() - started, 3)
    report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
    return report


def prepare_collections(
    ctx: ServiceContext,
    model_keys: Sequence[ModelKey],
    to_embed: Sequence[tuple[AssetRef, tuple[ModelKey, ...]]],
) -> None:
    """Load the models that have work, then make sure every collection exists: a model
    that cannot load (offline, wrong name) fails here, before its collection is made, so
    no empty collection is stamped with an unusable model."""
    needed = {key for _, keys in to_embed for key in keys}
    for key in model_keys:
        if key in needed:
            ctx.encoder(key).load()
        ctx.ensure_collection(key)


def _check_or_renew_collection(ctx: ServiceContext, key: ModelKey) -> None:
    """Raise ModelMismatch if the collection holds another model's vectors; an EMPTY
    collection stamped with another model (left by a run whose model never loaded, or
    whose every file failed) holds nothing to protect and is dropped, to be re-made for
    the configured model."""
    spec = ctx.collection_spec(key)
    if not ctx.store.has_collection(spec.name):
        return
    try:
        verify_collection(ctx.store, spec)
    except ModelMismatch:
        if ctx.store.count(spec.name) > 0:
            raise
        logger.info("collection %s is empty and stamped for another model: re-made", spec.name)
        ctx.forget_verified(key)
        ctx.store.drop_collection(spec.name)


def embed_refs(
    ctx: ServiceContext,
    to_embed: Sequence[tuple[AssetRef, tuple[ModelKey, ...]]],
    *,
    report: IndexReport,
    progress: ProgressFactory | None = None,
    names: dict[UUID, str] | None = None,
) -> None:
    """Embed each asset with the models it still needs, grouped so that nothing is
    encoded twice; ``names`` says what to call an asset in failures (default: its path)."""
    groups: dict[tuple[ModelKey, ...], list[AssetRef]] = {}
    for ref, keys in to_embed:
        groups.setdefault(keys, []).append(ref)
    tick = progress(len(to_embed)) if progress and to_embed else None
    for keys, refs in groups.items():
        result = embed_assets(
            refs,
            encoders=[ctx.encoder(k) for k in keys],
            store=ctx.store,
            session_factory=ctx.session_factory,
            batch_size=ctx.settings.batch_size,
            decode_workers=ctx.threads.decode_workers,
            max_pixels=ctx.settings.max_image_pixels,
            on_progress=tick,
        )
        report.indexed += result.done
        report.failed += result.failed
        paths = {ref.id: (names or {}).get(ref.id, str(ref.path)) for ref in refs}
        report.failures.extend(
            {"path": paths[asset_id], "error": reason} for asset_id, reason in result.failures
        )


def models_needed(
    session: Session, asset: Asset, *, specs: Sequence[ModelSpec]
) -> tuple[ModelKey, ...]:
    rows = repo.embedded_keys(session, asset.id)
    return tuple(s.key for s in specs if not repo.is_done_for(rows.get(s.key), s))


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


def upsert_asset(
    ctx: ServiceContext,
    session: Session,
    *,
    key: str,
    digest: str,
    size: int,
    mtime_ns: int,
    report: IndexReport,
    present: Callable[[Asset], bool],
    etag: str | None = None,
) -> Asset | None:
    """New or changed file or object at ``key`` (its path or URI): returns its asset, or
    None when it duplicates another asset that is still ``present``."""
    by_path = repo.asset_by_path(session, key)
    by_hash = repo.asset_by_hash(session, digest)
    if by_hash is not None and by_hash is not by_path:
        if present(by_hash):
            report.duplicates += 1
            report.skipped += 1
            if by_path is not None:  # this path used to hold other content
                forget_asset(ctx, session, by_path)
            return None
        # The known content moved here: keep its id (and its points, unless it was missing).
        if by_path is not None:
            forget_asset(ctx, session, by_path)
        if by_hash.status == AssetStatus.MISSING:
            repo.clear_embeddings(session, by_hash.id)
            by_hash.status = AssetStatus.ACTIVE
        by_hash.path, by_hash.size_bytes, by_hash.mtime_ns = key, size, mtime_ns
        by_hash.etag = etag
        return by_hash
    if by_path is not None:
        changed = by_path.content_hash != digest or by_path.status == AssetStatus.MISSING
        by_path.size_bytes, by_path.mtime_ns, by_path.content_hash = size, mtime_ns, digest
        by_path.etag = etag
        if changed:  # new content under the old name: old vectors are wrong now
            ctx.delete_points([by_path.id])
            repo.clear_embeddings(session, by_path.id)
            by_path.status, by_path.error = AssetStatus.ACTIVE, None
        return by_path
    return repo.add_asset(
        session, path=key, content_hash=digest, size_bytes=size, mtime_ns=mtime_ns, etag=etag
    )


def forget_asset(ctx: ServiceContext, session: Session, asset: Asset) -> None:
    ctx.delete_points([asset.id])
    meta_repo.forget_search_text(session, asset.id)
    repo.delete_asset(session, asset)


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
        a
        for a in repo.assets_under(session, prefixes)
        if a.path not in seen and not Path(a.path).exists()
    ]
    for asset in gone:
        ctx.delete_points([asset.id])
        repo.clear_embeddings(session, asset.id)
        asset.status = AssetStatus.MISSING
        report.missing += 1
