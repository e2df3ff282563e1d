"""Live rollout: ``PUT /api/v1/admin/rollout`` changes the flags for every API process
sharing the metadata DB, persists them, records each change, and refuses bad bodies
without changing anything. Real apps on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.core.config import Settings
from image_search_service.core.errors import InvalidRequest
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.rollout.router import user_bucket
from tests.integration.api_support import ClientFactory, assert_error, services

PROPAGATION_DEADLINE_S = 30  # generous: the refresh is 0.2 s here; no timing is asserted


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'shared.sqlite3'}"


@pytest.fixture
def app_settings(make_settings: Callable[..., Settings], database_url: str) -> Any:
    """Settings of one API process; every process shares the metadata DB."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "qdrant_url": ":memory:",  # each process its own; the flags live in the DB
            "rollout_refresh_s": 0.2,
            "siglip_rollout_percentage": 10,
            **overrides,
        }
        result: Settings = make_settings(**values)
        return result

    return factory


@pytest.fixture
def client(app_settings: Any, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(app_settings()) as test_client:
        yield test_client


def _flags(client: TestClient) -> tuple[bool, int, str]:
    body = client.get("/api/v1/admin/rollout").json()
    return body["use_siglip"], body["siglip_rollout_percentage"], body["flags_source"]


def _at_once(*changes: Callable[[], object]) -> list[str]:
    """Run the changes in threads released together; "set" or "refused" for each."""
    start = threading.Barrier(len(changes))
    outcomes: list[str] = []

    def run(change: Callable[[], object]) -> None:
        start.wait()
        try:
            change()
            outcomes.append("set")
        except InvalidRequest:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(change,)) for change in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _history(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/api/v1/admin/rollout/history")
    assert response.status_code == 200, response.text
    changes: list[dict[str, Any]] = response.json()["changes"]
    return changes


class TestChange:
    def test_environment_flags_are_the_initial_values(self, client: TestClient) -> None:
        assert _flags(client) == (False, 10, "environment")
        assert _history(client) == []

    def test_put_changes_routing_now_and_records_the_change(self, client: TestClient) -> None:
        response = client.put("/api/v1/admin/rollout", json={"siglip_rollout_percentage": 60})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["use_siglip"], body["siglip_rollout_percentage"]) == (False, 60)
        assert body["flags_source"] == "database"
        [change] = _history(client)
        assert change["old_siglip_rollout_percentage"] == 10
        assert change["new_siglip_rollout_percentage"] == 60
        assert change["old_use_siglip"] is False
        assert change["new_use_siglip"] is False
        assert change["source"] == "api"
        # The router in this process answers with the new flags at once.
        user = next(u for u in (f"u{i}" for i in range(1000)) if 10 <= user_bucket(u) < 60)
        route = client.get("/api/v1/admin/rollout", params={"user_id": user}).json()["user"]
        assert route["selected"] == "siglip"
        assert "SIGLIP_ROLLOUT_PERCENTAGE=60" in route["rule"]

        client.put("/api/v1/admin/rollout", json={"use_siglip": True})
        assert _flags(client) == (True, 60, "database")
        newest, oldest = _history(client)
        assert (newest["old_use_siglip"], newest["new_use_siglip"]) == (False, True)
        assert oldest == change

    @pytest.mark.parametrize(
        "body",
        [
            {"siglip_rollout_percentage": 101},
            {"siglip_rollout_percentage": -1},
            {"siglip_rollout_percentage": 50.5},
            {"siglip_rollout_percentage": "50"},
            {"siglip_rollout_percentage": True},
            {"use_siglip": "yes"},
            {"use_siglip": True, "percentage": 5},
            {"interleave_percentage": 101},
            {"interleave_percentage": 91},  # 10 (SigLIP) + 91 > 100
            {"siglip_rollout_percentage": 60, "interleave_percentage": 50},
            {},
        ],
    )
    def test_a_bad_body_is_422_and_changes_nothing(
        self, client: TestClient, body: dict[str, Any]
    ) -> None:
        assert_error(client.put("/api/v1/admin/rollout", json=body), 422, "InvalidRequest")
        assert _flags(client) == (False, 10, "environment")
        assert _history(client) == []

    def test_changes_at_the_same_moment_never_break_the_shares(self, client: TestClient) -> None:
        """Each change is checked against the flags it read: two at once (a SigLIP share
        and an interleaving share that fit alone, not together) must not both land."""
        flags = services(client).router.flags
        for _ in range(15):
            flags.set(siglip_rollout_percentage=0, interleave_percentage=0)
            outcomes = _at_once(
                lambda: flags.set(siglip_rollout_percentage=60),
                lambda: flags.set(interleave_percentage=50),
            )
            assert sorted(outcomes) == ["refused", "set"]
            state = flags.current()
            assert state.siglip_rollout_percentage + state.interleave_percentage <= 100
        # The history chains: each change's "old" is the previous change's "new".
        changes = _history(client)[:-1]  # newest first; the first one's old is the env
        for newer, older in zip(changes, changes[1:], strict=False):
            assert newer["old_siglip_rollout_percentage"] == older["new_siglip_rollout_percentage"]
            assert newer["old_interleave_percentage"] == older["new_interleave_percentage"]

    def test_interleaving_is_a_live_flag_too(self, client: TestClient) -> None:
        response = client.put("/api/v1/admin/rollout", json={"interleave_percentage": 30})
        assert response.status_code == 200, response.text
        assert response.json()["interleave_percentage"] == 30
        [change] = _history(client)
        assert (change["old_interleave_percentage"], change["new_interleave_percentage"]) == (
            0,
            30,
        )
        top = next(u for u in (f"u{i}" for i in range(1000)) if user_bucket(u) >= 70)
        route = client.get("/api/v1/admin/rollout", params={"user_id": top}).json()["user"]
        # Chosen for interleaving (answered by CLIP alone here: no SigLIP collection yet).
        assert "INTERLEAVE_PERCENTAGE=30" in route["rule"]
        assert route["fallback_code"] == "collection_missing"
        client.put("/api/v1/admin/rollout", json={"interleave_percentage": 0})
        route = client.get("/api/v1/admin/rollout", params={"user_id": top}).json()["user"]
        assert "INTERLEAVE" not in route["rule"]
        assert route["selected"] == "clip"

    def test_delete_hands_control_back_to_the_environment(self, client: TestClient) -> None:
        client.put(
            "/api/v1/admin/rollout", json={"use_siglip": True, "siglip_rollout_percentage": 0}
        )
        response = client.delete("/api/v1/admin/rollout")
        assert response.status_code == 200
        assert _flags(client) == (False, 10, "environment")
        newest = _history(client)[0]
        assert (newest["old_use_siglip"], newest["new_use_siglip"]) == (True, False)
        assert newest["new_siglip_rollout_percentage"] == 10

    def test_the_key_is_required_when_configured(
        self, app_settings: Any, make_client: ClientFactory
    ) -> None:
        with make_client(app_settings(api_key="s3cret")) as keyed:
            body = {"siglip_rollout_percentage": 50}
            assert_error(keyed.put("/api/v1/admin/rollout", json=body), 401, "Unauthorized")
            ok = keyed.put("/api/v1/admin/rollout", json=body, headers={"X-API-Key": "s3cret"})
            assert ok.status_code == 200
            assert _history_keyed(keyed)[0]["new_siglip_rollout_percentage"] == 50


def _history_keyed(client: TestClient) -> list[dict[str, Any]]:
    headers = {"X-API-Key": "s3cret"}
    changes: list[dict[str, Any]] = client.get(
        "/api/v1/admin/rollout/history", headers=headers
    ).json()["changes"]
    return changes


class TestSharedAcrossProcesses:
    def test_another_process_follows_within_seconds(
        self, app_settings: Any, make_client: ClientFactory
    ) -> None:
        with make_client(app_settings()) as first, make_client(app_settings()) as second:
            assert services(second).router.percentage == 10  # read once, cached
            first.put("/api/v1/admin/rollout", json={"siglip_rollout_percentage": 75})
            deadline = time.monotonic() + PROPAGATION_DEADLINE_S
            while services(second).router.percentage != 75:
                assert time.monotonic() < deadline, "the second process never saw the change"
                time.sleep(0.05)
            assert _flags(second) == (False, 75, "database")

    def test_the_change_survives_a_restart_and_wins_over_the_environment(
        self, app_settings: Any, make_client: ClientFactory
    ) -> None:
        with make_client(app_settings()) as before:
            before.put("/api/v1/admin/rollout", json={"siglip_rollout_percentage": 40})
        env_says = app_settings(siglip_rollout_percentage=90, use_siglip=False)
        with make_client(env_says) as after:
            assert _flags(after) == (False, 40, "database")
            assert len(_history(after)) == 1


class TestRefresh:
    """The flags a process uses: re-read after ``refresh_s``, kept when the DB fails."""

    def test_reread_after_the_refresh_interval_and_kept_when_the_db_fails(
        self, make_settings: Callable[..., Settings], encoders: EncoderRegistry
    ) -> None:
        from sqlalchemy import text

        from image_search_service.context import open_context
        from image_search_service.db import repository as repo
        from image_search_service.services.rollout.flags import LiveRollout

        now = [0.0]
        ctx = open_context(make_settings(siglip_rollout_percentage=5), encoders=encoders)
        try:
            flags = LiveRollout(ctx, refresh_s=10.0, clock=lambda: now[0])
            assert flags.current().siglip_rollout_percentage == 5
            with ctx.transaction() as session:  # another process changes them
                repo.set_rollout_flags(
                    session,
                    repo.RolloutFlags(False, 70),
                    old=repo.RolloutFlags(False, 5),
                    source="test",
                )
            now[0] = 9.0
            assert flags.current().siglip_rollout_percentage == 5  # cached
            now[0] = 10.5
            assert flags.current().siglip_rollout_percentage == 70
            assert flags.current().source == "database"

            with ctx.engine.begin() as conn:  # the DB breaks under it
                conn.execute(text("DROP TABLE rollout_settings"))
            now[0] = 30.0
            kept = flags.current()
            assert (kept.siglip_rollout_percentage, kept.source) == (70, "database")
        finally:
            ctx.close()
