"""Assets one at a time: look up, serve the file or a thumbnail, upload, delete.

Uploads are validated by decoding them before anything is stored, written under
``DATA_DIR/uploads`` by content hash, and indexed like any other file (every model
that has a collection embeds them). Deletes remove the DB row first (the source of
truth, docs/design.md invariant 1) and then the points in every collection.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

from PIL import Image
from sqlalchemy.orm import Session

from image_search_service.context import ServiceContext
from image_search_service.core.disk import is_disk_full
from image_search_service.core.errors import (
    AssetNotFound,
    ImageTooLarge,
    InvalidRequest,
    ServiceError,
    UnsupportedImage,
)
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.metadata_repository import AssetLabels
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.images.loading import FORMAT_SUFFIX, MEDIA_TYPES, load_image
from image_search_service.images.metadata import PersonRegion
from image_search_service.images.s3 import (
    ObjectGone,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
    as_s3_uri,
    parse_object_uri,
)
from image_search_service.images.scan import bytes_hash, content_hash
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import (
    IndexReport,
    forget_asset,
    models_to_index,
)

logger = logging.getLogger(__name__)

THUMBNAIL_SIZES = (128, 256, 512)
MAX_PAGE = 500
MAX_PAGE_OFFSET = 1_000_000_000  # far past any library, and inside SQL's integer range


class AssetFileMissing(ServiceError):
    """The asset is known but its file is gone from disk."""

    status_code = 404


class AssetUnreadable(ServiceError):
    """The asset's file exists but cannot be decoded (its reason is recorded)."""

    status_code = 422


class AssetFileChanged(ServiceError):
    """The file at the asset's path is no longer the file that was indexed."""

    status_code = 409


@dataclass(frozen=True)
class AssetView:
    id: UUID
    path: str
    status: str
    error: str | None
    content_hash: str
    size_bytes: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    created_at: datetime
    updated_at: datetime
    mtime_ns: int
    embeddings: dict[str, str] = field(default_factory=dict)  # model key -> state
    people: tuple[PersonRegion, ...] = ()
    tags: tuple[str, ...] = ()
    caption: str | None = None
    title: str | None = None
    metadata_error: str | None = None  # why some of the file's metadata was not read
    edited: tuple[str, ...] = ()  # fields the user owns: people, tags, caption

    @classmethod
    def of(
        cls,
        asset: Asset,
        embeddings: dict[str, str] | None = None,
        labels: AssetLabels | None = None,
    ) -> AssetView:
        labels = labels or AssetLabels()
        return cls(
            id=asset.id,
            path=asset.path,
            status=asset.status.value,
            error=asset.error,
            content_hash=asset.content_hash,
            size_bytes=asset.size_bytes,
            width=asset.width,
            height=asset.height,
            format=asset.format,
            taken_at=asset.taken_at,
            camera_make=asset.camera_make,
            camera_model=asset.camera_model,
            created_at=asset.created_at,
            updated_at=asset.updated_at,
            mtime_ns=asset.mtime_ns,
            embeddings=embeddings or {},
            people=labels.people,
            tags=labels.tags,
            caption=asset.caption,
            title=asset.title,
            metadata_error=asset.metadata_error,
            edited=tuple(
                name
                for name, flag in (
                    ("people", asset.people_edited),
                    ("tags", asset.tags_edited),
                    ("caption", asset.caption_edited),
                )
                if flag
            ),
        )

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.format or "", "application/octet-stream")


@dataclass(frozen=True)
class AssetPage:
    items: list[AssetView]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class UploadResult:
    asset: AssetView
    created: bool  # False: the same content was already in the library


class AssetService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        # Uploads and deletes of one process run one at a time: two uploads of the same
        # bytes would otherwise race to insert the same path and hash.
        self._write_lock = threading.Lock()

    @property
    def thumbnails_dir(self) -> Path:
        return self.ctx.settings.data_dir / "thumbnails"

    # -- reading -------------------------------------------------------------------------
    def list_assets(self, session: Session, *, limit: int, offset: int) -> AssetPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
        if not 0 <= offset <= MAX_PAGE_OFFSET:
            raise InvalidRequest(f"offset must be between 0 and {MAX_PAGE_OFFSET}")
        rows, total = repo.list_assets(session, limit=limit, offset=offset)
        labels = meta_repo.labels_for(session, [a.id for a in rows])
        items = [AssetView.of(a, labels=labels.get(a.id)) for a in rows]
        return AssetPage(items, total=total, limit=limit, offset=offset)

    def get(self, session: Session, asset_id: UUID) -> AssetView:
        asset = repo.get_asset(session, asset_id)
        if asset is None or asset.status == AssetStatus.MISSING:
            raise AssetNotFound(f"asset {asset_id} not found")
        states = {k: row.state.value for k, row in repo.embedded_keys(session, asset_id).items()}
        labels = meta_repo.labels_for(session, [asset_id]).get(asset_id)
        return AssetView.of(asset, states, labels)

    def file(self, asset: AssetView) -> Path:
        """The local file to serve: only a valid image of the library, and only while it
        is still the file that was indexed (docs/design.md, invariant 9); S3 assets go through
        :meth:`content`.

        A failed (non-image) asset is never served. The path is resolved now, not
        trusted from the DB: it must be a regular file with the recorded size and mtime
        whose content opens as the recorded format; when a symlink is involved (the
        resolved path differs) its content hash must match too, so a link re-pointed
        after indexing serves nothing. The resolved path is what gets served.
        """
        real = self._same_file(asset)
        changed = AssetFileChanged(
            f"the file of asset {asset.id} changed since it was indexed; index it again"
        )
        if _sniff_format(real) != asset.format:
            raise changed
        if real != Path(asset.path) and content_hash(real) != asset.content_hash:
            raise changed
        return real

    def _same_file(self, asset: AssetView) -> Path:
        """The cheap part of :meth:`file`'s check (one stat): servable, a regular file,
        the recorded size and mtime. Enough for a cached thumbnail, which shows the
        indexed content, never what the path holds now."""
        _check_servable(asset)
        if as_s3_uri(asset.path) is not None:
            raise AssetFileMissing(f"asset {asset.id} is an S3 object, not a file: {asset.path}")
        try:
            real = Path(asset.path).resolve(strict=True)
            stat = real.stat()
        except (OSError, RuntimeError):
            raise AssetFileMissing(f"the file of asset {asset.id} is gone: {asset.path}") from None
        if not real.is_file():
            raise AssetFileMissing(f"the file of asset {asset.id} is gone: {asset.path}")
        if stat.st_size != asset.size_bytes or stat.st_mtime_ns != asset.mtime_ns:
            raise AssetFileChanged(
                f"the file of asset {asset.id} changed since it was indexed; index it again"
            )
        return real

    def content(self, asset: AssetView) -> Path | Iterator[bytes]:
        """A local file's path, or an S3 object's bytes streamed through this server.

        Streamed rather than redirected to a presigned URL: the bucket's endpoint is
        often private (a MinIO on the LAN, a loopback address) and unreachable by the
        client; a presigned URL would also bypass the API's own checks (only indexed
        library assets are served) and put a signature in browser histories and
        proxy logs. The credentials never leave this process."""
        uri = as_s3_uri(asset.path)
        if uri is None:
            return self.file(asset)
        _check_servable(asset)
        bucket, key = parse_object_uri(uri)
        try:
            return self.ctx.s3.open(bucket, key)
        except (ObjectGone, SourceNotFound):
            raise AssetFileMissing(f"the object of asset {asset.id} is gone: {uri}") from None
        except SourceAccessDenied as exc:
            raise SourceUnavailable(f"the bucket of asset {asset.id}: {exc.detail}") from None

    def thumbnail(self, asset: AssetView, *, size: int) -> Path | bytes:
        """A JPEG at most ``size`` pixels on its longer side, cached by content hash (the
        bytes themselves while the disk is below its reserve: reads never fail on it)."""
        if size not in THUMBNAIL_SIZES:
            raise InvalidRequest(f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")
        digest = asset.content_hash
        cached = self.thumbnails_dir / digest[:2] / f"{digest}-{size}.jpg"
        if cached.is_file():
            if as_s3_uri(asset.path) is None:
                self._same_file(asset)  # served only while the file is the indexed one
            else:
                _check_servable(asset)
            return cached
        with self._local_copy(asset) as source:
            try:
                loaded = load_image(
                    source, max_pixels=self.ctx.settings.max_image_pixels, min_side=size
                )
            except (UnsupportedImage, ImageTooLarge) as exc:
                raise AssetUnreadable(f"asset {asset.id} cannot be decoded: {exc.detail}") from None
        image = loaded.image
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=85, optimize=True)
        if self.ctx.disk.state().low:  # served, not cached: the reserve is for the library
            return encoded.getvalue()
        try:
            _write_atomically(cached, lambda fh: fh.write(encoded.getvalue()))
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return encoded.getvalue()
        return cached

    @contextmanager
    def _local_copy(self, asset: AssetView) -> Iterator[Path]:
        """The asset's file; an S3 object is streamed to a temporary file first."""
        content = self.content(asset)
        if isinstance(content, Path):
            yield content
            return
        with tempfile.TemporaryDirectory(prefix="image-search-thumb-") as tmp:
            target = Path(tmp) / asset.path.rsplit("/", 1)[-1]
            try:
                with target.open("wb") as fh:
                    for chunk in content:
                        fh.write(chunk)
            except (ObjectGone, SourceNotFound):
                raise AssetFileMissing(
                    f"the object of asset {asset.id} is gone: {asset.path}"
                ) from None
            yield target

    # -- writing -------------------------------------------------------------------------
    def upload(self, data: bytes) -> UploadResult:
        """Validate, store under ``DATA_DIR/uploads`` and index with every model that has a
        collection. Raises UnsupportedImage (415) or ImageTooLarge (413) before storing."""
        settings = self.ctx.settings
        if len(data) > settings.max_upload_bytes:
            raise ImageTooLarge(
                f"upload is {len(data):,} bytes, over the limit of "
                f"{settings.max_upload_bytes:,} (MAX_UPLOAD_BYTES)"
            )
        # Reduced decode: this only validates the pixels and reads the metadata.
        meta = load_image(
            data, max_pixels=settings.max_image_pixels, min_side=THUMBNAIL_SIZES[-1]
        ).meta
        digest = bytes_hash(data)
        self.ctx.disk.check("store the upload")
        with self._write_lock:
            with self.ctx.transaction() as session:
                known = repo.asset_by_hash(session, digest)
                known_path = (
                    Path(known.path)
                    if known is not None and known.status == AssetStatus.ACTIVE
                    else None
                )
            if known_path is not None and known_path.is_file():
                target, created = known_path, False
            else:
                target = settings.uploads_dir / digest[:2] / f"{digest}{FORMAT_SUFFIX[meta.format]}"
                created = True
                if not target.is_file():
                    _write_atomically(target, lambda fh: fh.write(data), durable=True)
            # Known content too: indexing is incremental, so this embeds only what an
            # interrupted earlier upload (or a collection made since) still lacks.
            report = index_paths(self.ctx, [target], model_keys=models_to_index(self.ctx, "auto"))
            with self.ctx.transaction() as session:
                asset = repo.asset_by_path(session, str(target.resolve()))
                if asset is None:  # pragma: no cover - index_paths records every new file
                    raise UnsupportedImage(f"upload could not be indexed: {report.failures}")
                if asset.status == AssetStatus.FAILED:
                    raise UnsupportedImage(f"upload could not be decoded: {asset.error}")
                if created:
                    logger.info("uploaded %s (%s, %d bytes)", asset.id, meta.format, len(data))
                return UploadResult(self.get(session, asset.id), created=created)

    def reconcile_uploads(self) -> IndexReport:
        """Bring uploads and assets back in line after a crash (run on start): an upload
        whose indexing was cut short is indexed again, one whose file is gone is
        forgotten, a file with no asset yet is indexed, and half-written temporary files
        are deleted. Each repair is logged; nothing is left at 422."""
        root = self.ctx.settings.uploads_dir.resolve()
        keys = models_to_index(self.ctx, "auto")
        report = IndexReport(models=list(keys))
        if not root.is_dir():
            return report
        files: dict[str, Path] = {}
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            if path.name.startswith(_TEMP_PREFIX):
                # A write the crash cut short, unless it is recent: another server process
                # on this DATA_DIR (one that took over the repairs) may be writing it now.
                if time.time() - path.stat().st_mtime >= STALE_UPLOAD_S:
                    path.unlink(missing_ok=True)
                    logger.warning("uploads: deleted %s, half-written when a server stopped", path)
            else:
                files[str(path)] = path
        with self.ctx.transaction() as session:
            rows = repo.assets_with_prefix(session, str(root) + os.sep)
            done = {
                k: repo.done_asset_ids(session, self.ctx.spec(k), [a.id for a in rows])
                for k in keys
            }
            unfinished: list[Path] = []
            for asset in rows:
                file = files.pop(asset.path) if asset.path in files else None
                if file is None:
                    forget_asset(self.ctx, session, asset)
                    report.missing += 1
                    logger.warning(
                        "uploads: forgot asset %s, its file %s is gone", asset.id, asset.path
                    )
                elif asset.status == AssetStatus.ACTIVE and (
                    asset.format is None or any(asset.id not in done[k] for k in keys)
                ):
                    unfinished.append(file)
        unrecorded = sorted(files.values())
        if unfinished:
            logger.warning(
                "uploads: %d were left half-indexed by a crash; indexing them again",
                len(unfinished),
            )
        if unrecorded:
            logger.warning("uploads: %d files have no asset yet; indexing them", len(unrecorded))
        if unfinished or unrecorded:
            done_report = index_paths(self.ctx, [*unfinished, *unrecorded], model_keys=keys)
            done_report.missing += report.missing
            return done_report
        return report

    def delete(self, asset_id: UUID) -> None:
        """Remove the asset from the DB and its points from every collection; an uploaded
        file is deleted too, a library file is left where it is."""
        with self._write_lock:
            with self.ctx.transaction() as session:
                asset = repo.get_asset(session, asset_id)
                if asset is None or asset.status == AssetStatus.MISSING:
                    raise AssetNotFound(f"asset {asset_id} not found")
                path, digest = Path(asset.path), asset.content_hash
                meta_repo.forget_search_text(session, asset_id)
                repo.delete_asset(session, asset)
            # After the commit: a point left behind by a failure here is never shown
            # (search drops hits without an asset row); a row without points would be.
            self.ctx.delete_points([asset_id])
            if path.resolve().is_relative_to(self.ctx.settings.uploads_dir.resolve()):
                path.unlink(missing_ok=True)
            for thumb in (self.thumbnails_dir / digest[:2]).glob(f"{digest}-*.jpg"):
                thumb.unlink(missing_ok=True)
            logger.info("deleted asset %s (%s)", asset_id, path)


def _sniff_format(path: Path) -> str | None:
    """The format Pillow reads from the file's header (no pixels decoded)."""
    try:
        with Image.open(path) as img:
            fmt = img.format
    except Exception:  # not an image at all, or unreadable: not what was indexed
        return None
    return fmt


def _check_servable(asset: AssetView) -> None:
    """A failed (non-image) asset is never served, whatever its path points at."""
    if asset.status != AssetStatus.ACTIVE.value or asset.format is None:
        raise AssetUnreadable(
            f"asset {asset.id} is not a readable image"
            + (f": {asset.error}" if asset.error else " (not indexed yet)")
        )


_TEMP_PREFIX = ".tmp-"
# A temporary upload file untouched this long belongs to no upload in progress.
STALE_UPLOAD_S = 600.0


def _write_atomically(
    target: Path, write: Callable[[BinaryIO], object], *, durable: bool = False
) -> None:
    """Write through a temporary file and rename, so readers never see half a file.
    ``durable``: the file's bytes and its name reach the disk before this returns (an
    upload is an asset only once its file is complete, even across a power cut)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX, suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        if durable:
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
