"""What the folder and the bucket indexer share: the report, which models an asset
still needs, upserting an asset by content hash, and embedding what is new."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy.orm import Session

from image_search_service.captions.space import caption_embedder
from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import ModelMismatch
from image_search_service.core.specs import BASELINE, ModelSpec
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.services.library.captions import embed_pending_captions
from image_search_service.services.library.decoding import AssetRef
from image_search_service.services.library.pipeline import embed_assets
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
    # The caption space (CAPTION_EMBEDDER): captions embedded, and those left pending why.
    captions_embedded: int = 0
    captions_pending: int = 0
    captions_error: str | None = None

    def note_unsupported(self, path: str) -> None:
        self.unsupported += 1
        if len(self.unsupported_files) < MAX_LISTED_UNSUPPORTED:
            self.unsupported_files.append(path)


ProgressFactory = Callable[[int], Callable[[int], None]]


def models_to_index(ctx: ServiceContext, requested: str) -> list[ModelKey]:
    """``auto``: the baseline plus every model whose collection exists, so that new
    photos land in a collection being migrated to and the migration stays finished."""
    if requested == "all":
        return list(MODEL_KEYS)
    if requested in MODEL_KEYS:
        return [requested]
    return [k for k in MODEL_KEYS if k == BASELINE or ctx.has_collection(k)]


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


def check_or_renew_collection(ctx: ServiceContext, key: ModelKey) -> None:
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
            decode_processes=ctx.settings.decode_processes,
            device_decode=ctx.settings.jpeg_device_decode,
            max_pixels=ctx.settings.max_image_pixels,
            on_progress=tick,
            before_write=lambda: ctx.disk.check("index more photos"),
        )
        report.indexed += result.done
        report.failed += result.failed
        paths = {ref.id: (names or {}).get(ref.id, str(ref.path)) for ref in refs}
        report.failures.extend(
            {"path": paths[asset_id], "error": reason} for asset_id, reason in result.failures
        )
    embed_captions(ctx, report=report)


def embed_captions(ctx: ServiceContext, *, report: IndexReport) -> None:
    """After the images: the caption space catches up on every photo it lacks, so the
    captions a failed run left pending are retried by the next run."""
    embedder = caption_embedder(ctx.settings)
    if embedder is None:
        return
    try:
        run = embed_pending_captions(ctx, embedder)
    finally:
        embedder.close()
    report.captions_embedded += run.embedded
    report.captions_pending = run.pending
    report.captions_error = run.reason


def models_needed(
    session: Session, asset: Asset, *, specs: Sequence[ModelSpec]
) -> tuple[ModelKey, ...]:
    rows = repo.embedded_keys(session, asset.id)
    return tuple(s.key for s in specs if not repo.is_done_for(rows.get(s.key), s))


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
