"""Index an S3-compatible bucket (``s3://bucket/prefix/``), incrementally.

1. List the prefix (metadata only). Keys of formats we do not decode are reported as
   unsupported; objects whose ETag, size and last-modified match what was indexed, and
   that every model already covers, are skipped without a download.
2. The rest is processed in chunks of :data:`CHUNK_OBJECTS`. A chunk's objects are
   streamed to temporary files by ``S3_DOWNLOAD_WORKERS`` threads (hashed on the way,
   never held in memory whole), while the previous chunk goes through the usual
   decode -> encode -> upsert pipeline: downloads hide behind the model as decoding does.
3. Assets under the prefix whose objects are no longer listed are marked missing and
   their points removed, as for files deleted from a folder.

An asset's path is its ``s3://bucket/key`` URI. An object that fails (removed between
listing and download, unreadable) fails alone with its reason; a missing bucket or
refused credentials stop the run with one clear error.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

from sqlalchemy.orm import Session

from image_search_service.context import ServiceContext
from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import InvalidRequest, ServiceError
from image_search_service.core.specs import ModelSpec
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.images.s3 import S3Location, S3Object, parse_uri
from image_search_service.images.scan import is_image_name
from image_search_service.services.library.decoding import AssetRef
from image_search_service.services.library.indexing import (
    IndexReport,
    ProgressFactory,
    embed_refs,
    models_needed,
    upsert_asset,
)

logger = logging.getLogger(__name__)

CHUNK_OBJECTS = 64

_Download = tuple[Path, str] | ServiceError  # (local file, sha256) or why it failed


def index_bucket(
    ctx: ServiceContext,
    uri: str,
    *,
    specs: Sequence[ModelSpec],
    report: IndexReport,
    progress: ProgressFactory | None = None,
) -> bool:
    """Index every object below ``uri``; True when anything was embedded."""
    try:
        location = parse_uri(uri)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    listed: dict[str, S3Object] = {}
    for obj in ctx.s3.list_objects(location):
        if obj.key.endswith("/"):
            continue  # a "folder" marker
        if is_image_name(obj.key):
            listed[obj.uri] = obj
        else:
            report.note_unsupported(obj.uri)
    report.scanned += len(listed)
    with ctx.transaction() as session:
        work = _plan(session, listed.values(), specs, report)
        _mark_missing(ctx, session, location, listed, report)
    return _process(ctx, location, work, listed, specs=specs, report=report, progress=progress)


def index_objects(
    ctx: ServiceContext,
    uris: Sequence[str],
    *,
    specs: Sequence[ModelSpec],
    report: IndexReport,
) -> bool:
    """Bring single objects up to date with their bucket (the ingest webhook): an object
    that exists is indexed, one that does not is marked missing. Running it twice for
    the same objects changes nothing the second time (redelivered events are harmless)."""
    embedded = False
    by_bucket: dict[str, list[str]] = {}
    for uri in uris:
        location = parse_uri(uri)
        if not location.prefix or location.prefix.endswith("/"):
            raise InvalidRequest(f"not an object URI (no key): {uri}")
        by_bucket.setdefault(location.bucket, []).append(location.prefix)
    for bucket, keys in by_bucket.items():
        location = S3Location(bucket, "")
        listed: dict[str, S3Object] = {}
        gone: list[str] = []
        for key in dict.fromkeys(keys):
            uri = location.object_uri(key)
            if not is_image_name(key):
                report.note_unsupported(uri)
                continue
            obj = ctx.s3.head(bucket, key)
            if obj is None:
                gone.append(uri)
            else:
                listed[uri] = obj
        report.scanned += len(listed)
        with ctx.transaction() as session:
            work = _plan(session, listed.values(), specs, report)
            for uri in gone:
                asset = repo.asset_by_path(session, uri)
                if asset is not None and asset.status != AssetStatus.MISSING:
                    _forget_points(ctx, session, asset)
                    report.missing += 1
        embedded |= _process(ctx, location, work, listed, specs=specs, report=report)
    return embedded


def _plan(
    session: Session,
    objects: Iterable[S3Object],
    specs: Sequence[ModelSpec],
    report: IndexReport,
) -> list[S3Object]:
    """The objects that need a download: new, changed, or lacking a model's vector."""
    work = []
    for obj in objects:
        asset = repo.asset_by_path(session, obj.uri)
        unchanged = (
            asset is not None
            and asset.etag == obj.etag
            and asset.size_bytes == obj.size
            and asset.mtime_ns == obj.last_modified_ns
            and asset.status != AssetStatus.MISSING
        )
        if asset is not None and unchanged:
            if asset.status == AssetStatus.FAILED or not models_needed(session, asset, specs=specs):
                report.skipped += 1
                continue
        work.append(obj)
    return work


def _process(
    ctx: ServiceContext,
    location: S3Location,
    work: Sequence[S3Object],
    listed: dict[str, S3Object],
    *,
    specs: Sequence[ModelSpec],
    report: IndexReport,
    progress: ProgressFactory | None = None,
) -> bool:
    if not work:
        return False
    tick = progress(len(work)) if progress else None
    chunks = chunked(work, CHUNK_OBJECTS)
    embedded = False
    spool = Path(tempfile.mkdtemp(prefix="image-search-s3-"))
    try:
        with ThreadPoolExecutor(
            max_workers=ctx.settings.s3_download_workers, thread_name_prefix="s3"
        ) as pool:

            def start(number: int) -> list[Future[_Download]]:
                folder = spool / str(number)
                return [
                    pool.submit(_download, ctx, obj, folder / str(i) / obj.name)
                    for i, obj in enumerate(chunks[number])
                ]

            pending = start(0)
            for number, chunk in enumerate(chunks):
                downloads = [f.result() for f in pending]
                # The next chunk downloads while this one is decoded and encoded.
                pending = start(number + 1) if number + 1 < len(chunks) else []
                to_embed, names = _record(ctx, location, chunk, downloads, listed, specs, report)
                embed_refs(ctx, to_embed, report=report, names=names)
                embedded |= bool(to_embed)
                shutil.rmtree(spool / str(number), ignore_errors=True)
                if tick:
                    tick(len(chunk))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return embedded


def _download(ctx: ServiceContext, obj: S3Object, target: Path) -> _Download:
    try:
        return target, ctx.s3.download(obj.bucket, obj.key, target)
    except ServiceError as exc:
        return exc
    except OSError as exc:  # the spool disk is full or unwritable
        return ServiceError(f"{obj.uri}: cannot write a temporary copy: {exc.strerror}")


def _record(
    ctx: ServiceContext,
    location: S3Location,
    chunk: Sequence[S3Object],
    downloads: Sequence[_Download],
    listed: dict[str, S3Object],
    specs: Sequence[ModelSpec],
    report: IndexReport,
) -> tuple[list[tuple[AssetRef, tuple[ModelKey, ...]]], dict[UUID, str]]:
    """Record the chunk's downloaded objects in the DB (one transaction) and say which
    of them still need which models."""
    to_embed: list[tuple[AssetRef, tuple[ModelKey, ...]]] = []
    names: dict[UUID, str] = {}

    def present(asset: Asset) -> bool:
        if asset.status == AssetStatus.MISSING:
            return False
        if asset.path.startswith(location.uri):
            return asset.path in listed
        return not asset.path.startswith("s3://") and Path(asset.path).exists()

    with ctx.transaction() as session:
        for obj, outcome in zip(chunk, downloads, strict=True):
            if isinstance(outcome, ServiceError):
                report.failed += 1
                report.failures.append({"path": obj.uri, "error": outcome.detail})
                continue
            local, digest = outcome
            asset = upsert_asset(
                ctx,
                session,
                key=obj.uri,
                digest=digest,
                size=obj.size,
                mtime_ns=obj.last_modified_ns,
                etag=obj.etag,
                report=report,
                present=present,
            )
            if asset is None:
                continue  # a duplicate of another asset
            needed = models_needed(session, asset, specs=specs)
            if needed:
                to_embed.append((AssetRef(asset.id, local), needed))
                names[asset.id] = obj.uri
            else:
                report.skipped += 1
    return to_embed, names


def _mark_missing(
    ctx: ServiceContext,
    session: Session,
    location: S3Location,
    listed: dict[str, S3Object],
    report: IndexReport,
) -> None:
    for asset in repo.assets_under(session, [location.uri]):
        if asset.path not in listed and asset.status != AssetStatus.MISSING:
            _forget_points(ctx, session, asset)
            report.missing += 1


def _forget_points(ctx: ServiceContext, session: Session, asset: Asset) -> None:
    ctx.delete_points([asset.id])
    repo.clear_embeddings(session, asset.id)
    asset.status = AssetStatus.MISSING
