"""The schema is made only by Alembic; migrations must match the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from image_search_service.db.models import Base
from image_search_service.db.session import make_engine, upgrade_database


def _check(url: str) -> None:
    engine = make_engine(url)
    upgrade_database(engine)
    upgrade_database(engine)  # idempotent
    assert {"assets", "asset_embeddings", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_upgrade_head_matches_models(tmp_path: object) -> None:
    _check(f"sqlite:///{tmp_path}/m.sqlite3")


@pytest.mark.postgres
def test_postgres_upgrade_head_matches_models(postgres_url: str) -> None:
    _check(postgres_url)
