"""Recording searches and their click events for the rollout experiment.

Every answered search gets an id and a row in the experiment log: who asked (user id
or anonymous, bucket), which arm answered (a model, or ``interleaved``), what the
flags chose and why the router fell back, the kind of query, the result ids in order
(with each result's team when interleaved), the count and the latency.

Recording never slows or fails a search: :meth:`SearchLog.record` puts the record on
a bounded queue and returns; one writer thread inserts records in batches, and an
error there is logged and counted (``errors``), never raised to the search. A database
held by another writer only delays the writer: it retries a busy or full database with
backoff for up to ``WRITE_RETRY_S`` before it gives a batch up.

Events never wait on a writer either. An event for a search this process answered
recently is checked against the search as it was recorded in memory (still queued, or
written) and queued behind it, so a click is accepted while its search waits for a
busy database. An event that reaches another API process than its search's (whose
writer may not have written it yet) polls the DB for it a short, bounded while
(``EVENT_WAIT_S``) before it is refused as unknown.

The first search each model answers in a process is marked a cold start (the model was
just loaded): its latency is kept but left out of latency percentiles and guardrails.
With ``ROLLOUT_AUTO_GUARD`` the writer thread also checks the guardrails now and then
(``GUARD_EVERY_S``) and rolls the candidate back through the live flags on a breach.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from cachetools import LRUCache
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from image_search_service.context import ServiceContext
from image_search_service.core.config import INTERLEAVED
from image_search_service.core.disk import is_disk_full
from image_search_service.core.errors import (
    DatabaseUnavailable,
    InvalidRequest,
    SearchNotFound,
    TooManyEvents,
)
from image_search_service.core.specs import CANDIDATE
from image_search_service.db import experiment_repository as exp_repo
from image_search_service.db.experiment_repository import SearchRecord, latency_bucket
from image_search_service.db.models import ExperimentResults, ExperimentSearch
from image_search_service.services.rollout.router import RouteDecision
from image_search_service.services.search.service import SearchOutcome

logger = logging.getLogger(__name__)

EventType = Literal["click", "open", "more_like_this", "download"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# Latency is kept as a log-scale bucket too (about 6 % wide) so the report can take
# percentiles from a GROUP BY instead of sorting every search.


QUEUE_SIZE = 10_000
BATCH_SIZE = 500
PRUNE_EVERY_S = 3600.0
# An event for a search this process has not seen polls the DB this long at most: the
# search's own process writes within milliseconds unless its DB is stalled.
EVENT_WAIT_S = 0.5
EVENT_POLL_S = 0.025
GUARD_EVERY_S = 30.0
# Searches kept in memory to check their events without the DB: as many as the queue
# holds, so every search not yet written is among them.
RECENT_SEARCHES = QUEUE_SIZE
# A busy (locked by another writer) or full database is retried this long, with backoff.
WRITE_RETRY_S = 600.0
WRITE_RETRY_MAX_DELAY_S = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_record(
    *,
    search_id: uuid.UUID,
    decision: RouteDecision,
    outcome: SearchOutcome,
    kind: str,
    latency_ms: float,
    now: datetime,
    cold_start: bool = False,
) -> SearchRecord:
    return SearchRecord(
        id=search_id,
        created_at=now,
        user_id=decision.user_id,
        bucket=decision.bucket,
        arm=outcome.arm,
        selected=INTERLEAVED if decision.interleave else decision.selected,
        fallback_code=decision.fallback_code,
        kind=kind,
        asset_ids=tuple(str(h.asset_id) for h in outcome.results),
        models=tuple(h.model for h in outcome.results) if outcome.interleaved else None,
        latency_ms=latency_ms,
        latency_bucket=latency_bucket(latency_ms, cold_start=cold_start),
    )


def write_records(
    session: Session, records: Sequence[SearchRecord], *, reformulation_window: timedelta
) -> None:
    """Insert ``records`` and mark the searches they reformulate: a user's earlier text
    search, within the window, that got no click."""
    exp_repo.insert_searches(session, records)
    for r in records:
        if r.kind == "text" and r.user_id is not None:
            exp_repo.mark_reformulated(
                session,
                user_id=r.user_id,
                since=r.created_at - reformulation_window,
                before=r.created_at,
            )


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


@dataclass
class _Recent:
    """A search this process answered, and the events accepted for it here."""

    record: SearchRecord
    events: set[tuple[str, str]] = field(default_factory=set)  # (asset id, type)


@dataclass(frozen=True)
class _QueuedEvent:
    search_id: uuid.UUID
    asset_id: uuid.UUID
    type: str
    rank: int
    model: str
    credit_candidate: bool | None


_STOP = object()


class SearchLog:
    """The per-process experiment recorder (see the module docstring).

    ``background=False`` writes each record at once in the caller's thread (the CLI,
    tests and simulations, where the order of writes must be exactly the calls').
    """

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        background: bool = True,
        clock: Callable[[], datetime] = utcnow,
        event_wait_s: float = EVENT_WAIT_S,
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.enabled = settings.experiment_recording
        self.retention = timedelta(days=settings.experiment_retention_days)
        self.window = timedelta(seconds=settings.experiment_reformulation_window_s)
        self.max_events = settings.experiment_max_events_per_search
        self.background = background
        self.clock = clock
        self.recorded = 0
        self.errors = 0
        self.dropped = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._next_prune = 0.0
        self._next_guard = 0.0
        self.event_wait_s = event_wait_s
        self.event_waits = 0  # events whose search was not in the DB at first look
        self.auto_guard = settings.rollout_auto_guard
        self.schedule = bool(settings.rollout_steps)
        self._warm: set[str] = set()  # models that answered a search in this process
        self._recent: LRUCache[uuid.UUID, _Recent] = LRUCache(maxsize=RECENT_SEARCHES)
        self._closing = threading.Event()
        self.write_retries = 0  # batches written after the database was busy or full

    # -- searches ------------------------------------------------------------------------
    def record(
        self,
        *,
        search_id: uuid.UUID,
        decision: RouteDecision,
        outcome: SearchOutcome,
        kind: str,
        latency_ms: float,
        cold_start: bool | None = None,
    ) -> None:
        """Log one answered search. Never raises. ``cold_start`` None: the first search
        a model answers in this process is one."""
        if not self.enabled:
            return
        try:
            models = {h.model for h in outcome.results} | {outcome.model}
            with self._lock:
                if cold_start is None:
                    cold_start = not models <= self._warm
                self._warm |= models
            record = make_record(
                search_id=search_id,
                decision=decision,
                outcome=outcome,
                kind=kind,
                latency_ms=latency_ms,
                now=self.clock(),
                cold_start=cold_start,
            )
            if not self.background:
                self._write([record])
                return
            self._ensure_thread()
            self._queue.put_nowait(record)
            with self._lock:
                self._recent[search_id] = _Recent(record)
        except queue.Full:
            self.dropped += 1
            self.errors += 1
            logger.warning("experiment log queue is full: search %s not recorded", search_id)
        except Exception:  # recording must never fail a search
            self.errors += 1
            logger.exception("could not record search %s", search_id)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record queued so far is written (or failed)."""
        if self._thread is None or not self._thread.is_alive():
            return
        marker = _Flush()
        self._queue.put(marker)
        marker.done.wait(timeout)

    def close(self) -> None:
        self._closing.set()  # a batch waiting on a busy database is given up
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=10.0)
        self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="experiment-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[SearchRecord] = []
            events: list[_QueuedEvent] = []
            markers: list[_Flush] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                elif isinstance(item, SearchRecord):
                    batch.append(item)
                elif isinstance(item, _QueuedEvent):
                    events.append(item)
                if stop or len(batch) + len(events) >= BATCH_SIZE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch or events:
                self._write(batch, events)
            for marker in markers:
                marker.done.set()
            if stop:
                return
            self._maybe_prune()
            self._maybe_guard()

    def _write(self, batch: list[SearchRecord], events: Sequence[_QueuedEvent] = ()) -> None:
        """Write searches, then the events queued behind them, in one transaction. A
        busy or full database is waited out (``WRITE_RETRY_S``); anything else loses
        the batch (logged and counted), never the writer."""
        deadline = time.monotonic() + WRITE_RETRY_S
        delay = 0.25
        while True:
            try:
                with self.ctx.transaction() as session:
                    write_records(session, batch, reformulation_window=self.window)
                    for event in events:
                        self._write_event(session, event)
                self.recorded += len(batch)
                return
            except OperationalError as exc:
                if not _worth_waiting_for(exc):
                    self.errors += len(batch) + len(events)
                    logger.exception(
                        "could not record %d searches in the experiment log", len(batch)
                    )
                    return
                if self._closing.is_set() or time.monotonic() + delay > deadline:
                    self.errors += len(batch) + len(events)
                    logger.error(
                        "gave up recording %d searches and %d events: the database stayed "
                        "unavailable for %.0f s (%s)",
                        len(batch),
                        len(events),
                        WRITE_RETRY_S,
                        exc.orig,
                    )
                    return
                if delay == 0.25:
                    logger.warning(
                        "experiment log: the database is unavailable (%s); %d searches wait "
                        "in memory and are retried",
                        exc.orig,
                        len(batch),
                    )
                self.write_retries += 1
                self._closing.wait(delay)
                delay = min(delay * 2, WRITE_RETRY_MAX_DELAY_S)
            except Exception:
                self.errors += len(batch) + len(events)
                logger.exception("could not record %d searches in the experiment log", len(batch))
                return

    def _write_event(self, session: Session, event: _QueuedEvent) -> None:
        if exp_repo.event_exists(session, event.search_id, event.asset_id, event.type):
            return  # stored meanwhile by another process
        try:
            with session.begin_nested():
                stored = exp_repo.add_event(
                    session,
                    search_id=event.search_id,
                    asset_id=event.asset_id,
                    type_=event.type,
                    rank=event.rank,
                    model=event.model,
                    credit_candidate=event.credit_candidate,
                    max_events=self.max_events,
                )
        except IntegrityError:  # the same event from another process, or a lost search
            return
        if not stored:
            logger.info("search %s is at its event cap: an event dropped", event.search_id)

    def _maybe_prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        try:
            self.prune()
        except Exception:
            logger.exception("could not prune the experiment log")

    def _maybe_guard(self) -> None:
        if not (self.auto_guard or self.schedule) or time.monotonic() < self._next_guard:
            return
        self._next_guard = time.monotonic() + GUARD_EVERY_S
        try:
            self.guard()
        except Exception:
            logger.exception("could not check the rollout guardrails")

    def guard(self) -> str | None:
        """Check the guardrails now and, with ``ROLLOUT_AUTO_GUARD``, roll back on a
        breach; otherwise, with ``ROLLOUT_SCHEDULE``, take the next step when the
        evidence allows. What was applied, or None."""
        from image_search_service.services.rollout.flags import LiveRollout
        from image_search_service.services.rollout.report import (
            advance_schedule,
            enforce_guardrails,
        )

        flags = LiveRollout(self.ctx)
        return enforce_guardrails(self.ctx, flags) or advance_schedule(self.ctx, flags)

    def prune(self) -> int:
        """Delete what is older than ``EXPERIMENT_RETENTION_DAYS``."""
        with self.ctx.transaction() as session:
            removed = exp_repo.prune(session, older_than=self.clock() - self.retention)
        if removed:
            logger.info("experiment log: pruned %d searches past retention", removed)
        return removed

    # -- events --------------------------------------------------------------------------
    def record_event(
        self,
        session: Session,
        *,
        search_id: uuid.UUID,
        asset_id: uuid.UUID,
        type_: str,
        rank: int,
    ) -> EventOutcome:
        """Validate and store one event (the caller commits). Raises
        :class:`SearchNotFound` for an unknown or expired search, :class:`InvalidRequest`
        for an asset not among its results (at that rank) or an unknown type, and
        :class:`TooManyEvents` past the per-search cap; nothing is stored then. The same
        event twice is stored once (``recorded=False`` the second time)."""
        if type_ not in EVENT_TYPES:
            raise InvalidRequest(f"type must be one of {', '.join(EVENT_TYPES)}")
        with self._lock:
            recent = self._recent.get(search_id)
        if recent is not None:
            return self._accept_event(recent, asset_id=asset_id, type_=type_, rank=rank)
        found = self._find(session, search_id)
        if found is None or found[0].created_at < self.clock() - self.retention:
            raise SearchNotFound(f"search {search_id} is unknown or has expired")
        search, results = found
        model = _result_model(results.asset_ids, results.models, search.arm, asset_id, rank)
        outcome = EventOutcome(
            search_id=search_id, recorded=False, arm=search.arm, model=model, type=type_
        )
        if exp_repo.event_exists(session, search_id, asset_id, type_):
            return outcome
        credit = (model == CANDIDATE) if search.arm == INTERLEAVED else None
        try:
            with session.begin_nested():
                stored = exp_repo.add_event(
                    session,
                    search_id=search_id,
                    asset_id=asset_id,
                    type_=type_,
                    rank=rank,
                    model=model,
                    credit_candidate=credit,
                    max_events=self.max_events,
                )
        except IntegrityError:  # the same event, stored meanwhile by another request
            return outcome
        if not stored:
            raise TooManyEvents(
                f"search {search_id} already holds {self.max_events} events "
                "(EXPERIMENT_MAX_EVENTS_PER_SEARCH)"
            )
        return replace(outcome, recorded=True)

    def _accept_event(
        self, recent: _Recent, *, asset_id: uuid.UUID, type_: str, rank: int
    ) -> EventOutcome:
        """An event for a search this process answered: checked against the search as
        recorded and queued behind it, so it never waits for the database."""
        record = recent.record
        model = _result_model(record.asset_ids, record.models, record.arm, asset_id, rank)
        outcome = EventOutcome(
            search_id=record.id, recorded=False, arm=record.arm, model=model, type=type_
        )
        key = (str(asset_id), type_)
        with self._lock:
            if key in recent.events:
                return outcome
            if len(recent.events) >= self.max_events:
                raise TooManyEvents(
                    f"search {record.id} already holds {self.max_events} events "
                    "(EXPERIMENT_MAX_EVENTS_PER_SEARCH)"
                )
            recent.events.add(key)
        credit = (model == CANDIDATE) if record.arm == INTERLEAVED else None
        try:
            self._queue.put_nowait(_QueuedEvent(record.id, asset_id, type_, rank, model, credit))
        except queue.Full:
            with self._lock:
                recent.events.discard(key)
            raise DatabaseUnavailable(
                "the experiment log is behind a busy database; try the event again later"
            ) from None
        self._ensure_thread()
        return replace(outcome, recorded=True)

    def _find(
        self, session: Session, search_id: uuid.UUID
    ) -> tuple[ExperimentSearch, ExperimentResults] | None:
        """The search, polled for up to ``event_wait_s``: another process may have
        answered it and not written it yet. Each poll is a new statement, which sees
        rows committed since (SQLite outside a write transaction, PostgreSQL's READ
        COMMITTED)."""
        deadline = time.monotonic() + self.event_wait_s
        found = exp_repo.get_search(session, search_id)
        if found is not None:
            return found
        self.event_waits += 1  # not here yet: written by another process, or unknown
        while time.monotonic() < deadline:
            time.sleep(EVENT_POLL_S)
            found = exp_repo.get_search(session, search_id)
            if found is not None:
                return found
        return None


# SQLite's words for another writer's lock and for a full disk: what waiting can fix.
_SQLITE_WAIT_FOR = ("database is locked", "database table is locked", "disk is full", "busy")


def _worth_waiting_for(exc: OperationalError) -> bool:
    """A busy, full or unreachable database (retry), not a broken schema or query."""
    if exc.connection_invalidated or is_disk_full(exc):
        return True
    message = str(exc.orig).lower()
    if any(words in message for words in _SQLITE_WAIT_FOR):
        return True
    # PostgreSQL: psycopg's OperationalError is the server or the connection going away
    # (a missing table is a ProgrammingError there, never seen here).
    return type(exc.orig).__module__.startswith("psycopg")


def _result_model(
    asset_ids: Sequence[str],
    models: Sequence[str] | None,
    arm: str,
    asset_id: uuid.UUID,
    rank: int,
) -> str:
    """The model credited with ``asset_id`` at ``rank`` of a search's results; raises
    :class:`InvalidRequest` when it is not there."""
    try:
        position = list(asset_ids).index(str(asset_id))
    except ValueError:
        raise InvalidRequest(f"asset {asset_id} is not among the results of that search") from None
    if rank != position + 1:
        raise InvalidRequest(
            f"asset {asset_id} is at rank {position + 1} of that search, not {rank}"
        )
    return models[position] if models else arm


@dataclass(frozen=True)
class EventOutcome:
    search_id: uuid.UUID
    recorded: bool  # False: the same event was already stored
    arm: str
    model: str  # the model credited
    type: str
