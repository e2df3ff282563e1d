"""The embedding router over a real SQLite DB and Qdrant Edge store: buckets stable
across processes, rollout shares, the USE_SIGLIP override, interleaving and the coverage
guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from image_search_service.cli import main
from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ConfigError
from image_search_service.core.specs import ModelIdentity
from image_search_service.db import repository as repo
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.rollout.router import BUCKETS, EmbeddingRouter, user_bucket
from image_search_service.vector.schema import CollectionSpec
from tests.factories import write_jpeg

USERS = [f"user-{i}" for i in range(10_000)]


@pytest.fixture
def open_ctx(
    make_settings: Callable[..., Settings], encoders: EncoderRegistry
) -> Iterator[Callable[..., ServiceContext]]:
    """Opens a context with settings overrides; closes whatever it opened."""
    opened: list[ServiceContext] = []

    def factory(**overrides: object) -> ServiceContext:
        ctx = open_context(make_settings(**overrides), encoders=encoders)
        opened.append(ctx)
        return ctx

    yield factory
    for ctx in opened:
        ctx.close()


def test_same_buckets_in_another_process() -> None:
    # A different hash seed makes Python's hash() differ; our buckets must not.
    code = (
        "import json, sys\n"
        "from image_search_service.services.rollout.router import user_bucket\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([user_bucket(u) for u in ids]))\n"
        "print(hash(ids[0]))\n"
    )
    sample = USERS[:2000] + ["", " ", "ünïcödé", "a" * 256]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]
    runs = [proc.communicate(json.dumps(sample), timeout=120)[0].splitlines() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert runs[0][1] != runs[1][1]  # the salted hash() differs between the two...
    here = [user_bucket(u) for u in sample]
    assert json.loads(runs[0][0]) == json.loads(runs[1][0]) == here  # ...buckets do not


class TestSelect:
    @staticmethod
    def user_in(bucket: int) -> str:
        return next(u for u in USERS if user_bucket(u) == bucket)

    def test_bucket_boundaries_and_rules(self, open_ctx: Callable[..., ServiceContext]) -> None:
        router = EmbeddingRouter(open_ctx(siglip_rollout_percentage=30, interleave_percentage=20))
        u = self.user_in
        assert router.select(u(29)) == ("siglip", 29, "bucket 29 < SIGLIP_ROLLOUT_PERCENTAGE=30")
        assert router.select(u(30)) == ("clip", 30, "bucket 30 >= SIGLIP_ROLLOUT_PERCENTAGE=30")
        assert router.select(u(79))[0] == "clip"
        assert router.select(u(80)) == (
            "siglip",
            80,
            "bucket 80 >= 80 (INTERLEAVE_PERCENTAGE=20): interleaved",
        )
        assert [router.interleaves(b) for b in (0, 79, 80, 99)] == [False, False, True, True]

    def test_an_anonymous_request_draws_one_of_100_buckets(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        asked: list[int] = []

        def draw(n: int) -> int:
            asked.append(n)
            return 29

        router = EmbeddingRouter(open_ctx(siglip_rollout_percentage=30), draw=draw)
        assert router.select(None) == ("siglip", 29, "bucket 29 < SIGLIP_ROLLOUT_PERCENTAGE=30")
        assert asked == [BUCKETS]

    def test_use_siglip_interleaves_nobody(self, open_ctx: Callable[..., ServiceContext]) -> None:
        router = EmbeddingRouter(open_ctx(use_siglip=True, interleave_percentage=20))
        assert not router.interleaves(99)
        assert router.select(self.user_in(99)) == ("siglip", 99, "USE_SIGLIP=true")


class TestShare:
    @pytest.mark.parametrize("percentage", [0, 10, 50, 90, 100])
    def test_share_of_users_sent_to_siglip(
        self, open_ctx: Callable[..., ServiceContext], percentage: int
    ) -> None:
        router = EmbeddingRouter(open_ctx(siglip_rollout_percentage=percentage))
        chosen = [router.select(u)[0] for u in USERS]
        share = 100 * chosen.count("siglip") / len(USERS)
        assert abs(share - percentage) <= 2
        if percentage in (0, 100):
            assert share == percentage
        # Deterministic per user.
        assert [router.select(u)[0] for u in USERS[:500]] == chosen[:500]

    def test_anonymous_requests_are_drawn_per_request(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        router = EmbeddingRouter(open_ctx(siglip_rollout_percentage=30))
        chosen = [router.select(None)[0] for _ in range(4000)]
        assert abs(100 * chosen.count("siglip") / len(chosen) - 30) <= 5

    def test_use_siglip_overrides_the_percentage(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        router = EmbeddingRouter(open_ctx(use_siglip=True, siglip_rollout_percentage=0))
        assert {router.select(u)[0] for u in USERS[:1000]} == {"siglip"}
        assert router.select(None)[0] == "siglip"
        assert router.select("alice")[2] == "USE_SIGLIP=true"
        assert router.models_in_use() == ["clip", "siglip"]

    @pytest.mark.parametrize("value", ["-1", "101", "ten"])
    def test_out_of_range_percentage_stops_start_up(
        self, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("SIGLIP_ROLLOUT_PERCENTAGE", value)
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        with pytest.raises(ConfigError, match="SIGLIP_ROLLOUT_PERCENTAGE"):
            load_settings(_env_file=None)
        result = CliRunner().invoke(main, ["serve", "--port", "1"])
        assert result.exit_code == 1
        assert "SIGLIP_ROLLOUT_PERCENTAGE" in result.output
        assert not (tmp_path / "data").exists()  # nothing was opened


class TestCoverageGuard:
    @pytest.fixture
    def library(self, tmp_path: Path) -> Path:
        root = tmp_path / "photos"
        for i in range(6):
            write_jpeg(root / ("a" if i < 3 else "b") / f"p{i}.jpg", seed=i, size=(60 + i, 40))
        return root

    @staticmethod
    def in_rollout() -> str:
        return next(u for u in USERS if user_bucket(u) < 50)

    def test_missing_collection_falls_back_to_clip(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(use_siglip=True)
        index_paths(ctx, [library], model_keys=["clip"])
        decision = EmbeddingRouter(ctx).route("alice")
        assert (decision.selected, decision.model) == ("siglip", "clip")
        assert decision.collection == "image_assets"
        assert decision.fallback_code == "collection_missing"
        assert decision.fallback_reason == (
            "siglip collection 'image_assets_siglip' does not exist yet; answered by clip"
        )
        state = EmbeddingRouter(ctx).check_readiness("siglip")
        assert (state.collection, state.exists, state.points, state.ready) == (
            "image_assets_siglip",
            False,
            0,
            False,
        )
        baseline = EmbeddingRouter(ctx).check_readiness("clip")
        assert (baseline.exists, baseline.points, baseline.missing) == (True, 6, 0)
        assert (baseline.collection, baseline.embedded, baseline.active) == ("image_assets", 6, 6)

    def test_partial_then_complete_coverage(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(siglip_rollout_percentage=50)
        router = EmbeddingRouter(ctx, coverage_ttl_s=0)
        index_paths(ctx, [library], model_keys=["clip"])
        index_paths(ctx, [library / "a"], model_keys=["siglip"])
        state = router.check_readiness("siglip")
        assert (state.ready, state.embedded, state.missing, state.active) == (False, 3, 3, 6)
        assert state.reason_code == "coverage_incomplete"
        assert router.route(self.in_rollout()).model == "clip"

        index_paths(ctx, [library / "b"], model_keys=["siglip"])
        decision = router.route(self.in_rollout())
        assert (decision.model, decision.fallback_reason) == ("siglip", None)
        assert decision.collection == "image_assets_siglip"

    def test_configured_minimum_coverage(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(use_siglip=True, min_rollout_coverage=0.5)
        index_paths(ctx, [library], model_keys=["clip"])
        index_paths(ctx, [library / "a"], model_keys=["siglip"])
        assert EmbeddingRouter(ctx).route("alice").model == "siglip"  # 3 of 6 is enough
        ctx.close()  # the embedded store has one opener at a time
        decision = EmbeddingRouter(open_ctx(use_siglip=True, min_rollout_coverage=0.9)).route(
            "alice"
        )
        assert (decision.model, decision.fallback_code) == ("clip", "coverage_below_minimum")

    def test_points_lost_from_the_collection(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(use_siglip=True)
        index_paths(ctx, [library], model_keys=["clip", "siglip"])
        router = EmbeddingRouter(ctx, coverage_ttl_s=0)
        assert router.route("alice").model == "siglip"
        # Dropped and re-made: the DB still says "embedded", the collection is empty.
        ctx.store.drop_collection("image_assets_siglip")
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
        decision = router.route("alice")
        assert (decision.model, decision.fallback_code) == ("clip", "points_missing")

    def test_a_count_taken_while_a_batch_is_written_is_checked_again(
        self,
        open_ctx: Callable[..., ServiceContext],
        library: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Under churn the store and the database are counted a moment apart: one short
        count of points (a batch in flight) or a negative difference between two counts
        (two snapshots) is no reason to send SigLIP's users to CLIP."""
        ctx = open_ctx(use_siglip=True)
        index_paths(ctx, [library], model_keys=["clip", "siglip"])
        real_info = ctx.store.collection_info
        calls: list[str] = []

        def short_once(name: str) -> Any:
            info = real_info(name)
            calls.append(name)
            if name == "image_assets_siglip" and calls.count(name) == 1 and info is not None:
                return replace(info, points=info.points - 2)  # the batch being deleted
            return info

        monkeypatch.setattr(ctx.store, "collection_info", short_once)
        monkeypatch.setattr(repo, "count_covered_but_not_by", lambda *a, **k: -3)
        readiness = EmbeddingRouter(ctx, coverage_ttl_s=0).check_readiness("siglip")
        assert (readiness.ready, readiness.missing, readiness.reason_code) == (True, 0, None)
        assert calls.count("image_assets_siglip") == 2  # measured again, then trusted

    def test_collection_of_another_model(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(use_siglip=True)
        index_paths(ctx, [library], model_keys=["clip"])
        other = ModelIdentity("some-other-model", "", 768)
        ctx.store.ensure_collection(CollectionSpec(name="image_assets_siglip", identity=other))
        decision = EmbeddingRouter(ctx).route("alice")
        assert (decision.model, decision.fallback_code) == ("clip", "model_mismatch")
        assert f"was filled by {other.describe()}, not the configured" in (
            decision.fallback_reason or ""
        )

    def test_coverage_is_cached_for_the_ttl(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx(use_siglip=True)
        now = [0.0]
        router = EmbeddingRouter(ctx, coverage_ttl_s=5, clock=lambda: now[0])
        index_paths(ctx, [library], model_keys=["clip"])
        assert router.route("alice").model == "clip"  # no SigLIP collection yet
        index_paths(ctx, [library], model_keys=["siglip"])
        now[0] = 4.9
        assert router.route("alice").model == "clip"  # still the cached answer
        now[0] = 5.1
        # Past the TTL the search is not held up: the old answer, while one background
        # thread measures again; the next searches get the new one.
        assert router.route("alice").model == "clip"
        deadline = time.monotonic() + 30
        while router.route("alice").model != "siglip":
            assert time.monotonic() < deadline, "the coverage was never measured again"
            time.sleep(0.02)

    def test_a_failing_background_check_keeps_the_last_answer(
        self,
        open_ctx: Callable[..., ServiceContext],
        library: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        ctx = open_ctx(use_siglip=True)
        index_paths(ctx, [library], model_keys=["clip", "siglip"])
        now = [0.0]
        router = EmbeddingRouter(ctx, coverage_ttl_s=5, clock=lambda: now[0])
        assert router.route("alice").model == "siglip"

        def unreachable(key: str) -> Any:
            raise RuntimeError("database gone")

        monkeypatch.setattr(router, "check_readiness", unreachable)
        now[0] = 5.1
        assert router.route("alice").model == "siglip"  # no search fails for it
        deadline = time.monotonic() + 30
        while "keeping the last answer" not in caplog.text:
            assert time.monotonic() < deadline, "the background check never ran"
            time.sleep(0.02)
        assert router.route("alice").model == "siglip"

    def test_baseline_is_never_checked(
        self, open_ctx: Callable[..., ServiceContext], library: Path
    ) -> None:
        ctx = open_ctx()  # 0%: everyone on CLIP, even with no SigLIP collection at all
        router = EmbeddingRouter(ctx)
        decision = router.route("alice")
        assert (decision.model, decision.selected, decision.fallback_code) == ("clip", "clip", None)
        assert router.models_in_use() == ["clip"]


class TestInterleaving:
    def test_interleaved_share_is_disjoint_from_the_siglip_share(
        self, open_ctx: Callable[..., ServiceContext]
    ) -> None:
        router = EmbeddingRouter(open_ctx(siglip_rollout_percentage=30, interleave_percentage=20))
        picks = {u: router.select(u) for u in USERS}
        interleaved = [u for u in USERS if router.interleaves(user_bucket(u))]
        assert abs(100 * len(interleaved) / len(USERS) - 20) <= 2
        assert all(user_bucket(u) >= 80 for u in interleaved)
        assert all("interleaved" in picks[u][2] for u in interleaved)
        siglip_only = [u for u in USERS if picks[u][0] == "siglip" and u not in interleaved]
        assert all(user_bucket(u) < 30 for u in siglip_only)
        assert router.models_in_use() == ["clip", "siglip"]

    def test_shares_over_100_stop_start_up(self, make_settings: Callable[..., Settings]) -> None:
        with pytest.raises(ValueError, match="INTERLEAVE_PERCENTAGE"):
            make_settings(siglip_rollout_percentage=60, interleave_percentage=50)

    def test_interleaves_only_when_siglip_can_serve(
        self, open_ctx: Callable[..., ServiceContext], tmp_path: Path
    ) -> None:
        for i in range(4):
            write_jpeg(tmp_path / "photos" / f"p{i}.jpg", seed=i, size=(60 + i, 40))
        ctx = open_ctx(interleave_percentage=100)
        router = EmbeddingRouter(ctx, coverage_ttl_s=0)
        index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
        decision = router.route("alice")
        assert (decision.interleave, decision.arm, decision.model) == (False, "clip", "clip")
        assert decision.fallback_code == "collection_missing"
        index_paths(ctx, [tmp_path / "photos"], model_keys=["siglip"])
        decision = router.route("alice")
        assert (decision.interleave, decision.arm, decision.fallback_code) == (
            True,
            "interleaved",
            None,
        )
