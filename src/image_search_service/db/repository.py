"""Queries and updates on assets and embedding state. Callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, delete, func, select
from sqlalchemy.orm import Session

from image_search_service.core.specs import ModelSpec
from image_search_service.db.models import (
    Asset,
    AssetEmbedding,
    AssetStatus,
    EmbeddingState,
    utcnow,
)
from image_search_service.images.loading import ImageMeta


def get_asset(session: Session, asset_id: uuid.UUID) -> Asset | None:
    return session.get(Asset, asset_id)


def get_assets(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Asset]:
    if not ids:
        return {}
    rows = session.scalars(select(Asset).where(Asset.id.in_(list(ids))))
    return {row.id: row for row in rows}


def asset_by_path(session: Session, path: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.path == path))


def asset_by_hash(session: Session, digest: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.content_hash == digest))


def assets_under(session: Session, prefixes: Sequence[str]) -> list[Asset]:
    """Assets whose path lies below any of ``prefixes`` (folders, with trailing sep)."""
    rows = session.scalars(select(Asset).where(Asset.status != AssetStatus.MISSING))
    return [
        a for a in rows if any(a.path.startswith(p) or a.path == p.rstrip("/") for p in prefixes)
    ]


def record_metadata(session: Session, asset_id: uuid.UUID, meta: ImageMeta) -> None:
    asset = session.get(Asset, asset_id)
    if asset is None:  # deleted while being embedded
        return
    asset.width, asset.height, asset.format = meta.width, meta.height, meta.format
    asset.taken_at = meta.taken_at
    asset.camera_make, asset.camera_model = meta.camera_make, meta.camera_model
    asset.status, asset.error = AssetStatus.ACTIVE, None


def record_unreadable(session: Session, asset_id: uuid.UUID, reason: str) -> None:
    asset = session.get(Asset, asset_id)
    if asset is not None:
        asset.status, asset.error = AssetStatus.FAILED, reason


def _embedding(session: Session, asset_id: uuid.UUID, spec: ModelSpec) -> AssetEmbedding:
    row = session.get(AssetEmbedding, (asset_id, spec.key))
    if row is None:
        row = AssetEmbedding(
            asset_id=asset_id,
            model_key=spec.key,
            state=EmbeddingState.PENDING,
            attempts=0,
            model_name=spec.model_name,
            pretrained=spec.pretrained,
            dim=spec.embedding_dim,
        )
        session.add(row)
    return row


def mark_embedded(session: Session, asset_id: uuid.UUID, spec: ModelSpec) -> None:
    if session.get(Asset, asset_id) is None:
        return
    row = _embedding(session, asset_id, spec)
    row.state, row.last_error = EmbeddingState.DONE, None
    row.attempts = (row.attempts or 0) + 1
    row.model_name, row.pretrained, row.dim = spec.model_name, spec.pretrained, spec.embedding_dim
    row.updated_at = utcnow()


def mark_embedding_failed(
    session: Session, asset_id: uuid.UUID, spec: ModelSpec, reason: str
) -> None:
    if session.get(Asset, asset_id) is None:
        return
    row = _embedding(session, asset_id, spec)
    row.state, row.last_error = EmbeddingState.FAILED, reason
    row.attempts = (row.attempts or 0) + 1
    row.updated_at = utcnow()


def clear_embeddings(session: Session, asset_id: uuid.UUID) -> None:
    session.execute(delete(AssetEmbedding).where(AssetEmbedding.asset_id == asset_id))


def embedded_keys(session: Session, asset_id: uuid.UUID) -> dict[str, AssetEmbedding]:
    rows = session.scalars(select(AssetEmbedding).where(AssetEmbedding.asset_id == asset_id))
    return {row.model_key: row for row in rows}


def is_done_for(row: AssetEmbedding | None, spec: ModelSpec) -> bool:
    return (
        row is not None
        and row.state == EmbeddingState.DONE
        and (row.model_name, row.pretrained, row.dim)
        == (spec.model_name, spec.pretrained, spec.embedding_dim)
    )


@dataclass(frozen=True)
class LibraryCounts:
    total: int
    active: int
    failed: int
    missing: int


def library_counts(session: Session) -> LibraryCounts:
    rows = session.execute(select(Asset.status, func.count()).group_by(Asset.status)).all()
    by_status = {AssetStatus(status): count for status, count in rows}
    return LibraryCounts(
        total=sum(by_status.values()),
        active=by_status.get(AssetStatus.ACTIVE, 0),
        failed=by_status.get(AssetStatus.FAILED, 0),
        missing=by_status.get(AssetStatus.MISSING, 0),
    )


def _done_by(spec: ModelSpec) -> tuple[ColumnElement[bool], ...]:
    """Embedded by exactly this model (a row left by a previous model does not count)."""
    return (
        AssetEmbedding.model_key == spec.key,
        AssetEmbedding.state == EmbeddingState.DONE,
        AssetEmbedding.model_name == spec.model_name,
        AssetEmbedding.pretrained == spec.pretrained,
        AssetEmbedding.dim == spec.embedding_dim,
    )


@dataclass(frozen=True)
class EmbeddingCounts:
    done: int
    failed: int
    pending: int


def embedding_counts(session: Session, spec: ModelSpec) -> EmbeddingCounts:
    """Per-model state over active assets; 'done' only counts this exact model."""
    done = session.scalar(
        select(func.count())
        .select_from(AssetEmbedding)
        .join(Asset)
        .where(Asset.status == AssetStatus.ACTIVE, *_done_by(spec))
    )
    failed = session.scalar(
        select(func.count())
        .select_from(AssetEmbedding)
        .join(Asset)
        .where(
            Asset.status != AssetStatus.MISSING,
            AssetEmbedding.model_key == spec.key,
            AssetEmbedding.state == EmbeddingState.FAILED,
        )
    )
    active = session.scalar(
        select(func.count()).select_from(Asset).where(Asset.status == AssetStatus.ACTIVE)
    )
    done_n, failed_n = int(done or 0), int(failed or 0)
    return EmbeddingCounts(done=done_n, failed=failed_n, pending=max(0, int(active or 0) - done_n))


def assets_needing(session: Session, spec: ModelSpec, *, include_failed: bool) -> list[Asset]:
    """Active (or failed-to-decode, if asked) assets this model has not embedded."""
    statuses = [AssetStatus.ACTIVE] + ([AssetStatus.FAILED] if include_failed else [])
    done_ids = select(AssetEmbedding.asset_id).where(*_done_by(spec))
    query = (
        select(Asset)
        .where(Asset.status.in_(statuses), Asset.id.not_in(done_ids))
        .order_by(Asset.created_at, Asset.id)
    )
    return list(session.scalars(query))


def list_assets(session: Session, *, limit: int, offset: int) -> tuple[list[Asset], int]:
    total = session.scalar(
        select(func.count()).select_from(Asset).where(Asset.status != AssetStatus.MISSING)
    )
    rows = session.scalars(
        select(Asset)
        .where(Asset.status != AssetStatus.MISSING)
        .order_by(Asset.created_at, Asset.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


def count_covered_but_not_by(session: Session, covered: ModelSpec, lacking: ModelSpec) -> int:
    """Active assets ``covered`` has embedded that ``lacking`` has not (exact models):
    zero means a collection switch from one to the other loses no searchable photo."""

    def done_by(spec: ModelSpec) -> Select[uuid.UUID]:
        return select(AssetEmbedding.asset_id).where(
            AssetEmbedding.model_key == spec.key,
            AssetEmbedding.state == EmbeddingState.DONE,
            AssetEmbedding.model_name == spec.model_name,
            AssetEmbedding.pretrained == spec.pretrained,
            AssetEmbedding.dim == spec.embedding_dim,
        )

    count = session.scalar(
        select(func.count())
        .select_from(Asset)
        .where(
            Asset.status == AssetStatus.ACTIVE,
            Asset.id.in_(done_by(covered)),
            Asset.id.not_in(done_by(lacking)),
        )
    )
    return int(count or 0)
