"""The embedding router: which model answers a request.

Flags (``USE_SIGLIP``, ``SIGLIP_ROLLOUT_PERCENTAGE``) and the user's bucket choose the
model; a coverage guard then sends the request back to the baseline while the chosen
model's collection does not cover the library yet (docs/design.md, invariant 8), and says
why. The roles themselves are defined in :mod:`core.specs`; callers take ``RouteDecision.model`` and
never branch on a model's name.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from image_search_service.core.config import INTERLEAVED, MODEL_KEYS, Arm, ModelKey
from image_search_service.core.errors import InvalidRequest
from image_search_service.core.specs import BASELINE, CANDIDATE
from image_search_service.db import repository as repo
from image_search_service.services.rollout.flags import FlagsSource, LiveRollout

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the bucket function stays importable without torch and the stores
    from image_search_service.context import ServiceContext
    from image_search_service.vector.base import CollectionInfo

BUCKETS = 100
MAX_USER_ID_CHARS = 256


def user_bucket(user_id: str) -> int:
    """The user's bucket, 0..99: the first 8 bytes of SHA-256 of the UTF-8 id, big-endian,
    mod 100. Never Python's ``hash()``: that is salted per process (docs/design.md, invariant 7)."""
    # surrogatepass: a lone surrogate from a percent-decoded query still hashes, stably.
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def clean_user_id(raw: str | None) -> str | None:
    """A blank id means "anonymous"; an id is hashed exactly as given otherwise."""
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_USER_ID_CHARS:
        raise InvalidRequest(f"user id is longer than {MAX_USER_ID_CHARS} characters")
    return raw


@dataclass(frozen=True)
class Readiness:
    """Whether a model's collection may answer searches, and if not, why."""

    model: ModelKey
    collection: str
    ready: bool
    exists: bool
    points: int
    embedded: int  # active assets this exact model has embedded
    active: int  # active assets in the library
    missing: int  # active assets the baseline has embedded and this model has not
    coverage: float
    reason_code: str | None = None  # short and stable: a metrics label
    reason: str | None = None  # for people


@dataclass(frozen=True)
class RouteDecision:
    model: ModelKey  # the model that answers
    collection: str
    selected: ModelKey  # the model flags and bucket chose, before the coverage guard
    user_id: str | None
    bucket: int  # the user's bucket, or a random draw for an anonymous request
    rule: str  # why ``selected`` was chosen
    fallback_code: str | None = None
    fallback_reason: str | None = None
    # Both models answer and their results are merged by team draft (``model`` is then
    # the candidate, whose readiness allowed it; the baseline always serves).
    interleave: bool = False
    # The request named its model (operators, the CLI): no flags, no coverage guard, and
    # not rollout evidence, since the user chose the arm.
    pinned: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user_id is None

    @property
    def arm(self) -> Arm:
        """The experiment arm: the answering model, or ``interleaved``."""
        return INTERLEAVED if self.interleave else self.model


@dataclass(frozen=True)
class RolloutStatus:
    """What operators see of the rollout (``RolloutOut``): the flags in force, each
    model's readiness, and one user's route when asked for."""

    use_siglip: bool
    siglip_rollout_percentage: int
    flags_source: FlagsSource
    flags_refresh_s: float
    interleave_percentage: int
    min_rollout_coverage: float | None
    coverage_cache_ttl_s: float
    baseline: ModelKey
    candidate: ModelKey
    models: dict[ModelKey, Readiness]
    user: RouteDecision | None = None


class EmbeddingRouter:
    """Decides per request from the user id and the flags; thread-safe.

    Coverage takes a few DB counts, so a model's readiness is cached for
    ``ROLLOUT_COVERAGE_TTL_S`` seconds; while one thread refreshes it, others keep
    using the previous answer instead of queueing behind the counts.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        coverage_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[int], int] | None = None,
    ) -> None:
        settings = ctx.settings
        self._ctx = ctx
        # USE_SIGLIP / SIGLIP_ROLLOUT_PERCENTAGE / INTERLEAVE_PERCENTAGE: the environment's,
        # unless changed at run time (stored in the DB, re-read every ROLLOUT_REFRESH_S).
        self.flags = LiveRollout(ctx, clock=clock)
        self.min_coverage = settings.min_rollout_coverage
        self.coverage_ttl_s = (
            settings.rollout_coverage_ttl_s if coverage_ttl_s is None else coverage_ttl_s
        )
        self._clock = clock
        # Anonymous requests: a fresh draw per request, so no user is pinned by accident.
        self._draw = draw or random.Random().randrange
        self._cache: dict[ModelKey, tuple[float, Readiness]] = {}
        self._refresh_lock = threading.Lock()

    @property
    def use_siglip(self) -> bool:
        return self.flags.current().use_siglip

    @property
    def percentage(self) -> int:
        return self.flags.current().siglip_rollout_percentage

    @property
    def interleave_percentage(self) -> int:
        return self.flags.current().interleave_percentage

    # -- choosing ------------------------------------------------------------------------
    def select(self, user_id: str | None) -> tuple[ModelKey, int, str]:
        """(model, bucket, rule) from flags and bucket alone. An interleaved user's
        model is the candidate (the rule says ``interleaved``): see :meth:`interleaves`."""
        bucket = user_bucket(user_id) if user_id is not None else self._draw(BUCKETS)
        flags = self.flags.current()  # read once: both values from the same moment
        percentage = flags.siglip_rollout_percentage
        if flags.use_siglip:
            return CANDIDATE, bucket, "USE_SIGLIP=true"
        interleave = flags.interleave_percentage
        if bucket >= BUCKETS - interleave:
            # Checked first: were the shares ever to overlap, those buckets interleave.
            return (
                CANDIDATE,
                bucket,
                f"bucket {bucket} >= {BUCKETS - interleave} "
                f"(INTERLEAVE_PERCENTAGE={interleave}): interleaved",
            )
        if bucket < percentage:
            return CANDIDATE, bucket, f"bucket {bucket} < SIGLIP_ROLLOUT_PERCENTAGE={percentage}"
        return BASELINE, bucket, f"bucket {bucket} >= SIGLIP_ROLLOUT_PERCENTAGE={percentage}"

    def interleaves(self, bucket: int) -> bool:
        """The interleaving share is counted from the top bucket down, the SigLIP share
        from the bottom up, so the two never overlap (their sum is checked at start and
        on every change)."""
        flags = self.flags.current()
        return not flags.use_siglip and bucket >= BUCKETS - flags.interleave_percentage

    def route(self, user_id: str | None) -> RouteDecision:
        return self._decide(user_id, self.readiness)

    def pinned(self, model: ModelKey, user_id: str | None) -> RouteDecision:
        """The decision for a request that names its model: that model answers."""
        return RouteDecision(
            model=model,
            collection=self._ctx.spec(model).collection,
            selected=model,
            user_id=user_id,
            bucket=user_bucket(user_id) if user_id is not None else 0,
            rule="the request named its model",
            pinned=True,
        )

    def _decide(
        self, user_id: str | None, readiness: Callable[[ModelKey], Readiness]
    ) -> RouteDecision:
        selected, bucket, rule = self.select(user_id)
        decision = RouteDecision(
            model=selected,
            collection=self._ctx.spec(selected).collection,
            selected=selected,
            user_id=user_id,
            bucket=bucket,
            rule=rule,
            interleave=self.interleaves(bucket),
        )
        if selected == BASELINE:
            return decision  # the baseline is what we fall back to: nothing to guard
        state = readiness(selected)
        if state.ready:
            return decision
        return replace(
            decision,
            model=BASELINE,
            collection=self._ctx.spec(BASELINE).collection,
            interleave=False,
            fallback_code=state.reason_code,
            fallback_reason=f"{state.reason}; answered by {BASELINE}",
        )

    def models_in_use(self) -> list[ModelKey]:
        """The models the flags can send traffic to (what ``PRELOAD_MODELS`` loads)."""
        flags = self.flags.current()
        if flags.use_siglip or flags.siglip_rollout_percentage > 0 or flags.interleave_percentage:
            return [BASELINE, CANDIDATE]
        return [BASELINE]

    # -- coverage guard ------------------------------------------------------------------
    def readiness(self, key: ModelKey) -> Readiness:
        """Cached :meth:`check_readiness`. The first answer is measured on the caller's
        thread; once it is older than the TTL, callers keep getting it while one
        background thread measures again: at millions of photos the counts take a second
        or more, which no search should wait for. A TTL of 0 measures on every call."""
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        if cached is not None and self.coverage_ttl_s > 0:
            if self._refresh_lock.acquire(blocking=False):
                threading.Thread(
                    target=self._refresh, args=(key,), name="coverage-guard", daemon=True
                ).start()
            return cached[1]  # seconds old; the refresh replaces it
        with self._refresh_lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() < cached[0]:
                return cached[1]
            state = self.check_readiness(key)
            self._cache[key] = (self._clock() + self.coverage_ttl_s, state)
            return state

    def _refresh(self, key: ModelKey) -> None:
        """Measure ``key`` again (the caller holds the refresh lock; released here)."""
        try:
            state = self.check_readiness(key)
            self._cache[key] = (self._clock() + self.coverage_ttl_s, state)
        except Exception:  # the stale answer stays; the next call after the TTL tries again
            logger.exception("could not check %s's coverage; keeping the last answer", key)
            stale = self._cache.get(key)
            if stale is not None:
                self._cache[key] = (self._clock() + self.coverage_ttl_s, stale[1])
        finally:
            self._refresh_lock.release()

    def invalidate(self) -> None:
        self._cache.clear()

    def check_readiness(self, key: ModelKey) -> Readiness:
        """Can ``key``'s collection serve now? Always true for the baseline."""
        state, info = self._measure(key)
        if key == BASELINE:
            return state
        code, reason = self._guard(state, info)
        if code == "points_missing":
            # Indexing writes the points, then records them as done, and a delete goes the
            # other way round: a count taken while one of them runs can come up short by
            # the batch in flight. A dropped collection is still short a moment later.
            state, info = self._measure(key)
            code, reason = self._guard(state, info)
        if code is None:
            return state
        return replace(state, ready=False, reason_code=code, reason=reason)

    def _measure(self, key: ModelKey) -> tuple[Readiness, CollectionInfo | None]:
        ctx = self._ctx
        spec = ctx.spec(key)
        # The database first, then the points: a point is written before it is recorded
        # as done, so points read second are never fewer than the done rows read first
        # because of an index run in between.
        with ctx.transaction() as session:
            cov = repo.coverage(session, spec)
            missing = (
                0
                if key == BASELINE
                else repo.count_covered_but_not_by(session, ctx.spec(BASELINE), spec)
            )
        info = ctx.store.collection_info(spec.collection)
        state = Readiness(
            model=key,
            collection=spec.collection,
            ready=True,
            exists=info is not None,
            points=info.points if info is not None else 0,
            embedded=cov.done_searchable,
            active=cov.searchable,
            # Separate counts may see different snapshots under concurrent writes: a
            # negative difference is no missing vector.
            missing=max(0, missing),
            coverage=cov.ratio,
        )
        return state, info

    def _guard(
        self, state: Readiness, info: CollectionInfo | None
    ) -> tuple[str | None, str | None]:
        key, collection = state.model, state.collection
        if info is None:
            return "collection_missing", f"{key} collection {collection!r} does not exist yet"
        expected = self._ctx.spec(key).identity
        if info.identity != expected:
            found = info.identity.describe() if info.identity else "no model stamp"
            return (
                "model_mismatch",
                f"{key} collection {collection!r} was filled by {found}, not the configured "
                f"{expected.describe()}",
            )
        if self.min_coverage is not None:
            if state.coverage < self.min_coverage:
                return (
                    "coverage_below_minimum",
                    f"{key} covers {state.embedded} of {state.active} assets "
                    f"({state.coverage:.1%}), below MIN_ROLLOUT_COVERAGE={self.min_coverage}",
                )
        elif state.missing:
            return (
                "coverage_incomplete",
                f"{key} has not embedded {state.missing} of the assets {BASELINE} covers "
                f"({state.embedded} of {state.active} assets embedded)",
            )
        if state.points < state.embedded:
            # The DB says embedded but the points are gone (collection dropped and re-made).
            return (
                "points_missing",
                f"{key} collection {collection!r} holds {state.points} points but "
                f"{state.embedded} assets are recorded as embedded",
            )
        return None, None

    # -- operators -----------------------------------------------------------------------
    def rollout_status(self, user_id: str | None = None) -> RolloutStatus:
        """Flags, each model's collection and readiness (checked now, not cached), and,
        given ``user_id``, that user's bucket and model."""
        states = {key: self.check_readiness(key) for key in MODEL_KEYS}
        flags = self.flags.current()
        return RolloutStatus(
            use_siglip=flags.use_siglip,
            siglip_rollout_percentage=flags.siglip_rollout_percentage,
            flags_source=flags.source,
            flags_refresh_s=self.flags.refresh_s,
            interleave_percentage=flags.interleave_percentage,
            min_rollout_coverage=self.min_coverage,
            coverage_cache_ttl_s=self.coverage_ttl_s,
            baseline=BASELINE,
            candidate=CANDIDATE,
            models=states,
            user=None if user_id is None else self._decide(user_id, states.__getitem__),
        )
