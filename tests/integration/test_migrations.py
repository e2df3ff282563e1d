"""The schema is made only by Alembic; migrations must match the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from image_search_service.db.models import Base
from image_search_service.db.session import make_engine, upgrade_database


def _not_full_text(name: str | None, _kind: str, _parent: object) -> bool:
    return not str(name).startswith(("asset_search", "ix_assets_search_tsv"))


def _check(url: str) -> None:
    engine = make_engine(url)
    upgrade_database(engine)
    upgrade_database(engine)  # idempotent
    assert {"assets", "asset_embeddings", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as conn:
        # The full-text indexes (SQLite's FTS5 table and its shadow tables, PostgreSQL's
        # GIN expression index) are made by the migration and written by the repository.
        context = MigrationContext.configure(conn, opts={"include_name": _not_full_text})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_upgrade_head_matches_models(tmp_path: object) -> None:
    _check(f"sqlite:///{tmp_path}/m.sqlite3")


@pytest.mark.postgres
def test_postgres_upgrade_head_matches_models(postgres_url: str) -> None:
    _check(postgres_url)


def _round_trip(url: str) -> None:
    """0004_metadata upgrades and downgrades cleanly, keeping the assets it found."""
    from alembic import command

    from image_search_service.db.session import alembic_config

    engine = make_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO assets (id, path, content_hash, size_bytes, mtime_ns, status, "
            "created_at, updated_at) VALUES ('0b3d4c1e9f6a4b7c8d2e1f0a9b8c7d6e', '/p.jpg', "
            "'h', 1, 1, 'active', '2026-01-01', '2026-01-01')"
        )
    for target in ("0004_metadata", "0001", "0004_metadata"):
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            if target == "0001":
                command.downgrade(cfg, target)
            else:
                command.upgrade(cfg, target)
        tables = set(inspect(engine).get_table_names())
        columns = {c["name"] for c in inspect(engine).get_columns("assets")}
        has_metadata = target != "0001"
        assert ({"people", "tags", "asset_people", "asset_tags"} <= tables) is has_metadata
        assert ("caption" in columns) is has_metadata
        assert ("asset_search" in tables) is (has_metadata and url.startswith("sqlite"))
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT path FROM assets").scalars().all() == [
                "/p.jpg"
            ]
    with engine.connect() as connection:
        flag = connection.exec_driver_sql("SELECT people_edited FROM assets").scalar_one()
    assert not flag
    engine.dispose()


def test_sqlite_metadata_migration_upgrades_and_downgrades(tmp_path: object) -> None:
    _round_trip(f"sqlite:///{tmp_path}/m.sqlite3")


@pytest.mark.postgres
def test_postgres_metadata_migration_upgrades_and_downgrades(postgres_url: str) -> None:
    _round_trip(postgres_url)
