"""What a process opens once and hands down: settings, DB, vector store, encoders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.core.specs import ModelSpec, model_spec
from image_search_service.core.threads import ThreadPlan, plan_threads
from image_search_service.db.session import make_engine, make_session_factory, upgrade_database
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.vector.base import CollectionSpec, VectorStore
from image_search_service.vector.factory import collection_spec, open_vector_store

if TYPE_CHECKING:
    from image_search_service.encoders.openclip import OpenClipEncoder


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: VectorStore
    encoders: EncoderRegistry
    specs: dict[ModelKey, ModelSpec] = field(default_factory=dict)
    threads: ThreadPlan = field(default_factory=lambda: ThreadPlan(1, 1, 1))

    def spec(self, key: ModelKey) -> ModelSpec:
        return self.specs[key]

    def collection_spec(self, key: ModelKey) -> CollectionSpec:
        return collection_spec(self.settings, key)

    def encoder(self, key: ModelKey) -> OpenClipEncoder:
        return self.encoders.get(self.specs[key])

    def has_collection(self, key: ModelKey) -> bool:
        return self.store.has_collection(self.specs[key].collection)

    def delete_points(self, asset_ids: Sequence[UUID]) -> None:
        """Remove assets from every collection that exists (invariant: one asset, at
        most one point per model; deleting it leaves none)."""
        for key in self.specs:
            if self.has_collection(key):
                self.store.delete(self.specs[key].collection, asset_ids)

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()


def open_context(
    settings: Settings,
    *,
    migrate: bool = True,
    encoders: EncoderRegistry | None = None,
) -> ServiceContext:
    threads = plan_threads(settings)
    engine = make_engine(settings.resolved_database_url)
    if migrate:
        upgrade_database(engine)
    store = open_vector_store(settings)
    return ServiceContext(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        store=store,
        encoders=encoders or EncoderRegistry.from_settings(settings),
        specs={key: model_spec(settings, key) for key in MODEL_KEYS},
        threads=threads,
    )
