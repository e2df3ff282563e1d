"""What a process opens once and hands down: settings, DB, vector store, encoders."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.core.disk import DiskSpace
from image_search_service.core.errors import ConfigError
from image_search_service.core.specs import ModelSpec, model_spec
from image_search_service.core.threads import ThreadPlan, plan_threads
from image_search_service.db.session import (
    make_engine,
    make_session_factory,
    session_scope,
    upgrade_database,
)
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.s3 import S3Source
from image_search_service.vector.base import VectorStore, verify_collection
from image_search_service.vector.factory import open_vector_store
from image_search_service.vector.schema import CollectionSpec, collection_spec

if TYPE_CHECKING:
    from image_search_service.encoders.base import Encoder

logger = logging.getLogger(__name__)

# A collection found to fit its spec is not asked again for this long: a search costs
# no round trip for it (a collection dropped meanwhile still fails the search itself).
COLLECTION_CHECK_TTL_S = 5.0


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: VectorStore
    encoders: EncoderRegistry
    specs: dict[ModelKey, ModelSpec]
    collections: dict[ModelKey, CollectionSpec]
    threads: ThreadPlan = field(default_factory=lambda: ThreadPlan(1, 1, 1))
    # S3-compatible buckets: one client per process, made on first use.
    s3: S3Source = field(default_factory=S3Source)
    # DATA_DIR's free space; writes check it first (core/disk.py).
    disk: DiskSpace = field(default_factory=lambda: DiskSpace(Path("."), 0))
    _verified_until: dict[ModelKey, float] = field(default_factory=dict)
    _verified_lock: threading.Lock = field(default_factory=threading.Lock)

    def spec(self, key: ModelKey) -> ModelSpec:
        return self.specs[key]

    def collection_spec(self, key: ModelKey) -> CollectionSpec:
        return self.collections[key]

    def encoder(self, key: ModelKey) -> Encoder:
        return self.encoders.get(self.specs[key])

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error."""
        with session_scope(self.session_factory) as session:
            yield session

    # -- collections -----------------------------------------------------------------
    def has_collection(self, key: ModelKey) -> bool:
        return self.store.has_collection(self.specs[key].collection)

    def ensure_collection(self, key: ModelKey) -> bool:
        """Create the model's collection if missing (True) or check its stamp."""
        created = self.store.ensure_collection(self.collections[key])
        self._mark_verified(key)
        return created

    def verify_collection(self, key: ModelKey) -> None:
        """CollectionMissing / ModelMismatch unless the collection fits; a success is
        remembered for :data:`COLLECTION_CHECK_TTL_S`."""
        with self._verified_lock:
            if time.monotonic() < self._verified_until.get(key, 0.0):
                return
        verify_collection(self.store, self.collections[key])
        self._mark_verified(key)

    def forget_verified(self, key: ModelKey) -> None:
        with self._verified_lock:
            self._verified_until.pop(key, None)

    def _mark_verified(self, key: ModelKey) -> None:
        with self._verified_lock:
            self._verified_until[key] = time.monotonic() + COLLECTION_CHECK_TTL_S

    def delete_points(self, asset_ids: Sequence[UUID]) -> None:
        """Remove assets from every collection that exists (docs/design.md, invariant 2:
        one asset, at most one point per model; deleting it leaves none)."""
        for key in self.specs:
            if self.has_collection(key):
                self.store.delete(self.specs[key].collection, asset_ids)

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()


def ensure_writable(data_dir: Path) -> None:
    """One clear line instead of a traceback from deep inside SQLite or Qdrant."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"DATA_DIR {data_dir.absolute()} is not a writable folder ({reason}); "
            "set DATA_DIR to a folder you can write to"
        ) from None


def open_context(
    settings: Settings,
    *,
    migrate: bool = True,
    encoders: EncoderRegistry | None = None,
) -> ServiceContext:
    threads = plan_threads(settings)
    ensure_writable(settings.data_dir)
    logger.info(
        "library: %s (DATA_DIR)%s",
        settings.data_dir.absolute(),
        "" if settings.database_url is None else "; metadata in DATABASE_URL",
    )
    engine = make_engine(
        settings.resolved_database_url, busy_timeout_s=settings.sqlite_busy_timeout_s
    )
    if migrate:
        upgrade_database(engine)
    store = open_vector_store(settings)
    specs = {key: model_spec(settings, key) for key in MODEL_KEYS}
    return ServiceContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        store=store,
        encoders=encoders or EncoderRegistry.from_settings(settings),
        specs=specs,
        collections={key: collection_spec(settings, spec) for key, spec in specs.items()},
        threads=threads,
        s3=S3Source(max_connections=settings.s3_download_workers + 2),
        disk=DiskSpace(settings.data_dir, settings.min_free_disk_mb),
    )
