"""The ETag of an asset that lives in an S3 bucket (incremental bucket indexing).

Revision ID: 0005_source_etag
Revises: 0004_metadata
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_source_etag"
down_revision = "0004_metadata"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("etag", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("etag")
