"""People, tags, captions and titles read from XMP/IPTC/EXIF (issue 13).

Revision ID: 0004_metadata
Revises: 0003_experiment
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_metadata"
down_revision = "0003_experiment"
branch_labels = None
depends_on = None

_FLAGS = ("people_edited", "tags_edited", "caption_edited")


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("caption", sa.Text(), nullable=True))
        batch.add_column(sa.Column("title", sa.Text(), nullable=True))
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("metadata_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sidecar_signature", sa.String(length=255), nullable=True))
        for flag in _FLAGS:
            batch.add_column(sa.Column(flag, sa.Boolean(), server_default="0", nullable=False))
    for table in ("people", "tags"):
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("name_key", sa.String(length=200), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("name_key", name=op.f(f"uq_{table}_name_key")),
        )
    op.create_table(
        "asset_people",
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("box_x", sa.Float(), nullable=True),
        sa.Column("box_y", sa.Float(), nullable=True),
        sa.Column("box_w", sa.Float(), nullable=True),
        sa.Column("box_h", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_asset_people_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name=op.f("fk_asset_people_person_id_people"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("asset_id", "person_id", name=op.f("pk_asset_people")),
    )
    op.create_index(op.f("ix_asset_people_person_id"), "asset_people", ["person_id"])
    op.create_table(
        "asset_tags",
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_asset_tags_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_asset_tags_tag_id_tags"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("asset_id", "tag_id", name=op.f("pk_asset_tags")),
    )
    op.create_index(op.f("ix_asset_tags_tag_id"), "asset_tags", ["tag_id"])
    # Full-text search over captions, titles and tags. SQLite: an FTS5 table the
    # repository writes next to assets.search_text (no triggers: a later batch migration
    # that rebuilds ``assets`` cannot break it). PostgreSQL: a GIN index on the tsvector.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE asset_search USING fts5("
            "asset_id UNINDEXED, body, tokenize='unicode61 remove_diacritics 2')"
        )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_assets_search_tsv ON assets "
            "USING gin (to_tsvector('simple', coalesce(search_text, '')))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS asset_search")
    elif op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_assets_search_tsv")
    op.drop_index(op.f("ix_asset_tags_tag_id"), table_name="asset_tags")
    op.drop_table("asset_tags")
    op.drop_index(op.f("ix_asset_people_person_id"), table_name="asset_people")
    op.drop_table("asset_people")
    op.drop_table("tags")
    op.drop_table("people")
    with op.batch_alter_table("assets") as batch:
        for flag in reversed(_FLAGS):
            batch.drop_column(flag)
        batch.drop_column("sidecar_signature")
        batch.drop_column("metadata_error")
        batch.drop_column("search_text")
        batch.drop_column("title")
        batch.drop_column("caption")
