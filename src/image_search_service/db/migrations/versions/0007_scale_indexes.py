"""Indexes a library of a million photos needs: each model's embedding state in an order
that counts coverage and pages embedded ids without reading the table, and by time for
the re-embed rate; assets in the order the web page and the re-embed plan list them.

Revision ID: 0007_scale_indexes
Revises: 0006_audit
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0007_scale_indexes"
down_revision = "0006_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Covering: "done by exactly this model" is an equality on the first five columns, so
    # a count is one range of this index, and the ids come out in order (keyset pages).
    op.create_index(
        "ix_asset_embeddings_model_state",
        "asset_embeddings",
        ["model_key", "state", "model_name", "pretrained", "dim", "asset_id"],
    )
    # The re-embed rate: what each model finished in the last minutes.
    op.create_index(
        "ix_asset_embeddings_model_updated", "asset_embeddings", ["model_key", "updated_at"]
    )
    op.create_index("ix_assets_created_at_id", "assets", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_asset_embeddings_model_updated", table_name="asset_embeddings")
    op.drop_index("ix_assets_created_at_id", table_name="assets")
    op.drop_index("ix_asset_embeddings_model_state", table_name="asset_embeddings")
