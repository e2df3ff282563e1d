"""Every query and update on assets and embedding state: the one place SQL is built.

Functions here flush at most; the caller owns the transaction (see docs/architecture.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Exists,
    Select,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from image_search_service.core.batching import chunked
from image_search_service.core.config import ModelKey
from image_search_service.core.specs import ModelSpec
from image_search_service.db.models import (
    Asset,
    AssetEmbedding,
    AssetStatus,
    AuditEvent,
    EmbeddingState,
    RolloutChange,
    RolloutSetting,
    utcnow,
)
from image_search_service.images.loading import ImageMeta

# Still in the library: searchable or unreadable, not gone from disk.
_PRESENT = Asset.status != AssetStatus.MISSING


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


_T = TypeVar("_T")
_IN_CHUNK = 500  # bound parameters per IN (...) query, well under SQLite's limit


def _in_chunks(values: Sequence[_T]) -> list[list[_T]]:
    return chunked(values, _IN_CHUNK)


def assets_by_paths(session: Session, paths: Sequence[str]) -> dict[str, Asset]:
    """The assets recorded at any of ``paths``, by path (one query per 500 paths)."""
    found: dict[str, Asset] = {}
    for chunk in _in_chunks(paths):
        found.update(
            (a.path, a) for a in session.scalars(select(Asset).where(Asset.path.in_(chunk)))
        )
    return found


def known_hashes(session: Session, digests: Sequence[str]) -> set[str]:
    """Which of ``digests`` some asset already has."""
    known: set[str] = set()
    for chunk in _in_chunks(digests):
        known.update(
            session.scalars(select(Asset.content_hash).where(Asset.content_hash.in_(chunk)))
        )
    return known


def _under(session: Session, prefixes: Sequence[str]) -> ColumnElement[bool]:
    """Paths below any of ``prefixes`` (folders with a trailing separator, or files), in
    SQL. On SQLite each prefix is also a range of the ``path`` index (text compares
    byte by byte there, so every path starting with ``p`` lies in [p, p + U+10FFFF));
    PostgreSQL's collation may order otherwise, so it gets the LIKE alone."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    either = []
    for prefix in prefixes:
        below = Asset.path.startswith(prefix, autoescape=True)
        if sqlite:
            below = and_(Asset.path >= prefix, Asset.path < prefix + "\U0010ffff", below)
        either.append(or_(below, Asset.path == prefix.rstrip("/")))
    return or_(*either) if either else literal(False)


def assets_under(session: Session, prefixes: Sequence[str]) -> list[Asset]:
    """Present assets whose path lies below any of ``prefixes`` (folders, with trailing
    sep), or is one of them."""
    return list(session.scalars(select(Asset).where(_PRESENT, _under(session, prefixes))))


def asset_paths_under(session: Session, prefixes: Sequence[str]) -> list[tuple[uuid.UUID, str]]:
    """(id, path) of the present assets under ``prefixes``, as :func:`assets_under` finds
    them, without loading a row object per asset (a re-scan of a big library)."""
    rows = session.execute(select(Asset.id, Asset.path).where(_PRESENT, _under(session, prefixes)))
    return [(asset_id, path) for asset_id, path in rows]


def assets_with_prefix(session: Session, prefix: str) -> list[Asset]:
    """Present assets whose path starts with ``prefix`` (one indexed query)."""
    return list(
        session.scalars(
            select(Asset).where(_PRESENT, Asset.path.startswith(prefix, autoescape=True))
        )
    )


def add_asset(
    session: Session,
    *,
    path: str,
    content_hash: str,
    size_bytes: int,
    mtime_ns: int,
    etag: str | None = None,
    flush: bool = True,
) -> Asset:
    """A new, readable-until-proven-otherwise asset. Its id is set here, so a caller
    adding many may leave them to one flush (one multi-row INSERT) with ``flush=False``."""
    asset = Asset(
        id=uuid.uuid4(),
        path=path,
        content_hash=content_hash,
        size_bytes=size_bytes,
        mtime_ns=mtime_ns,
        etag=etag,
        status=AssetStatus.ACTIVE,
    )
    session.add(asset)
    if flush:
        session.flush()
    return asset


def delete_asset(session: Session, asset: Asset) -> None:
    """Remove the row; its per-model states go with it (ON DELETE CASCADE)."""
    session.delete(asset)
    session.flush()


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


def insert_embeddings(session: Session) -> Any:
    """``INSERT INTO asset_embeddings`` in this session's dialect (SQLite or
    PostgreSQL), ready for :func:`upsert_embeddings`."""
    dialect = session.get_bind().dialect.name
    return (postgresql_insert if dialect == "postgresql" else sqlite_insert)(AssetEmbedding)


def upsert_embeddings(session: Session, stmt: Any, *, where: Any = None) -> None:
    """Run ``stmt`` (from :func:`insert_embeddings`) as one upsert per (asset, model):
    a row another writer made meanwhile is updated, never a UNIQUE error (docs/design.md,
    "What may run at once"); ``where`` limits which existing rows change."""
    new = stmt.excluded
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[AssetEmbedding.asset_id, AssetEmbedding.model_key],
            set_={
                "state": new.state,
                "last_error": new.last_error,
                "attempts": AssetEmbedding.attempts + 1,
                "model_name": new.model_name,
                "pretrained": new.pretrained,
                "dim": new.dim,
                "updated_at": new.updated_at,
            },
            where=where,
        )
    )
    # Rows this session loaded before were changed under it by SQL: read them afresh.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, AssetEmbedding):
            session.expire(obj)


def _upsert_embedding_state(
    session: Session,
    asset_ids: Sequence[uuid.UUID],
    spec: ModelSpec,
    state: EmbeddingState,
    error: str | None,
    *,
    keep_done: bool,
) -> None:
    """One statement per chunk: insert or update the (asset, model) rows of the assets
    still present. Concurrent writers (an index run and a re-embed on the same photos)
    both succeed: nothing is selected first that another writer could insert meanwhile
    (docs/design.md, "What may run at once"). ``keep_done``: a row this exact model
    already finished is left as it is (a failure never undoes another writer's
    success)."""
    now = utcnow()
    for chunk in _in_chunks(list(asset_ids)):
        rows = select(
            Asset.id,
            literal(spec.key, type_=AssetEmbedding.model_key.type),
            literal(state, type_=AssetEmbedding.state.type),
            literal(1, type_=AssetEmbedding.attempts.type),
            literal(error, type_=AssetEmbedding.last_error.type),
            literal(spec.model_name, type_=AssetEmbedding.model_name.type),
            literal(spec.pretrained, type_=AssetEmbedding.pretrained.type),
            literal(spec.embedding_dim, type_=AssetEmbedding.dim.type),
            literal(now, type_=AssetEmbedding.updated_at.type),
        ).where(Asset.id.in_(chunk))  # deleted meanwhile: no row (and no FK error)
        stmt = insert_embeddings(session).from_select(
            [
                "asset_id",
                "model_key",
                "state",
                "attempts",
                "last_error",
                "model_name",
                "pretrained",
                "dim",
                "updated_at",
            ],
            rows,
        )
        new = stmt.excluded
        same_model_done = and_(
            AssetEmbedding.state == EmbeddingState.DONE,
            AssetEmbedding.model_name == new.model_name,
            AssetEmbedding.pretrained == new.pretrained,
            AssetEmbedding.dim == new.dim,
        )
        upsert_embeddings(session, stmt, where=~same_model_done if keep_done else None)


def mark_embedded(session: Session, asset_ids: Sequence[uuid.UUID], spec: ModelSpec) -> None:
    """``spec`` embedded these assets (those still present), whoever else marks them at
    the same time. The assets are loaded into the session first, so per-asset updates
    after it cost no query."""
    for chunk in _in_chunks(list(asset_ids)):
        session.scalars(select(Asset).where(Asset.id.in_(chunk))).all()
    _upsert_embedding_state(session, asset_ids, spec, EmbeddingState.DONE, None, keep_done=False)


def mark_embedding_failed(
    session: Session, asset_id: uuid.UUID, spec: ModelSpec, reason: str
) -> None:
    """``spec`` gave up on this asset (if still present), unless it is already embedded
    by this exact model."""
    _upsert_embedding_state(
        session, [asset_id], spec, EmbeddingState.FAILED, reason, keep_done=True
    )


def clear_embeddings(session: Session, asset_id: uuid.UUID) -> None:
    session.execute(delete(AssetEmbedding).where(AssetEmbedding.asset_id == asset_id))


def embedded_keys(session: Session, asset_id: uuid.UUID) -> dict[str, AssetEmbedding]:
    rows = session.scalars(select(AssetEmbedding).where(AssetEmbedding.asset_id == asset_id))
    return {row.model_key: row for row in rows}


def _identity(spec: ModelSpec) -> tuple[str, str, int]:
    return (spec.model_name, spec.pretrained, spec.embedding_dim)


def is_done_for(row: AssetEmbedding | None, spec: ModelSpec) -> bool:
    """Python twin of :func:`_done_by`, for a row already loaded."""
    return (
        row is not None
        and row.model_key == spec.key
        and row.state == EmbeddingState.DONE
        and (row.model_name, row.pretrained, row.dim) == _identity(spec)
    )


def _done_by(
    spec: ModelSpec, table: type[AssetEmbedding] = AssetEmbedding
) -> tuple[ColumnElement[bool], ...]:
    """Embedded by exactly this model (a row left by a previous model does not count).
    An equality on the leading columns of ``ix_asset_embeddings_model_state``: counting
    these rows reads one range of that index."""
    model_name, pretrained, dim = _identity(spec)
    return (
        table.model_key == spec.key,
        table.state == EmbeddingState.DONE,
        table.model_name == model_name,
        table.pretrained == pretrained,
        table.dim == dim,
    )


def _failed_for(spec: ModelSpec) -> tuple[ColumnElement[bool], ...]:
    return (
        AssetEmbedding.model_key == spec.key,
        AssetEmbedding.state == EmbeddingState.FAILED,
    )


def _done_ids(spec: ModelSpec) -> Select[uuid.UUID]:
    return select(AssetEmbedding.asset_id).where(*_done_by(spec))


def _is_done(spec: ModelSpec, asset_id: Any) -> Exists:
    """``asset_id`` (a column of the outer query) is embedded by exactly ``spec``: one
    lookup in ``ix_asset_embeddings_model_state`` per outer row.

    The id is matched as a one-value range on purpose: with ``=`` SQLite picks the
    primary key (asset_id, model_key), unique but not covering, and reads the table row
    of each; the range keeps it in the covering index (half the time, measured on a
    100,000-asset library: scripts/benchmark_scale.py)."""
    other = aliased(AssetEmbedding)
    return exists().where(
        other.asset_id >= asset_id, other.asset_id <= asset_id, *_done_by(spec, other)
    )


# Statuses that are not "active": few in any library, found through ix_assets_status.
# The counts below read every row only through narrow index ranges and subtract what
# these few assets hold, instead of joining each of a million assets to its state.
_NOT_ACTIVE = (AssetStatus.FAILED, AssetStatus.MISSING)


@dataclass(frozen=True)
class LibraryCounts:
    total: int
    active: int
    failed: int
    missing: int


def library_counts(session: Session) -> LibraryCounts:
    total = int(session.scalar(select(func.count()).select_from(Asset)) or 0)
    rows = session.execute(
        select(Asset.status, func.count())
        .where(Asset.status.in_(_NOT_ACTIVE))
        .group_by(Asset.status)
    ).all()
    by_status = {AssetStatus(status): int(count) for status, count in rows}
    failed = by_status.get(AssetStatus.FAILED, 0)
    missing = by_status.get(AssetStatus.MISSING, 0)
    return LibraryCounts(
        total=total, active=max(0, total - failed - missing), failed=failed, missing=missing
    )


@dataclass(frozen=True)
class Coverage:
    """One model's standing over the library; the one definition every view uses.

    Every present asset (searchable or unreadable) is exactly one of ``done`` (this
    exact model's vector is stored), ``failed`` (it gave up, with a reason) or
    ``pending`` (what a re-embed run plans); ``ratio`` is the share of searchable assets
    whose vector is stored, what the router's coverage guard reads.
    """

    model: ModelKey
    present: int  # assets in the library: searchable + unreadable
    searchable: int  # decoded fine (status active)
    done: int
    failed: int
    done_searchable: int  # of ``done``, those still searchable

    @property
    def pending(self) -> int:
        return max(0, self.present - self.done - self.failed)

    @property
    def ratio(self) -> float:
        return self.done_searchable / self.searchable if self.searchable else 1.0


def coverage(
    session: Session, spec: ModelSpec, *, library: LibraryCounts | None = None
) -> Coverage:
    """Read on every status, progress poll and coverage-guard refresh, so it never joins
    each asset to its state: the model's done and failed rows are two ranges of
    ``ix_asset_embeddings_model_state``, and what the few unreadable or missing assets
    hold is subtracted (each asset has at most one row per model). ``library``: the
    counts already read in this transaction."""
    library = library or library_counts(session)
    done_all = int(
        session.scalar(select(func.count()).select_from(AssetEmbedding).where(*_done_by(spec))) or 0
    )
    failed_all = int(
        session.scalar(select(func.count()).select_from(AssetEmbedding).where(*_failed_for(spec)))
        or 0
    )
    done = and_(*_done_by(spec))
    held: dict[AssetStatus, tuple[int, int]] = {}
    for status, done_n, failed_n in session.execute(
        select(
            Asset.status,
            func.count(AssetEmbedding.asset_id).filter(done),
            func.count(AssetEmbedding.asset_id).filter(*_failed_for(spec)),
        )
        .select_from(Asset)  # an outer join keeps the few assets the outer loop
        .outerjoin(
            AssetEmbedding,
            and_(AssetEmbedding.asset_id == Asset.id, AssetEmbedding.model_key == spec.key),
        )
        .where(Asset.status.in_(_NOT_ACTIVE))
        .group_by(Asset.status)
    ):
        held[AssetStatus(status)] = (int(done_n), int(failed_n))
    done_missing, failed_missing = held.get(AssetStatus.MISSING, (0, 0))
    done_unreadable, _ = held.get(AssetStatus.FAILED, (0, 0))
    return Coverage(
        model=spec.key,
        present=library.total - library.missing,
        searchable=library.active,
        done=done_all - done_missing,
        failed=failed_all - failed_missing,
        done_searchable=done_all - done_missing - done_unreadable,
    )


def _count_done_active(
    session: Session,
    spec: ModelSpec,
    *,
    also: Sequence[ModelSpec] = (),
    unless: Sequence[ModelSpec] = (),
) -> int:
    """Active assets embedded by exactly ``spec``, and by each of ``also``, and by none of
    ``unless``: the rows of ``spec``'s index range (a lookup per row for each other
    model), less those of the few assets that are not active."""

    def others(asset_id: Any) -> list[ColumnElement[bool]]:
        return [
            *(_is_done(o, asset_id) for o in also),
            *(~_is_done(o, asset_id) for o in unless),
        ]

    every = session.scalar(
        select(func.count())
        .select_from(AssetEmbedding)
        .where(*_done_by(spec), *others(AssetEmbedding.asset_id))
    )
    inactive = session.scalar(
        select(func.count())
        .select_from(Asset)
        .where(Asset.status.in_(_NOT_ACTIVE), _is_done(spec, Asset.id), *others(Asset.id))
    )
    return int(every or 0) - int(inactive or 0)


def count_searchable(session: Session, specs: Sequence[ModelSpec]) -> int:
    """Decoded assets at least one of these exact models has embedded: what a search
    can find (the rest of the active assets are still being indexed).

    Each model's count is a range of the index. When one model covers every active asset
    (the baseline, once indexing caught up) that is the answer; otherwise the models are
    counted largest first, each without the assets counted before it, so the lookups go
    over the smaller models' rows (a migration's candidate) only."""
    active = library_counts(session).active
    counts = sorted(((_count_done_active(session, s), s) for s in specs), key=lambda c: -c[0])
    if not counts or counts[0][0] >= active:
        return counts[0][0] if counts else 0
    ordered = [s for _, s in counts]
    return counts[0][0] + sum(
        _count_done_active(session, spec, unless=ordered[:i])
        for i, spec in enumerate(ordered)
        if i > 0
    )


def count_covered_but_not_by(session: Session, covered: ModelSpec, lacking: ModelSpec) -> int:
    """Active assets ``covered`` has embedded that ``lacking`` has not (exact models):
    zero means a collection switch from one to the other loses no searchable photo.
    The coverage guard reads it: the lookups go over the smaller model's rows, and none
    are needed when either model has embedded nothing or ``lacking`` has every asset."""
    has = _count_done_active(session, covered)
    other = _count_done_active(session, lacking)
    if has == 0 or other >= library_counts(session).active:
        return 0
    if other == 0:
        return has
    smaller, larger = (lacking, covered) if other <= has else (covered, lacking)
    return has - _count_done_active(session, smaller, also=[larger])


def asset_ids_to_embed(
    session: Session, spec: ModelSpec, *, force: bool = False, only_failed: bool = False
) -> list[uuid.UUID]:
    """The assets a run for ``spec`` should process, oldest first: by default the
    ``pending`` ones of :class:`Coverage` (failures wait for an explicit retry)."""
    query = select(Asset.id).where(_PRESENT)
    if only_failed:
        query = query.where(Asset.id.in_(select(AssetEmbedding.asset_id).where(*_failed_for(spec))))
    elif not force:
        settled = select(AssetEmbedding.asset_id).where(
            AssetEmbedding.model_key == spec.key,
            or_(and_(*_done_by(spec)), AssetEmbedding.state == EmbeddingState.FAILED),
        )
        query = query.where(Asset.id.not_in(settled))
    return list(session.scalars(query.order_by(Asset.created_at, Asset.id)))


def done_asset_ids(session: Session, spec: ModelSpec, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``ids`` this exact model has embedded."""
    if not ids:
        return set()
    return set(
        session.scalars(
            select(AssetEmbedding.asset_id).where(
                AssetEmbedding.asset_id.in_(list(ids)), *_done_by(spec)
            )
        )
    )


def reset_failed(session: Session, spec: ModelSpec, ids: Sequence[uuid.UUID]) -> int:
    """Failed -> pending for ``ids``, so progress counts them as work again."""
    if not ids:
        return 0
    result = session.execute(
        update(AssetEmbedding)
        .where(AssetEmbedding.asset_id.in_(list(ids)), *_failed_for(spec))
        .values(state=EmbeddingState.PENDING)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def clear_model_states(session: Session, key: ModelKey) -> int:
    """Forget one model's per-asset state (its collection is being dropped)."""
    result = session.execute(delete(AssetEmbedding).where(AssetEmbedding.model_key == key))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Activity:
    """Embeddings this model finished (done or failed) since a moment."""

    finished: int
    oldest: datetime | None
    newest: datetime | None


def recent_activity(session: Session, spec: ModelSpec, *, since: datetime) -> Activity:
    finished, oldest, newest = session.execute(
        select(
            func.count(),
            func.min(AssetEmbedding.updated_at),
            func.max(AssetEmbedding.updated_at),
        ).where(
            AssetEmbedding.model_key == spec.key,
            AssetEmbedding.state.in_([EmbeddingState.DONE, EmbeddingState.FAILED]),
            AssetEmbedding.updated_at >= since,
        )
    ).one()
    return Activity(finished=int(finished), oldest=oldest, newest=newest)


@dataclass(frozen=True)
class FailedEmbedding:
    asset_id: uuid.UUID
    path: str
    error: str
    attempts: int


def failed_embeddings(
    session: Session, spec: ModelSpec, *, limit: int
) -> tuple[list[FailedEmbedding], int]:
    """The assets this model gave up on, with their reasons (newest first), and how many."""
    where = (*_failed_for(spec), _PRESENT)
    total = session.scalar(
        select(func.count()).select_from(AssetEmbedding).join(Asset).where(*where)
    )
    rows = session.execute(
        select(Asset.id, Asset.path, AssetEmbedding.last_error, AssetEmbedding.attempts)
        .join(Asset)
        .where(*where)
        .order_by(AssetEmbedding.updated_at.desc(), Asset.id)
        .limit(limit)
    ).all()
    items = [FailedEmbedding(i, p, err or "", n) for i, p, err, n in rows]
    return items, int(total or 0)


def list_assets(session: Session, *, limit: int, offset: int) -> tuple[list[Asset], int]:
    """A page in ``ix_assets_created_at_id`` order (the web page's first request)."""
    library = library_counts(session)  # two index counts, not a scan of every row
    rows = session.scalars(
        select(Asset)
        .where(_PRESENT)
        .order_by(Asset.created_at, Asset.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), library.total - library.missing


def embedded_ids_page(
    session: Session, spec: ModelSpec, *, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Active assets embedded by exactly ``spec``, in id order, the ``limit`` after
    ``after`` (keyset paging: each page costs the same however deep it is)."""
    query = (
        select(AssetEmbedding.asset_id)
        .join(Asset)
        .where(*_done_by(spec), Asset.status == AssetStatus.ACTIVE)
        .order_by(AssetEmbedding.asset_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(AssetEmbedding.asset_id > after)
    return list(session.scalars(query))


# -- live rollout flags ------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutFlags:
    use_siglip: bool
    siglip_rollout_percentage: int
    interleave_percentage: int = 0


def rollout_flags(session: Session, *, for_update: bool = False) -> RolloutFlags | None:
    """The flags set at run time, or None when they were never changed (the environment's
    values apply then). ``for_update`` locks the row (PostgreSQL) so that two concurrent
    changes record their history one after the other."""
    query = select(RolloutSetting).where(RolloutSetting.id == 1)
    row = session.scalar(query.with_for_update() if for_update else query)
    if row is None:
        return None
    return RolloutFlags(row.use_siglip, row.siglip_rollout_percentage, row.interleave_percentage)


def set_rollout_flags(
    session: Session, new: RolloutFlags, *, old: RolloutFlags, source: str
) -> RolloutChange:
    """Store ``new`` as the live flags and record the change from ``old``."""
    row = session.scalar(select(RolloutSetting).where(RolloutSetting.id == 1).with_for_update())
    if row is None:
        row = RolloutSetting(id=1)
        session.add(row)
    row.use_siglip = new.use_siglip
    row.siglip_rollout_percentage = new.siglip_rollout_percentage
    row.interleave_percentage = new.interleave_percentage
    return record_rollout_change(session, old=old, new=new, source=source)


def record_rollout_change(
    session: Session, *, old: RolloutFlags, new: RolloutFlags, source: str
) -> RolloutChange:
    change = RolloutChange(
        old_use_siglip=old.use_siglip,
        old_siglip_rollout_percentage=old.siglip_rollout_percentage,
        new_use_siglip=new.use_siglip,
        new_siglip_rollout_percentage=new.siglip_rollout_percentage,
        old_interleave_percentage=old.interleave_percentage,
        new_interleave_percentage=new.interleave_percentage,
        source=source[:64],
    )
    session.add(change)
    session.flush()
    return change


def clear_rollout_flags(session: Session) -> bool:
    """Forget the run-time flags (the environment's apply again); True if there were any."""
    deleted = session.execute(delete(RolloutSetting).where(RolloutSetting.id == 1))
    return bool(getattr(deleted, "rowcount", 0))


def rollout_history(session: Session, *, limit: int) -> list[RolloutChange]:
    """The latest changes, newest first."""
    return list(
        session.scalars(
            select(RolloutChange)
            .order_by(RolloutChange.changed_at.desc(), RolloutChange.id.desc())
            .limit(limit)
        )
    )


# -- audit ------------------------------------------------------------------------------
def add_audit_event(session: Session, **fields: Any) -> None:
    session.add(AuditEvent(**fields))


def audit_events(session: Session, *, limit: int) -> list[AuditEvent]:
    """The latest admin actions, newest first."""
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)))
