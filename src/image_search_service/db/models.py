"""SQLAlchemy 2 typed models. The schema is made only by Alembic migrations."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcTimestamp(TypeDecorator[datetime]):
    """A point in time, stored in UTC and read back with its zone on every database
    (SQLite keeps no zone). A naive time given to it is taken as UTC, as the API reads
    naive times; ``timezone=False`` is for columns stored without one (EXIF times)."""

    impl = DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=timezone)
        self.keeps_zone = timezone

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value if self.keeps_zone else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AssetStatus(enum.StrEnum):
    ACTIVE = "active"  # decoded fine, searchable once embedded
    FAILED = "failed"  # could not be read; `error` says why
    MISSING = "missing"  # the file disappeared; points removed


class EmbeddingState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Asset(Base):
    __tablename__ = "assets"
    # The order the web page and the re-embed plan list assets in (migration 0007).
    __table_args__ = (Index("ix_assets_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    path: Mapped[str] = mapped_column(Text, unique=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    # S3 objects: the ETag last indexed (with size and last-modified: unchanged or not).
    etag: Mapped[str | None] = mapped_column(String(256), default=None)
    status: Mapped[AssetStatus] = mapped_column(
        Enum(
            AssetStatus,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    format: Mapped[str | None] = mapped_column(String(16), default=None)
    taken_at: Mapped[datetime | None] = mapped_column(
        UtcTimestamp(timezone=False), default=None, index=True
    )
    camera_make: Mapped[str | None] = mapped_column(String(128), default=None)
    camera_model: Mapped[str | None] = mapped_column(String(128), default=None)
    # From XMP/IPTC/EXIF (images/metadata.py) or edited through the API.
    caption: Mapped[str | None] = mapped_column(Text, default=None)
    title: Mapped[str | None] = mapped_column(Text, default=None)
    # Caption, title and tags in one string: what full-text search matches (kept in step
    # by metadata_repository; SQLite mirrors it into the FTS5 table ``asset_search``).
    search_text: Mapped[str | None] = mapped_column(Text, default=None)
    # Why some metadata could not be read (the photo is indexed without it).
    metadata_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The XMP sidecar's name, size and mtime when last read: a change is re-read.
    sidecar_signature: Mapped[str | None] = mapped_column(String(255), default=None)
    # A field edited through the API belongs to the user: re-indexing leaves it alone.
    people_edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    tags_edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    caption_edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow, onupdate=utcnow)

    embeddings: Mapped[list[AssetEmbedding]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True
    )


class AssetEmbedding(Base):
    """Per asset and per model: has this model embedded it, and how did it go."""

    __tablename__ = "asset_embeddings"
    __table_args__ = (
        # Covering: "done by exactly this model" is a range of it, ids in order (0007).
        Index(
            "ix_asset_embeddings_model_state",
            "model_key",
            "state",
            "model_name",
            "pretrained",
            "dim",
            "asset_id",
        ),
        Index("ix_asset_embeddings_model_updated", "model_key", "updated_at"),
    )

    asset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    model_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    state: Mapped[EmbeddingState] = mapped_column(
        Enum(
            EmbeddingState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    model_name: Mapped[str] = mapped_column(Text)
    pretrained: Mapped[str] = mapped_column(Text, default="")
    dim: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow, onupdate=utcnow)

    asset: Mapped[Asset] = relationship(back_populates="embeddings")


class Person(Base):
    """A person named in photos: ``name`` as written, ``name_key`` for matching."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)


class AssetPerson(Base):
    """A person in a photo, with the face region (left, top, width, height in 0..1)."""

    __tablename__ = "asset_people"

    asset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    person_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("people.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    box_x: Mapped[float | None] = mapped_column(Float, default=None)
    box_y: Mapped[float | None] = mapped_column(Float, default=None)
    box_w: Mapped[float | None] = mapped_column(Float, default=None)
    box_h: Mapped[float | None] = mapped_column(Float, default=None)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)


class AssetTag(Base):
    __tablename__ = "asset_tags"

    asset_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RolloutSetting(Base):
    """The live rollout flags: one row (id 1), absent until first changed at run time,
    in which case ``USE_SIGLIP`` / ``SIGLIP_ROLLOUT_PERCENTAGE`` apply."""

    __tablename__ = "rollout_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("siglip_rollout_percentage BETWEEN 0 AND 100", name="percentage_range"),
        CheckConstraint("interleave_percentage BETWEEN 0 AND 100", name="interleave_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    use_siglip: Mapped[bool] = mapped_column(Boolean)
    siglip_rollout_percentage: Mapped[int] = mapped_column(Integer)
    interleave_percentage: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow, onupdate=utcnow)


class RolloutChange(Base):
    """One change of the rollout flags: when, from what, to what, by which way."""

    __tablename__ = "rollout_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    changed_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow, index=True)
    old_use_siglip: Mapped[bool] = mapped_column(Boolean)
    old_siglip_rollout_percentage: Mapped[int] = mapped_column(Integer)
    new_use_siglip: Mapped[bool] = mapped_column(Boolean)
    new_siglip_rollout_percentage: Mapped[int] = mapped_column(Integer)
    old_interleave_percentage: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    new_interleave_percentage: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    source: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    """One admin action (a change through the API): who, when, from where, the answer."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcTimestamp(), index=True)
    client: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str] = mapped_column(String(128))  # the key's name, never the key
    scope: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer)


# -- the experiment log ----------------------------------------------------------------
class ExperimentSearch(Base):
    """One answered search, narrow on purpose: the report aggregates these rows with
    one indexed scan. What happened afterwards (clicks, reformulation) is folded into
    the row as events arrive, so the report never joins the events."""

    __tablename__ = "experiment_searches"
    __table_args__ = (
        # Covering index of the report: its GROUP BY (the first five columns, in this
        # order, so no sort) and the interleaving tally (arm = 'interleaved') read only
        # this index. Everything the report counts is a key column or ``clicks``.
        Index(
            "ix_experiment_searches_report",
            "arm",
            "first_click_rank",
            "latency_bucket",
            "reformulated",
            "zero_results",
            "clicks",
            "created_at",
            "credit_baseline",
            "credit_candidate",
        ),
        Index("ix_experiment_searches_user", "user_id", "created_at"),
        # Covering index of pruning and of the daily series (a time range first).
        Index(
            "ix_experiment_searches_time",
            "created_at",
            "arm",
            "first_click_rank",
            "reformulated",
            "zero_results",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    user_id: Mapped[str | None] = mapped_column(String(256), default=None)
    bucket: Mapped[int] = mapped_column(SmallInteger)
    arm: Mapped[str] = mapped_column(String(16))  # clip, siglip or interleaved
    selected: Mapped[str] = mapped_column(String(16))  # what the flags chose
    fallback_code: Mapped[str | None] = mapped_column(String(64), default=None)
    kind: Mapped[str] = mapped_column(String(16))  # text, image, similar
    result_count: Mapped[int] = mapped_column(Integer)
    zero_results: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    latency_bucket: Mapped[int] = mapped_column(SmallInteger)
    # Folded in from the events:
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    first_click_rank: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    reformulated: Mapped[bool] = mapped_column(Boolean, default=False)
    credit_baseline: Mapped[int] = mapped_column(Integer, default=0)  # interleaving
    credit_candidate: Mapped[int] = mapped_column(Integer, default=0)


class ExperimentResults(Base):
    """The result list of one search, in order; for interleaving, the team of each."""

    __tablename__ = "experiment_results"

    search_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_searches.id", ondelete="CASCADE"), primary_key=True
    )
    asset_ids: Mapped[list[str]] = mapped_column(JSON)
    models: Mapped[list[str] | None] = mapped_column(JSON, default=None)


class ExperimentEvent(Base):
    """A click (or open, more-like-this, download) on one result of one search; the
    primary key makes a repeated event a no-op."""

    __tablename__ = "experiment_events"

    search_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("experiment_searches.id", ondelete="CASCADE"), primary_key=True
    )
    asset_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    rank: Mapped[int] = mapped_column(SmallInteger)
    model: Mapped[str | None] = mapped_column(String(16), default=None)  # credited model
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp(), default=utcnow)
