"""The experiment log and report against real databases (SQLite, PostgreSQL): what is
recorded, which events are refused, reformulations, retention, and the report's
figures on searches whose answers are known."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.errors import InvalidRequest, SearchNotFound, TooManyEvents
from image_search_service.db import experiment_repository as exp_repo
from image_search_service.db.models import ExperimentEvent, ExperimentResults, ExperimentSearch
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.rollout.report import decide, experiment_report
from image_search_service.services.search.log import SearchLog
from tests.integration.experiment_support import route_decision, search_outcome

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_ctx(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    encoders: EncoderRegistry,
) -> Iterator[ServiceContext]:
    overrides: dict[str, object] = {
        "experiment_max_events_per_search": 3,
        "experiment_retention_days": 30,
    }
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    ctx = open_context(make_settings(**overrides), encoders=encoders)
    yield ctx
    ctx.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(db_ctx: ServiceContext, clock: Clock) -> SearchLog:
    return SearchLog(db_ctx, background=False, clock=clock)


def _search(
    log: SearchLog,
    model: ModelKey = "clip",
    *,
    user: str | None = "u1",
    n: int = 5,
    kind: str = "text",
    latency_ms: float = 20.0,
    models: Sequence[ModelKey] | None = None,
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    search_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(n)]
    interleaved = models is not None
    log.record(
        search_id=search_id,
        decision=route_decision(model, user, interleave=interleaved),
        outcome=search_outcome(
            ids, list(models) if models else [model] * n, interleaved=interleaved
        ),
        kind=kind,
        latency_ms=latency_ms,
    )
    return search_id, ids


def _event(
    log: SearchLog, search_id: uuid.UUID, asset_id: uuid.UUID, rank: int, type_: str = "click"
) -> bool:
    with log.ctx.transaction() as session:
        return log.record_event(
            session, search_id=search_id, asset_id=asset_id, type_=type_, rank=rank
        ).recorded


def _count(ctx: ServiceContext, table: type) -> int:
    with ctx.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


class TestRecording:
    def test_a_search_is_recorded_with_everything_the_report_needs(
        self, log: SearchLog, db_ctx: ServiceContext
    ) -> None:
        search_id, ids = _search(log, "siglip", user="alice", n=3, latency_ms=42.5)
        with db_ctx.transaction() as session:
            found = exp_repo.get_search(session, search_id)
            assert found is not None
            row, results = found
            assert (row.user_id, row.arm, row.selected, row.kind) == (
                "alice",
                "siglip",
                "siglip",
                "text",
            )
            assert (row.result_count, row.latency_ms, row.clicks) == (3, 42.5, 0)
            assert results.asset_ids == [str(i) for i in ids]
            assert results.models is None
        assert log.recorded == 1

    def test_interleaved_results_keep_their_teams(
        self, log: SearchLog, db_ctx: ServiceContext
    ) -> None:
        search_id, ids = _search(log, "siglip", n=3, models=["siglip", "clip", "clip"])
        with db_ctx.transaction() as session:
            found = exp_repo.get_search(session, search_id)
            assert found is not None
            assert found[0].arm == "interleaved"
            assert found[1].models == ["siglip", "clip", "clip"]
        assert _event(log, search_id, ids[1], 2)
        assert _event(log, search_id, ids[2], 3)
        assert _event(log, search_id, ids[0], 1)
        with db_ctx.transaction() as session:
            row = session.get(ExperimentSearch, search_id)
            assert row is not None
            assert (row.credit_baseline, row.credit_candidate, row.first_click_rank) == (2, 1, 1)

    def test_background_writer_and_flush(self, db_ctx: ServiceContext, clock: Clock) -> None:
        log = SearchLog(db_ctx, clock=clock)
        try:
            ids = [_search(log)[0] for _ in range(20)]
            log.flush()
            with db_ctx.transaction() as session:
                assert all(exp_repo.get_search(session, i) is not None for i in ids)
        finally:
            log.close()
        assert (log.recorded, log.errors) == (20, 0)

    def test_a_recording_failure_never_reaches_the_search(
        self, log: SearchLog, db_ctx: ServiceContext
    ) -> None:
        with db_ctx.engine.begin() as conn:
            conn.execute(text("DROP TABLE experiment_events"))
            conn.execute(text("DROP TABLE experiment_results"))
        _search(log)  # no exception
        assert (log.recorded, log.errors) == (0, 1)

    def test_recording_can_be_switched_off(
        self, make_settings: Callable[..., Settings], encoders: EncoderRegistry
    ) -> None:
        ctx = open_context(make_settings(experiment_recording=False), encoders=encoders)
        try:
            _search(SearchLog(ctx, background=False))
            assert _count(ctx, ExperimentSearch) == 0
        finally:
            ctx.close()


class TestEvents:
    def test_idempotent(self, log: SearchLog, db_ctx: ServiceContext) -> None:
        search_id, ids = _search(log)
        assert _event(log, search_id, ids[2], 3) is True
        assert _event(log, search_id, ids[2], 3) is False
        assert _event(log, search_id, ids[2], 3, "download") is True  # another type
        assert _count(db_ctx, ExperimentEvent) == 2
        with db_ctx.transaction() as session:
            row = session.get(ExperimentSearch, search_id)
            assert row is not None
            assert (row.clicks, row.first_click_rank) == (2, 3)

    def test_refused_events_store_nothing(
        self, log: SearchLog, db_ctx: ServiceContext, clock: Clock
    ) -> None:
        search_id, ids = _search(log)
        with pytest.raises(SearchNotFound):
            _event(log, uuid.uuid4(), ids[0], 1)
        with pytest.raises(InvalidRequest, match="not among the results"):
            _event(log, search_id, uuid.uuid4(), 1)
        with pytest.raises(InvalidRequest, match="at rank 2"):
            _event(log, search_id, ids[1], 4)
        with pytest.raises(InvalidRequest, match="type must be"):
            _event(log, search_id, ids[1], 2, "like")
        assert _count(db_ctx, ExperimentEvent) == 0
        clock.advance(days=31)
        with pytest.raises(SearchNotFound, match="expired"):
            _event(log, search_id, ids[0], 1)
        assert _count(db_ctx, ExperimentEvent) == 0

    def test_per_search_cap(self, log: SearchLog, db_ctx: ServiceContext) -> None:
        search_id, ids = _search(log)
        for rank in (1, 2, 3):
            assert _event(log, search_id, ids[rank - 1], rank)
        with pytest.raises(TooManyEvents):
            _event(log, search_id, ids[3], 4)
        assert _event(log, search_id, ids[0], 1) is False  # a repeat is still fine
        assert _count(db_ctx, ExperimentEvent) == 3


class TestReformulation:
    def _reformulated(self, ctx: ServiceContext, search_id: uuid.UUID) -> bool:
        with ctx.transaction() as session:
            row = session.get(ExperimentSearch, search_id)
            assert row is not None
            return row.reformulated

    def test_a_quick_new_text_search_without_a_click(
        self, log: SearchLog, db_ctx: ServiceContext, clock: Clock
    ) -> None:
        first, _ = _search(log, user="u1")
        clock.advance(seconds=30)
        other_user, _ = _search(log, user="u2")
        clock.advance(seconds=5)
        second, ids = _search(log, user="u1")
        assert self._reformulated(db_ctx, first)
        assert not self._reformulated(db_ctx, other_user)
        _event(log, second, ids[0], 1)
        clock.advance(seconds=10)
        third, _ = _search(log, user="u1")
        assert not self._reformulated(db_ctx, second)  # it was clicked
        clock.advance(seconds=61)
        _search(log, user="u1")
        assert not self._reformulated(db_ctx, third)  # outside the 60 s window

    def test_image_searches_and_anonymous_users_do_not_count(
        self, log: SearchLog, db_ctx: ServiceContext, clock: Clock
    ) -> None:
        first, _ = _search(log, user=None)
        clock.advance(seconds=5)
        _search(log, user=None)
        by_image, _ = _search(log, user="u1")
        clock.advance(seconds=5)
        _search(log, user="u1", kind="image")
        assert not self._reformulated(db_ctx, first)
        assert not self._reformulated(db_ctx, by_image)


def test_pruning_removes_old_searches_with_their_results_and_events(
    log: SearchLog, db_ctx: ServiceContext, clock: Clock
) -> None:
    old, old_ids = _search(log)
    _event(log, old, old_ids[0], 1)
    clock.advance(days=20)
    kept, kept_ids = _search(log)
    _event(log, kept, kept_ids[0], 1)
    clock.advance(days=15)
    assert log.prune() == 1
    assert (_count(db_ctx, ExperimentSearch), _count(db_ctx, ExperimentResults)) == (1, 1)
    assert _count(db_ctx, ExperimentEvent) == 1


class TestReport:
    def test_figures_on_known_searches(
        self, log: SearchLog, db_ctx: ServiceContext, clock: Clock
    ) -> None:
        # clip: 10 searches; first clicks at ranks 1, 1, 2, 4; one without results;
        # one reformulated (u-r's first search); latency 10 ms x9, 100 ms x1.
        for i, rank in enumerate([1, 1, 2, 4, None, None, None, None, None]):
            search_id, ids = _search(log, "clip", user=f"c{i}", latency_ms=10.0)
            if rank is not None:
                _event(log, search_id, ids[rank - 1], rank)
                _event(log, search_id, ids[4], 5, "open")  # a later event: rank stays
            if i == 5:
                clock.advance(seconds=1)
                _search(log, "siglip", user=f"c{i}", latency_ms=50.0)  # reformulates it
        _search(log, "clip", user="z", n=0, latency_ms=100.0)
        # siglip: the reformulating search above + 4 more, clicks at ranks 1, 1, 1.
        for i in range(4):
            search_id, ids = _search(log, "siglip", user=f"s{i}", latency_ms=50.0)
            if i < 3:
                _event(log, search_id, ids[0], 1)
        with db_ctx.transaction() as session:
            report = experiment_report(session, db_ctx.settings)
        clip, siglip = report.arms["clip"], report.arms["siglip"]
        assert (clip.searches, clip.clicked_searches, clip.events) == (10, 4, 8)
        assert (clip.ctr, clip.ctr_at_1, clip.ctr_at_5) == (0.4, 0.2, 0.4)
        assert clip.mrr == pytest.approx((1 + 1 + 0.5 + 0.25) / 10, abs=1e-6)
        assert (clip.zero_result_rate, clip.reformulation_rate) == (0.1, 0.1)
        assert clip.abandonment_rate == pytest.approx(0.4)  # 6 unclicked - 1 empty - 1 reformulated
        assert clip.latency_p50_ms == pytest.approx(10.0, rel=0.07)
        assert clip.latency_p95_ms == pytest.approx(100.0, rel=0.07)
        assert (siglip.searches, siglip.ctr, siglip.ctr_at_1) == (5, 0.6, 0.6)
        assert siglip.latency_p50_ms == pytest.approx(50.0, rel=0.07)
        ctr = report.comparisons[0]
        assert (ctr.metric, ctr.baseline, ctr.candidate) == ("ctr", 0.4, 0.6)
        assert ctr.difference == pytest.approx(0.2)
        assert not ctr.significant  # 15 searches prove nothing
        assert report.recommendation.action == "hold"
        assert "not enough data" in report.recommendation.text
        assert report.power.needed_per_arm is not None
        assert report.power.still_needed_per_arm == report.power.needed_per_arm - 5
        # --since drops what came before
        with db_ctx.transaction() as session:
            later = experiment_report(
                session, db_ctx.settings, since=clock.now + timedelta(seconds=1)
            )
        assert later.arms["clip"].searches == 0
        # The same instant in another time zone, and naive (= UTC), select the same.
        paris = timezone(timedelta(hours=1))
        with db_ctx.transaction() as session:
            for since in (T0.astimezone(paris), T0.replace(tzinfo=None)):
                again = experiment_report(session, db_ctx.settings, since=since)
                assert again.arms["clip"].searches == 10
            after = experiment_report(
                session, db_ctx.settings, since=(T0 + timedelta(seconds=1)).astimezone(paris)
            )
            assert after.arms["clip"].searches < 10

    def test_interleaving_tally(self, log: SearchLog, db_ctx: ServiceContext) -> None:
        teams: list[ModelKey] = ["siglip", "clip", "siglip", "clip"]
        outcomes = {"win": 19, "loss": 1, "tie": 2, "no_click": 3}
        for outcome, count in outcomes.items():
            for _ in range(count):
                search_id, ids = _search(log, "siglip", n=4, models=teams)
                if outcome == "win":
                    _event(log, search_id, ids[0], 1)
                elif outcome == "loss":
                    _event(log, search_id, ids[1], 2)
                elif outcome == "tie":
                    _event(log, search_id, ids[2], 3)
                    _event(log, search_id, ids[3], 4)
        with db_ctx.transaction() as session:
            report = experiment_report(session, db_ctx.settings)
        il = report.interleaving
        assert (il.searches, il.wins, il.losses, il.ties, il.no_click) == (25, 19, 1, 2, 3)
        # The exact sign test is kept for reference; the verdict is the sequential test.
        assert il.fixed_horizon_p_value == pytest.approx(2 * 21 / 2**20, rel=1e-3)
        assert il.significant
        assert il.p_value < 0.05
        assert il.win_share == pytest.approx(0.95)
        assert il.win_share_ci_low is not None
        assert il.win_share_ci_low > 0.5
        assert report.arms["interleaved"].searches == 25
        assert report.comparisons == []  # no A/B arm has searches: no difference shown
        assert report.recommendation.action == "raise"
        assert report.recommendation.target_percentage == 1
        assert report.recommendation.apply == {"siglip_rollout_percentage": 1}


def test_recommendation_in_words() -> None:
    from image_search_service.services.rollout.flags import RolloutState
    from image_search_service.services.rollout.report import (
        ComparisonOut,
        InterleavingOut,
        PowerOut,
    )

    def cmp(diff: float, p: float, half: float = 0.01) -> ComparisonOut:
        return ComparisonOut(
            "ctr", 0.3, 0.3 + diff, diff, diff - half, diff + half, p, p < 0.05, "z", "", ""
        )

    quiet = InterleavingOut(0, 0, 0, 0, 0, 1.0, False)
    enough = PowerOut(0.02, 0.05, 0.8, 1000, 5000, 0)
    short = PowerOut(0.02, 0.05, 0.8, 1000, 10, 990)
    at_10 = RolloutState(False, 10, "database")
    up = decide(cmp(0.03, 0.001), quiet, enough, [], at_10)
    assert (up.action, up.target_percentage) == ("raise", 25)
    assert up.apply == {"siglip_rollout_percentage": 25}
    back = decide(cmp(-0.03, 0.001), quiet, enough, [], at_10)
    assert (back.action, back.target_percentage) == ("roll back", 0)
    assert back.text.startswith("roll back")
    assert "PUT /api/v1/admin/rollout" in back.text
    assert "SIGLIP_ROLLOUT" not in back.text
    # a wide interval (little data) that does not rule out a loss of 2 points: hold
    hold = decide(cmp(0.0, 0.9, half=0.05), quiet, short, [], at_10)
    assert (hold.action, hold.target_percentage) == ("hold", 10)
    assert "990 more searches per arm (1,000 per arm in all)" in hold.text
    # enough data, no difference, and the interval rules out a loss of 2 points: go on
    at_25 = RolloutState(False, 25, "database", 10)
    assert decide(cmp(0.0, 0.9), quiet, enough, [], at_25).target_percentage == 50
    # raising past the interleaved share shrinks it: the shares may not overlap
    at_50 = RolloutState(False, 50, "database", 40)
    assert decide(cmp(0.03, 0.001), quiet, enough, [], at_50).apply == {
        "siglip_rollout_percentage": 100,
        "interleave_percentage": 0,
    }


def test_daily_series_per_arm(log: SearchLog, db_ctx: ServiceContext, clock: Clock) -> None:
    from image_search_service.services.rollout.report import experiment_daily

    first, ids = _search(log, "clip")  # day 1: two clip searches, one clicked at rank 2
    _event(log, first, ids[1], 2)
    _search(log, "clip", n=0)
    clock.advance(days=1)
    second, ids = _search(log, "siglip")  # day 2: one siglip search clicked at rank 1
    _event(log, second, ids[0], 1)
    clock.advance(days=40)
    _search(log, "clip")  # day 42: outside a 10-day window
    with db_ctx.transaction() as session:
        rows = experiment_daily(session, days=3, now=T0 + timedelta(days=1, hours=1))
        assert [(r.day, r.arm, r.searches) for r in rows] == [
            ("2026-11-01", "clip", 2),
            ("2026-11-02", "siglip", 1),
        ]
        clip, siglip = rows
        assert (clip.ctr, clip.ctr_at_1, clip.mrr, clip.zero_result_rate) == (0.5, 0.0, 0.25, 0.5)
        assert (siglip.ctr, siglip.ctr_at_1, siglip.mrr) == (1.0, 1.0, 1.0)
        assert experiment_daily(session, days=1, now=T0 + timedelta(days=1, hours=1)) == [siglip]
