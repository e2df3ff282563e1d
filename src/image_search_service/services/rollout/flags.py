"""Live rollout flags: ``USE_SIGLIP`` / ``SIGLIP_ROLLOUT_PERCENTAGE`` changed at run time.

The environment gives the initial values. A change (``PUT /api/v1/admin/rollout``) is
stored in the metadata DB, with a history row, and from then on the DB wins over the
environment until the change is cleared. Every process re-reads the flags at most
``ROLLOUT_REFRESH_S`` seconds apart, so all API processes sharing a DB follow within
a few seconds, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from image_search_service.core.errors import DatabaseUnavailable, InvalidRequest
from image_search_service.db import repository as repo
from image_search_service.db.models import RolloutChange

if TYPE_CHECKING:
    from image_search_service.context import ServiceContext
    from image_search_service.core.config import Settings

logger = logging.getLogger(__name__)

FlagsSource = Literal["database", "environment"]
MAX_HISTORY = 1000


@dataclass(frozen=True)
class RolloutState:
    use_siglip: bool
    siglip_rollout_percentage: int
    source: FlagsSource  # where the values in force come from
    interleave_percentage: int = 0

    @property
    def flags(self) -> repo.RolloutFlags:
        return repo.RolloutFlags(
            self.use_siglip, self.siglip_rollout_percentage, self.interleave_percentage
        )


@dataclass(frozen=True)
class RolloutChangeView:
    changed_at: datetime
    old_use_siglip: bool
    old_siglip_rollout_percentage: int
    new_use_siglip: bool
    new_siglip_rollout_percentage: int
    source: str
    old_interleave_percentage: int = 0
    new_interleave_percentage: int = 0


def validate_flags(
    use_siglip: object, percentage: object, interleave: object = 0
) -> repo.RolloutFlags:
    if not isinstance(use_siglip, bool):
        raise InvalidRequest("use_siglip must be true or false")
    for name, value in (
        ("siglip_rollout_percentage", percentage),
        ("interleave_percentage", interleave),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{name} must be an integer")
        if not 0 <= value <= 100:
            raise InvalidRequest(f"{name} must be 0..100, got {value}")
    assert isinstance(percentage, int)
    assert isinstance(interleave, int)
    if percentage + interleave > 100:
        # The SigLIP share counts buckets from the bottom, interleaving from the top.
        raise InvalidRequest(
            "siglip_rollout_percentage + interleave_percentage must be at most 100, "
            f"got {percentage} + {interleave}"
        )
    return repo.RolloutFlags(use_siglip, percentage, interleave)


# One change at a time in this process: each change is checked against the flags it
# read (the shares may not overlap), and SQLite has no row lock (FOR UPDATE is a no-op
# there), so two requests at once could each pass their check and together break it.
# PostgreSQL's row lock does the same across processes.
_WRITES = threading.Lock()


class LiveRollout:
    """The flags in force, re-read from the DB at most every ``refresh_s`` seconds;
    thread-safe. When the DB cannot be read the last known flags stay in force."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        refresh_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self.environment = environment_state(ctx.settings)
        self.refresh_s = ctx.settings.rollout_refresh_s if refresh_s is None else refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: RolloutState | None = None
        self._expires = 0.0

    def current(self) -> RolloutState:
        with self._lock:
            if self._state is not None and self._clock() < self._expires:
                return self._state
        try:
            state = self._read()
        except (DatabaseUnavailable, OperationalError) as exc:
            with self._lock:
                kept = self._state or self.environment
                logger.warning("cannot read the rollout flags, keeping %s: %s", kept, exc)
                self._expires = self._clock() + self.refresh_s
                self._state = kept
                return kept
        with self._lock:
            if self._state is not None and self._state != state:
                logger.info(
                    "rollout changed: USE_SIGLIP=%s SIGLIP_ROLLOUT_PERCENTAGE=%d "
                    "INTERLEAVE_PERCENTAGE=%d (%s)",
                    state.use_siglip,
                    state.siglip_rollout_percentage,
                    state.interleave_percentage,
                    state.source,
                )
            self._state = state
            self._expires = self._clock() + self.refresh_s
            return state

    def invalidate(self) -> None:
        with self._lock:
            self._expires = 0.0

    def _read(self) -> RolloutState:
        with self._ctx.transaction() as session:
            return state_in(session, self.environment)

    def set(
        self,
        *,
        use_siglip: bool | None = None,
        siglip_rollout_percentage: int | None = None,
        interleave_percentage: int | None = None,
        source: str = "api",
    ) -> RolloutChangeView:
        """Change the flags (a value left out keeps its current one) and record it."""
        view = self._write(use_siglip, siglip_rollout_percentage, interleave_percentage, source)
        assert view is not None  # no expectation, so always written
        return view

    def set_if_unchanged(
        self,
        expected: repo.RolloutFlags,
        *,
        use_siglip: bool,
        siglip_rollout_percentage: int,
        interleave_percentage: int,
        source: str,
    ) -> RolloutChangeView | None:
        """The automatic changes (guardrail, schedule): written only if the flags are still
        ``expected`` under the row lock, else None. Every server process runs these checks;
        without it two processes acting on the same evidence would both record a step (and
        the second restart the evidence window) or stack two steps."""
        return self._write(
            use_siglip, siglip_rollout_percentage, interleave_percentage, source, expected
        )

    def _write(
        self,
        use_siglip: bool | None,
        siglip_rollout_percentage: int | None,
        interleave_percentage: int | None,
        source: str,
        expected: repo.RolloutFlags | None = None,
    ) -> RolloutChangeView | None:
        if (
            use_siglip is None
            and siglip_rollout_percentage is None
            and interleave_percentage is None
        ):
            raise InvalidRequest(
                "give use_siglip, siglip_rollout_percentage and/or interleave_percentage"
            )
        for attempt in (1, 2):
            try:
                with _WRITES, self._ctx.transaction() as session:
                    stored = repo.rollout_flags(session, for_update=True)
                    old = stored or self.environment.flags
                    if expected is not None and old != expected:
                        logger.info("rollout: %s not applied, the flags changed meanwhile", source)
                        return None
                    new = validate_flags(
                        old.use_siglip if use_siglip is None else use_siglip,
                        (
                            old.siglip_rollout_percentage
                            if siglip_rollout_percentage is None
                            else siglip_rollout_percentage
                        ),
                        (
                            old.interleave_percentage
                            if interleave_percentage is None
                            else interleave_percentage
                        ),
                    )
                    change = repo.set_rollout_flags(session, new, old=old, source=source)
                    view = _view(change)
                break
            except IntegrityError:  # another process stored the first row at the same time
                if attempt == 2:
                    raise
        self.invalidate()
        return view

    def reset(self, *, source: str = "api") -> RolloutChangeView | None:
        """Forget the run-time flags: the environment's values apply again."""
        with _WRITES, self._ctx.transaction() as session:
            stored = repo.rollout_flags(session, for_update=True)
            if stored is None:
                return None
            repo.clear_rollout_flags(session)
            change = repo.record_rollout_change(
                session, old=stored, new=self.environment.flags, source=source
            )
            view = _view(change)
        self.invalidate()
        return view

    def history(self, *, limit: int = 50) -> list[RolloutChangeView]:
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidRequest(f"limit must be 1..{MAX_HISTORY}")
        with self._ctx.transaction() as session:
            return [_view(c) for c in repo.rollout_history(session, limit=limit)]


def environment_state(settings: Settings) -> RolloutState:
    """The flags the environment sets (in force until a change is stored)."""
    return RolloutState(
        settings.use_siglip,
        settings.siglip_rollout_percentage,
        "environment",
        settings.interleave_percentage,
    )


def state_in(session: Session, environment: RolloutState) -> RolloutState:
    """The flags in force as the DB says now: stored ones win over the environment's.
    Usable without a :class:`LiveRollout` (the CLI report outside a server)."""
    stored = repo.rollout_flags(session)
    if stored is None:
        return environment
    return RolloutState(
        stored.use_siglip,
        stored.siglip_rollout_percentage,
        "database",
        stored.interleave_percentage,
    )


def last_change_at(session: Session) -> datetime | None:
    """When the flags last changed (None: never at run time)."""
    latest = repo.rollout_history(session, limit=1)
    return latest[0].changed_at if latest else None


def _view(change: RolloutChange) -> RolloutChangeView:
    return RolloutChangeView(
        changed_at=change.changed_at,
        old_use_siglip=change.old_use_siglip,
        old_siglip_rollout_percentage=change.old_siglip_rollout_percentage,
        new_use_siglip=change.new_use_siglip,
        new_siglip_rollout_percentage=change.new_siglip_rollout_percentage,
        source=change.source,
        old_interleave_percentage=change.old_interleave_percentage,
        new_interleave_percentage=change.new_interleave_percentage,
    )
