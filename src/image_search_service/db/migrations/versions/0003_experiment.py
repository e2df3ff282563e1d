"""The experiment log: searches, their result lists and click events.

Revision ID: 0003_experiment
Revises: 0002_rollout
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_experiment"
down_revision = "0002_rollout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_searches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=256), nullable=True),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("arm", sa.String(length=16), nullable=False),
        sa.Column("selected", sa.String(length=16), nullable=False),
        sa.Column("fallback_code", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("result_count", sa.Integer(), nullable=False),
        sa.Column("zero_results", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("latency_bucket", sa.SmallInteger(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("first_click_rank", sa.SmallInteger(), nullable=True),
        sa.Column("reformulated", sa.Boolean(), nullable=False),
        sa.Column("credit_baseline", sa.Integer(), nullable=False),
        sa.Column("credit_candidate", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_searches")),
    )
    op.create_index(
        "ix_experiment_searches_time",
        "experiment_searches",
        ["created_at", "arm", "first_click_rank", "reformulated", "zero_results"],
    )
    op.create_index(
        "ix_experiment_searches_report",
        "experiment_searches",
        [
            "arm",
            "first_click_rank",
            "latency_bucket",
            "reformulated",
            "zero_results",
            "clicks",
            "created_at",
            "credit_baseline",
            "credit_candidate",
        ],
    )
    op.create_index("ix_experiment_searches_user", "experiment_searches", ["user_id", "created_at"])
    op.create_table(
        "experiment_results",
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("asset_ids", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["experiment_searches.id"],
            name=op.f("fk_experiment_results_search_id_experiment_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("search_id", name=op.f("pk_experiment_results")),
    )
    op.create_table(
        "experiment_events",
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("model", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["experiment_searches.id"],
            name=op.f("fk_experiment_events_search_id_experiment_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("search_id", "asset_id", "type", name=op.f("pk_experiment_events")),
    )


def downgrade() -> None:
    op.drop_table("experiment_events")
    op.drop_table("experiment_results")
    op.drop_index("ix_experiment_searches_user", table_name="experiment_searches")
    op.drop_index("ix_experiment_searches_report", table_name="experiment_searches")
    op.drop_index("ix_experiment_searches_time", table_name="experiment_searches")
    op.drop_table("experiment_searches")
