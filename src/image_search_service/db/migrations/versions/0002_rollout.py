"""Live rollout flags (one row) and their history.

Revision ID: 0002_rollout
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_rollout"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollout_settings",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("use_siglip", sa.Boolean(), nullable=False),
        sa.Column("siglip_rollout_percentage", sa.Integer(), nullable=False),
        sa.Column("interleave_percentage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_rollout_settings_single_row")),
        sa.CheckConstraint(
            "siglip_rollout_percentage BETWEEN 0 AND 100",
            name=op.f("ck_rollout_settings_percentage_range"),
        ),
        sa.CheckConstraint(
            "interleave_percentage BETWEEN 0 AND 100",
            name=op.f("ck_rollout_settings_interleave_range"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_settings")),
    )
    op.create_table(
        "rollout_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("old_use_siglip", sa.Boolean(), nullable=False),
        sa.Column("old_siglip_rollout_percentage", sa.Integer(), nullable=False),
        sa.Column("new_use_siglip", sa.Boolean(), nullable=False),
        sa.Column("new_siglip_rollout_percentage", sa.Integer(), nullable=False),
        sa.Column("old_interleave_percentage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("new_interleave_percentage", sa.Integer(), server_default="0", nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_changes")),
    )
    op.create_index(
        op.f("ix_rollout_changes_changed_at"), "rollout_changes", ["changed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_changes_changed_at"), table_name="rollout_changes")
    op.drop_table("rollout_changes")
    op.drop_table("rollout_settings")
