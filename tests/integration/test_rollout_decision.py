"""Rollout decisions an operator can trust (issue 19), on real databases and apps: the
report shows the live flags and names controls that work, A/B and interleaving that
disagree give a hold, a guardrail breach recommends (and with ROLLOUT_AUTO_GUARD
applies) a rollback, cold starts stay out of latency, and a click that reaches another
API process right after its search is recorded."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from image_search_service.cli import main
from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.errors import SearchNotFound
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.rollout.flags import LiveRollout
from image_search_service.services.rollout.report import (
    ROLLBACK,
    experiment_report,
    report_for,
)
from image_search_service.services.search.log import SearchLog
from tests.integration.api_support import ClientFactory, services
from tests.integration.experiment_support import route_decision, search_outcome

DEADLINE_S = 60  # generous: only guards against a hang; no timing is asserted


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'shared.sqlite3'}"


@pytest.fixture
def open_ctx(
    make_settings: Callable[..., Settings], encoders: EncoderRegistry, database_url: str
) -> Iterator[Callable[..., ServiceContext]]:
    """Contexts (one per "process") on one metadata DB, each its own vector store."""
    opened: list[ServiceContext] = []

    def factory(**overrides: Any) -> ServiceContext:
        settings = make_settings(database_url=database_url, qdrant_url=":memory:", **overrides)
        ctx = open_context(settings, encoders=encoders)
        opened.append(ctx)
        return ctx

    yield factory
    for ctx in opened:
        ctx.close()


def _search(
    log: SearchLog,
    model: ModelKey,
    *,
    latency_ms: float = 20.0,
    teams: Sequence[ModelKey] | None = None,
    cold_start: bool | None = None,
    n: int = 4,
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """One search recorded through the real search log (each by its own user, so no
    reformulations), with the latency given."""
    search_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(n)]
    log.record(
        search_id=search_id,
        decision=route_decision(model, f"u-{search_id}", interleave=teams is not None),
        outcome=search_outcome(ids, list(teams) if teams else [model] * n, interleaved=bool(teams)),
        kind="text",
        latency_ms=latency_ms,
        cold_start=cold_start,
    )
    return search_id, ids


def _click(log: SearchLog, search_id: uuid.UUID, asset_id: uuid.UUID, rank: int) -> bool:
    with log.ctx.transaction() as session:
        return log.record_event(
            session, search_id=search_id, asset_id=asset_id, type_="click", rank=rank
        ).recorded


class TestLiveFlags:
    def test_the_report_shows_the_flags_that_route_now(
        self,
        make_client: ClientFactory,
        make_settings: Callable[..., Settings],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        settings = make_settings(qdrant_url=":memory:")
        with make_client(settings) as client:
            before = client.get("/api/v1/admin/experiment").json()
            assert (before["siglip_rollout_percentage"], before["flags_source"]) == (
                0,
                "environment",
            )
            changed = client.put(
                "/api/v1/admin/rollout",
                json={"siglip_rollout_percentage": 40, "interleave_percentage": 30},
            )
            assert changed.status_code == 200, changed.text
            report = client.get("/api/v1/admin/experiment").json()
        assert report["siglip_rollout_percentage"] == 40
        assert report["interleave_percentage"] == 30
        assert report["flags_source"] == "database"
        assert report["flags_changed_by"] == "api"
        text = report["recommendation"]["text"]
        assert "siglip_rollout_percentage=40" in text
        assert "interleave_percentage=30" in text
        assert "SIGLIP_ROLLOUT_PERCENTAGE" not in text
        # Outside the server (image-search experiment report) the stored flags win too.
        offline = report_for(settings)
        assert (offline.siglip_rollout_percentage, offline.interleave_percentage) == (40, 30)
        assert offline.flags_source == "database"
        monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
        printed = CliRunner().invoke(main, ["experiment", "report"])
        assert printed.exit_code == 0, printed.output
        assert printed.output.startswith(
            "live flags (database): use_siglip=false siglip_rollout_percentage=40 "
            "interleave_percentage=30, changed "
        )
        assert "SIGLIP_ROLLOUT_PERCENTAGE" not in printed.output


class TestDecision:
    def test_ab_worse_but_interleaving_better_holds_with_both_figures(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx()
        log = SearchLog(ctx, background=False)
        # A/B: clip clicked in 60 % of 300 searches, siglip in 35 %.
        for model, clicked in (("clip", 180), ("siglip", 105)):
            for i in range(300):
                search_id, ids = _search(log, model)  # type: ignore[arg-type]
                if i < clicked:
                    assert _click(log, search_id, ids[0], 1)
        # Interleaving: 19 wins (a siglip result clicked), 2 losses.
        teams: list[ModelKey] = ["siglip", "clip", "siglip", "clip"]
        for rank in [1] * 19 + [2] * 2:
            search_id, ids = _search(log, "siglip", teams=teams)
            assert _click(log, search_id, ids[rank - 1], rank)
        with ctx.transaction() as session:
            report = experiment_report(session, ctx.settings)
        ctr = report.comparisons[0]
        assert ctr.significant
        assert ctr.difference < 0
        assert report.interleaving.significant
        assert report.interleaving.wins > report.interleaving.losses
        rec = report.recommendation
        assert rec.action == "hold", rec.text
        assert rec.text.startswith("hold: the two measures disagree")
        assert "-25.00 points of CTR" in rec.text
        assert "19 wins, 2 losses" in rec.text
        assert rec.apply is None
        # Every comparison's interval excludes 0 exactly when its p-value is below 0.05.
        for c in report.comparisons:
            assert (c.ci_low > 0 or c.ci_high < 0) == (c.p_value < 0.05), c

    def test_an_empty_arm_gives_no_verdict_and_no_difference(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx()
        log = SearchLog(ctx, background=False)
        for _ in range(50):
            search_id, ids = _search(log, "clip")
            _click(log, search_id, ids[0], 1)
        with ctx.transaction() as session:
            report = experiment_report(session, ctx.settings)
        assert report.comparisons == []
        assert report.recommendation.action == "hold"
        assert "no searches in siglip" in report.recommendation.text


def _slow_candidate(log: SearchLog, *, siglip_ms: float) -> None:
    for _ in range(40):
        _search(log, "clip", latency_ms=20.0)
        _search(log, "siglip", latency_ms=siglip_ms)


class TestGuardrails:
    def test_a_slow_arm_recommends_a_rollback_and_nothing_changes_without_the_flag(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx()
        flags = LiveRollout(ctx)
        flags.set(siglip_rollout_percentage=40)
        log = SearchLog(ctx, background=False)
        _slow_candidate(log, siglip_ms=2000.0)
        with ctx.transaction() as session:
            report = experiment_report(session, ctx.settings)
        breached = [g for g in report.guardrails if g.breached]
        assert [(g.arm, g.metric) for g in breached] == [("siglip", "latency_p95_ms")]
        rec = report.recommendation
        assert rec.action == "roll back"
        assert rec.text.startswith("roll back now: guardrail breached")
        assert rec.apply == ROLLBACK
        assert log.guard() is None  # ROLLOUT_AUTO_GUARD is off
        assert flags.current().siglip_rollout_percentage == 40

    def test_with_auto_guard_the_rollback_is_applied_and_recorded(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx(rollout_auto_guard=True)
        flags = LiveRollout(ctx)
        flags.set(siglip_rollout_percentage=40, interleave_percentage=10)
        log = SearchLog(ctx, background=False)
        _slow_candidate(log, siglip_ms=2000.0)
        reason = log.guard()
        assert reason is not None
        assert "p95 latency" in reason
        state = flags.current()
        assert (state.use_siglip, state.siglip_rollout_percentage) == (False, 0)
        assert state.interleave_percentage == 0
        newest = flags.history(limit=1)[0]
        assert newest.source.startswith("guardrail: siglip latency_p95_ms")
        assert (newest.old_siglip_rollout_percentage, newest.new_siglip_rollout_percentage) == (
            40,
            0,
        )
        assert log.guard() is None  # nothing left to roll back
        with ctx.transaction() as session:
            after = experiment_report(session, ctx.settings)
        assert after.siglip_rollout_percentage == 0
        assert any("rolled back by a guardrail" in n for n in after.notes)

    def test_through_the_api_with_auto_guard(
        self, make_client: ClientFactory, make_settings: Callable[..., Settings]
    ) -> None:
        settings = make_settings(qdrant_url=":memory:", rollout_auto_guard=True)
        with make_client(settings) as client:
            client.put("/api/v1/admin/rollout", json={"siglip_rollout_percentage": 40})
            # The app's own search log (background writer), fed searches of known latency.
            _slow_candidate(services(client).search_log, siglip_ms=3000.0)
            report = client.get("/api/v1/admin/experiment").json()
            history = client.get("/api/v1/admin/rollout/history").json()["changes"]
        assert report["siglip_rollout_percentage"] == 0
        assert report["flags_changed_by"].startswith("guardrail: siglip latency_p95_ms")
        assert history[0]["source"].startswith("guardrail")
        assert history[0]["old_siglip_rollout_percentage"] == 40

    def test_a_cold_start_stays_out_of_latency_and_guardrails(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx()
        LiveRollout(ctx).set(siglip_rollout_percentage=40)
        log = SearchLog(ctx, background=False)
        # The first search each model answers in this process is its cold start.
        _search(log, "clip", latency_ms=4000.0)
        _search(log, "siglip", latency_ms=9000.0)
        _slow_candidate(log, siglip_ms=25.0)
        _search(log, "siglip", latency_ms=9000.0, cold_start=True)  # e.g. a reload
        with ctx.transaction() as session:
            report = experiment_report(session, ctx.settings)
        siglip = report.arms["siglip"]
        assert (siglip.searches, siglip.cold_starts) == (42, 2)
        assert siglip.latency_p95_ms == pytest.approx(25.0, rel=0.07)
        assert report.arms["clip"].cold_starts == 1
        assert not any(g.breached for g in report.guardrails)
        assert report.guardrails  # they were checked


class TestEventsAcrossProcesses:
    def test_an_event_waits_for_a_search_another_process_has_not_written_yet(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        answering = SearchLog(open_ctx(), background=False)
        receiving = SearchLog(open_ctx(), background=False, event_wait_s=DEADLINE_S)
        search_id, ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
        outcome: list[bool] = []

        def click() -> None:
            with receiving.ctx.transaction() as session:
                event = receiving.record_event(
                    session, search_id=search_id, asset_id=ids[1], type_="click", rank=2
                )
                outcome.append(event.recorded)

        thread = threading.Thread(target=click)
        thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while receiving.event_waits == 0:  # the click arrived first and is waiting
            assert time.monotonic() < deadline, "the event never looked for its search"
            time.sleep(0.01)
        answering.record(
            search_id=search_id,
            decision=route_decision("clip", "u-late"),
            outcome=search_outcome(ids, ["clip"] * 3),
            kind="text",
            latency_ms=20.0,
        )
        thread.join(DEADLINE_S)
        assert outcome == [True]
        with answering.ctx.transaction() as session:
            report = experiment_report(session, answering.ctx.settings)
        assert report.arms["clip"].clicked_searches == 1

    def test_an_unknown_search_is_still_refused_after_the_wait(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        log = SearchLog(open_ctx(), background=False, event_wait_s=0.05)
        with log.ctx.transaction() as session, pytest.raises(SearchNotFound):
            log.record_event(
                session, search_id=uuid.uuid4(), asset_id=uuid.uuid4(), type_="click", rank=1
            )
        assert log.event_waits == 1

    def test_two_apps_on_one_database(
        self,
        make_indexed_client: ClientFactory,
        make_client: ClientFactory,
        make_settings: Callable[..., Settings],
        database_url: str,
    ) -> None:
        shared = {"database_url": database_url, "qdrant_url": ":memory:"}
        with (
            make_indexed_client(make_settings(**shared)) as first,
            make_client(make_settings(**shared)) as second,
        ):
            body = first.get("/api/v1/search", params={"q": "red", "limit": 3}).json()
            hit = body["results"][1]
            click = {
                "search_id": body["search_id"],
                "asset_id": hit["asset_id"],
                "type": "click",
                "rank": 2,
            }
            # Straight to the other process: its search may not be written yet.
            response = second.post("/api/v1/events", json=click)
            assert response.status_code == 200, response.text
            assert response.json()["recorded"] is True


def _siglip_clearly_better(log: SearchLog, *, searches: int = 300) -> None:
    """SigLIP's first result clicked in 3 searches of 5, CLIP's in 1 of 10."""
    for i in range(searches):
        clip_id, clip_assets = _search(log, "clip")
        if i % 10 == 0:
            _click(log, clip_id, clip_assets[0], 1)
        siglip_id, siglip_assets = _search(log, "siglip")
        if i % 5 < 3:
            _click(log, siglip_id, siglip_assets[0], 1)


class TestStagedSchedule:
    def test_the_next_step_comes_only_with_evidence_for_it(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx(rollout_schedule="1,5,25,100")
        flags = LiveRollout(ctx)
        flags.set(siglip_rollout_percentage=1)
        log = SearchLog(ctx, background=False)
        assert log.guard() is None  # no evidence yet: hold
        assert flags.current().siglip_rollout_percentage == 1
        _siglip_clearly_better(log)
        assert log.guard() == "1 -> 5"
        newest = flags.history(limit=1)[0]
        assert newest.source == "schedule: 1 -> 5"
        assert (newest.old_siglip_rollout_percentage, newest.new_siglip_rollout_percentage) == (
            1,
            5,
        )
        # Each step earns the next: the evidence before the change does not count again.
        assert log.guard() is None
        # A fresh reader: `flags` keeps what it read for ROLLOUT_REFRESH_S.
        assert LiveRollout(ctx).current().siglip_rollout_percentage == 5

    def test_a_step_another_process_took_first_is_not_taken_again(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        """Every server process runs the schedule: the automatic change is written only
        if the flags are still those its evidence was read under."""
        ctx = open_ctx(rollout_schedule="1,5,25,100")
        flags = LiveRollout(ctx)
        flags.set(siglip_rollout_percentage=1)
        seen = flags.current().flags  # what a second process read before the first acted
        log = SearchLog(ctx, background=False)
        _siglip_clearly_better(log)
        assert log.guard() == "1 -> 5"  # the first process takes the step
        late = flags.set_if_unchanged(
            seen,
            use_siglip=False,
            siglip_rollout_percentage=5,
            interleave_percentage=0,
            source="schedule: 1 -> 5",
        )
        assert late is None
        assert [c.source for c in flags.history(limit=5)] == ["schedule: 1 -> 5", "api"]
        assert LiveRollout(ctx).current().siglip_rollout_percentage == 5

    def test_a_breached_guardrail_stops_the_schedule(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx(rollout_schedule="1,5,25,100")
        flags = LiveRollout(ctx)
        flags.set(siglip_rollout_percentage=1)
        log = SearchLog(ctx, background=False)
        _siglip_clearly_better(log)
        _slow_candidate(log, siglip_ms=2000.0)
        assert log.guard() is None  # no auto guard: nothing rolls back, nothing advances
        assert flags.current().siglip_rollout_percentage == 1

    def test_before_the_operator_starts_the_rollout_the_schedule_waits(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        ctx = open_ctx(rollout_schedule="1,5")
        flags = LiveRollout(ctx)
        log = SearchLog(ctx, background=False)
        _siglip_clearly_better(log, searches=100)
        assert log.guard() is None
        assert flags.current().siglip_rollout_percentage == 0


@pytest.mark.parametrize("value", ["5,1", "0,5", "1,5,101", "one,two", "5,5"])
def test_a_bad_schedule_stops_start_up_naming_it(
    make_settings: Callable[..., Settings], value: str
) -> None:
    with pytest.raises(ValueError, match="rollout_schedule"):
        make_settings(rollout_schedule=value)
