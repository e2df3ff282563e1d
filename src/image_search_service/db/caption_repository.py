"""The caption space's state: which photos' caption text is embedded, and what waits.

Kept in ``asset_embeddings`` under the key ``caption`` (no migration): ``model_name`` and
``dim`` are the text embedder's, ``pretrained`` holds a digest of the text embedded, so an
edited caption, title or tag makes the row stale and the next run embeds it again. A
failure leaves the row ``pending`` with the reason in ``last_error``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from image_search_service.core.specs import ModelIdentity
from image_search_service.db.models import (
    Asset,
    AssetEmbedding,
    AssetStatus,
    EmbeddingState,
    utcnow,
)
from image_search_service.db.repository import insert_embeddings, upsert_embeddings

CAPTION_KEY = "caption"


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CaptionText:
    asset_id: uuid.UUID
    text: str

    @property
    def digest(self) -> str:
        return text_digest(self.text)


@dataclass(frozen=True)
class CaptionCoverage:
    """Searchable photos with caption text, and how many of them the space holds."""

    with_text: int
    done: int
    last_error: str | None  # why the latest pending ones wait (None: nothing failed)

    @property
    def pending(self) -> int:
        return self.with_text - self.done


def _rows(session: Session) -> list[tuple[uuid.UUID, str, AssetEmbedding | None]]:
    query = (
        select(Asset.id, Asset.search_text, AssetEmbedding)
        .outerjoin(
            AssetEmbedding,
            and_(AssetEmbedding.asset_id == Asset.id, AssetEmbedding.model_key == CAPTION_KEY),
        )
        .where(Asset.status == AssetStatus.ACTIVE, Asset.search_text.is_not(None))
        .order_by(Asset.created_at, Asset.id)
    )
    return [(a, str(t), row) for a, t, row in session.execute(query).all()]


def _is_done(row: AssetEmbedding | None, identity: ModelIdentity, text: str) -> bool:
    return (
        row is not None
        and row.state == EmbeddingState.DONE
        and (row.model_name, row.dim, row.pretrained)
        == (identity.model_name, identity.dim, text_digest(text))
    )


def captions_to_embed(session: Session, identity: ModelIdentity) -> list[CaptionText]:
    """Searchable photos whose current caption text this embedder has not embedded
    (new, edited, or pending after a failure), oldest first."""
    return [
        CaptionText(asset_id, text)
        for asset_id, text, row in _rows(session)
        if not _is_done(row, identity, text)
    ]


def caption_coverage(session: Session, identity: ModelIdentity) -> CaptionCoverage:
    rows = _rows(session)
    waiting = [row for _, text, row in rows if not _is_done(row, identity, text)]
    errors = sorted(
        (r for r in waiting if r is not None and r.last_error), key=lambda r: r.updated_at
    )
    return CaptionCoverage(
        with_text=len(rows),
        done=len(rows) - len(waiting),
        last_error=errors[-1].last_error if errors else None,
    )


def mark_captions(
    session: Session,
    captions: Sequence[CaptionText],
    identity: ModelIdentity,
    *,
    error: str | None = None,
) -> None:
    """Done (``error`` None) or pending with the reason; an upsert per row, so two runs
    meeting on one photo both succeed."""
    if not captions:
        return
    state = EmbeddingState.PENDING if error else EmbeddingState.DONE
    present = set(
        session.scalars(select(Asset.id).where(Asset.id.in_([c.asset_id for c in captions])))
    )
    values = [
        {
            "asset_id": c.asset_id,
            "model_key": CAPTION_KEY,
            "state": state,
            "attempts": 1,
            "last_error": error,
            "model_name": identity.model_name,
            "pretrained": c.digest,
            "dim": identity.dim,
            "updated_at": utcnow(),
        }
        for c in captions
        if c.asset_id in present  # deleted meanwhile: no row (and no FK error)
    ]
    if not values:
        return
    upsert_embeddings(session, insert_embeddings(session).values(values))
