"""Every query on the experiment log (searches, their results, click events).

Like :mod:`db.repository`, functions here flush at most; the caller owns the
transaction. The report reads aggregates only (GROUP BY over the covering index
``ix_experiment_searches_report``), never one row per search.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from image_search_service.db.models import ExperimentEvent, ExperimentResults, ExperimentSearch

LATENCY_BUCKETS_PER_DECADE = 40
# The latency bucket of a cold-start search (the first after its model loaded in that
# process): far below any real bucket (0.01 ms is -80), so the report can leave it out
# of latency percentiles without a schema change; ``latency_ms`` keeps the real value.
COLD_START_BUCKET = -10_000


def latency_bucket(ms: float, *, cold_start: bool = False) -> int:
    if cold_start:
        return COLD_START_BUCKET
    return round(LATENCY_BUCKETS_PER_DECADE * math.log10(max(ms, 0.01)))


def bucket_latency(bucket: int) -> float:
    return float(10 ** (bucket / LATENCY_BUCKETS_PER_DECADE))


@dataclass(frozen=True)
class SearchRecord:
    """What is recorded of one answered search."""

    id: uuid.UUID
    created_at: datetime
    user_id: str | None
    bucket: int
    arm: str
    selected: str
    fallback_code: str | None
    kind: str
    asset_ids: tuple[str, ...]
    models: tuple[str, ...] | None  # per result, for interleaving
    latency_ms: float
    latency_bucket: int


def insert_searches(session: Session, records: Sequence[SearchRecord]) -> None:
    for r in records:
        session.add(
            ExperimentSearch(
                id=r.id,
                created_at=r.created_at,
                user_id=r.user_id,
                bucket=r.bucket,
                arm=r.arm,
                selected=r.selected,
                fallback_code=r.fallback_code,
                kind=r.kind,
                result_count=len(r.asset_ids),
                zero_results=not r.asset_ids,
                latency_ms=r.latency_ms,
                latency_bucket=r.latency_bucket,
                clicks=0,
                first_click_rank=None,
                reformulated=False,
                credit_baseline=0,
                credit_candidate=0,
            )
        )
    session.flush()  # parents first: the result rows reference them
    for r in records:
        session.add(
            ExperimentResults(
                search_id=r.id,
                asset_ids=list(r.asset_ids),
                models=list(r.models) if r.models is not None else None,
            )
        )
    session.flush()


def mark_reformulated(session: Session, *, user_id: str, since: datetime, before: datetime) -> int:
    """Text searches by ``user_id`` in [since, before) without a click were reformulated."""
    result = session.execute(
        update(ExperimentSearch)
        .where(
            ExperimentSearch.user_id == user_id,
            ExperimentSearch.created_at >= since,
            ExperimentSearch.created_at < before,
            ExperimentSearch.kind == "text",
            ExperimentSearch.clicks == 0,
            ExperimentSearch.reformulated.is_(False),
        )
        .values(reformulated=True)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def get_search(
    session: Session, search_id: uuid.UUID
) -> tuple[ExperimentSearch, ExperimentResults] | None:
    row = session.execute(
        select(ExperimentSearch, ExperimentResults)
        .join(ExperimentResults, ExperimentResults.search_id == ExperimentSearch.id)
        .where(ExperimentSearch.id == search_id)
    ).first()
    return None if row is None else (row[0], row[1])


def event_exists(session: Session, search_id: uuid.UUID, asset_id: uuid.UUID, type_: str) -> bool:
    return session.get(ExperimentEvent, (search_id, asset_id, type_)) is not None


def add_event(
    session: Session,
    *,
    search_id: uuid.UUID,
    asset_id: uuid.UUID,
    type_: str,
    rank: int,
    model: str | None,
    credit_candidate: bool | None,
    max_events: int,
) -> bool:
    """Store one event and fold it into its search row; False when the search already
    holds ``max_events`` events. The caller checks for a duplicate first; a racing
    duplicate raises :class:`IntegrityError` at flush (the primary key)."""
    credit: dict[str, ColumnElement[int]] = {}
    if credit_candidate is True:
        credit["credit_candidate"] = ExperimentSearch.credit_candidate + 1
    elif credit_candidate is False:
        credit["credit_baseline"] = ExperimentSearch.credit_baseline + 1
    # One atomic UPDATE enforces the cap and folds the event in, even under concurrency.
    result = session.execute(
        update(ExperimentSearch)
        .where(ExperimentSearch.id == search_id, ExperimentSearch.clicks < max_events)
        .values(
            clicks=ExperimentSearch.clicks + 1,
            first_click_rank=case(
                (ExperimentSearch.first_click_rank.is_(None), rank),
                (ExperimentSearch.first_click_rank > rank, rank),
                else_=ExperimentSearch.first_click_rank,
            ),
            **credit,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.add(
        ExperimentEvent(search_id=search_id, asset_id=asset_id, type=type_, rank=rank, model=model)
    )
    session.flush()
    return True


def prune(session: Session, *, older_than: datetime) -> int:
    """Delete searches (with their results and events) recorded before ``older_than``."""
    old = select(ExperimentSearch.id).where(ExperimentSearch.created_at < older_than)
    # Children explicitly too: correct even where the database does not cascade.
    session.execute(delete(ExperimentEvent).where(ExperimentEvent.search_id.in_(old)))
    session.execute(delete(ExperimentResults).where(ExperimentResults.search_id.in_(old)))
    result = session.execute(
        delete(ExperimentSearch).where(ExperimentSearch.created_at < older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class ArmGroup:
    """Searches of one arm sharing a first-click rank and a latency bucket."""

    arm: str
    first_click_rank: int | None
    latency_bucket: int
    searches: int
    zero_results: int
    reformulated: int
    abandoned: int
    events: int


def arm_groups(session: Session, *, since: datetime | None = None) -> list[ArmGroup]:
    """The report's one scan. Everything it counts is in the GROUP BY key (arm, first
    click rank, latency bucket, reformulated, no results) or is ``sum(clicks)``: the
    key is the covering index's leading columns in order, so SQLite and PostgreSQL read
    the index once, without a sort, and evaluate no expression per row."""
    s = ExperimentSearch
    stmt = select(
        s.arm,
        s.first_click_rank,
        s.latency_bucket,
        s.reformulated,
        s.zero_results,
        func.count(),
        func.sum(s.clicks),
    ).group_by(s.arm, s.first_click_rank, s.latency_bucket, s.reformulated, s.zero_results)
    if since is not None:
        stmt = stmt.where(s.created_at >= since)
    groups: dict[tuple[str, int | None, int], list[int]] = {}
    for arm, rank, bucket, reformulated, zero, n, events in session.execute(stmt):
        counts = groups.setdefault((arm, rank, int(bucket)), [0, 0, 0, 0, 0])
        n = int(n)
        counts[0] += n
        counts[1] += n if zero else 0
        counts[2] += n if reformulated else 0
        counts[3] += n if rank is None and not zero and not reformulated else 0
        counts[4] += int(events or 0)
    return [
        ArmGroup(
            arm=arm,
            first_click_rank=rank,
            latency_bucket=bucket,
            searches=c[0],
            zero_results=c[1],
            reformulated=c[2],
            abandoned=c[3],
            events=c[4],
        )
        for (arm, rank, bucket), c in groups.items()
    ]


def interleaving_outcomes(
    session: Session, *, arm: str, since: datetime | None = None
) -> dict[str, int]:
    """Interleaved searches by outcome: ``win`` (the candidate's results got more
    clicks), ``loss``, ``tie`` (clicked, equal credit) and ``no_click``."""
    s = ExperimentSearch
    outcome = case(
        (s.clicks == 0, "no_click"),
        (s.credit_candidate > s.credit_baseline, "win"),
        (s.credit_candidate < s.credit_baseline, "loss"),
        else_="tie",
    )
    stmt = select(outcome, func.count()).where(s.arm == arm).group_by(outcome)
    if since is not None:
        stmt = stmt.where(s.created_at >= since)
    counts = {"win": 0, "loss": 0, "tie": 0, "no_click": 0}
    for name, n in session.execute(stmt):
        counts[str(name)] = int(n)
    return counts


@dataclass(frozen=True)
class DayArm:
    day: str  # YYYY-MM-DD (UTC)
    arm: str
    searches: int
    clicked: int
    clicked_at_1: int
    reciprocal_ranks: float
    zero_results: int
    reformulated: int


def daily(session: Session, *, since: datetime, until: datetime) -> list[DayArm]:
    """Per UTC day and arm in [since, until): a range scan of the time index."""
    s = ExperimentSearch
    day = func.date(s.created_at)
    stmt = (
        select(
            day,
            s.arm,
            func.count(),
            func.count(s.first_click_rank),
            func.sum(case((s.first_click_rank == 1, 1), else_=0)),
            func.sum(case((s.first_click_rank.is_not(None), 1.0 / s.first_click_rank), else_=0.0)),
            func.sum(case((s.zero_results.is_(True), 1), else_=0)),
            func.sum(case((s.reformulated.is_(True), 1), else_=0)),
        )
        .where(s.created_at >= since, s.created_at < until)
        .group_by(day, s.arm)
        .order_by(day, s.arm)
    )
    return [
        DayArm(
            day=str(d),
            arm=arm,
            searches=int(n),
            clicked=int(clicked or 0),
            clicked_at_1=int(at_1 or 0),
            reciprocal_ranks=float(rr or 0.0),
            zero_results=int(zero or 0),
            reformulated=int(ref or 0),
        )
        for d, arm, n, clicked, at_1, rr, zero, ref in session.execute(stmt)
    ]


def count_searches(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ExperimentSearch)) or 0)


__all__ = [
    "COLD_START_BUCKET",
    "ArmGroup",
    "DayArm",
    "IntegrityError",
    "SearchRecord",
    "add_event",
    "arm_groups",
    "count_searches",
    "daily",
    "event_exists",
    "get_search",
    "insert_searches",
    "interleaving_outcomes",
    "mark_reformulated",
    "prune",
]
