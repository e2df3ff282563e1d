"""The soak's verdicts (scripts/soak.py): what counts as lost, as found, as explained by
the kill window and as growing. The soak itself runs in CI as a script, not here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import soak
else:
    _PATH = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"
    _SPEC = importlib.util.spec_from_file_location("soak", _PATH)
    soak = importlib.util.module_from_spec(_SPEC)
    sys.modules["soak"] = soak  # dataclasses look their module up while they are built
    _SPEC.loader.exec_module(soak)


class TestKillWindow:
    window = soak.Window(killed=100.0, ready=110.0)

    @pytest.mark.parametrize(
        ("started", "ended"),
        [(99.0, 100.5), (100.0, 100.0), (105.0, 106.0), (109.0, 112.0), (110.0, 110.0)],
    )
    def test_a_request_in_flight_during_the_window_is_explained(
        self, started: float, ended: float
    ) -> None:
        incident = soak.Incident(started, ended, "text", "ConnectError")
        assert soak.outside_windows([incident], [self.window]) == []

    @pytest.mark.parametrize(("started", "ended"), [(90.0, 99.9), (110.1, 111.0)])
    def test_one_before_or_after_it_is_not(self, started: float, ended: float) -> None:
        incident = soak.Incident(started, ended, "text", "500 InternalError")
        assert soak.outside_windows([incident], [self.window]) == [incident]

    def test_without_a_kill_nothing_is_explained(self) -> None:
        incident = soak.Incident(105.0, 106.0, "text", "503")
        assert soak.outside_windows([incident], []) == [incident]


def _asset(path: str, digest: str = "h1", status: str = "active") -> dict[str, Any]:
    return {"path": path, "content_hash": digest, "status": status, "error": None}


class TestLibrary:
    def test_the_same_files_with_their_contents_pass(self) -> None:
        ledger = {"/l/a.jpg": "h1", "/l/b.jpg": "h2"}
        assets = [_asset("/l/a.jpg", "h1"), _asset("/l/b.jpg", "h2")]
        assert soak.compare_library(ledger, assets) == []

    def test_a_file_without_an_asset_is_lost(self) -> None:
        failures = soak.compare_library({"/l/a.jpg": "h1", "/l/b.jpg": "h2"}, [_asset("/l/a.jpg")])
        assert failures == ["library: 1 file(s) on disk have no asset, e.g. ['/l/b.jpg']"]

    def test_an_asset_without_a_file_is_extra(self) -> None:
        failures = soak.compare_library({}, [_asset("/l/gone.jpg")])
        assert failures == ["library: 1 asset(s) have no file on disk, e.g. ['/l/gone.jpg']"]

    def test_a_failed_asset_is_not_indexed(self) -> None:
        failures = soak.compare_library({"/l/a.jpg": "h1"}, [_asset("/l/a.jpg", status="failed")])
        assert len(failures) == 1
        assert "1 asset(s) not active" in failures[0]

    def test_an_older_content_is_a_rewrite_not_reindexed(self) -> None:
        failures = soak.compare_library({"/l/a.jpg": "new"}, [_asset("/l/a.jpg", "old")])
        assert len(failures) == 1
        assert "older content" in failures[0]

    def test_two_assets_for_one_path(self) -> None:
        failures = soak.compare_library({"/l/a.jpg": "h1"}, [_asset("/l/a.jpg")] * 2)
        assert failures == ["library: two assets for /l/a.jpg"]


def _hit(asset_id: str, score: float) -> dict[str, Any]:
    return {"asset_id": asset_id, "score": score}


class TestFindsItself:
    def test_first(self) -> None:
        assert soak.finds_itself("a", [_hit("a", 0.999), _hit("b", 0.9)])

    def test_tied_with_a_near_copy(self) -> None:
        assert soak.finds_itself("a", [_hit("b", 0.9995), _hit("a", 0.9990)])

    def test_behind_a_clearly_better_hit(self) -> None:
        gap = soak.TIE_COSINE + 0.001
        assert not soak.finds_itself("a", [_hit("b", 0.999), _hit("a", 0.999 - gap)])

    def test_a_tie_below_the_floor_is_not_itself(self) -> None:
        low = soak.SELF_MIN_COSINE - 0.01
        assert not soak.finds_itself("a", [_hit("b", low + 0.001), _hit("a", low)])

    @pytest.mark.parametrize("hits", [[], [_hit("b", 1.0)]])
    def test_absent(self, hits: list[dict[str, Any]]) -> None:
        assert not soak.finds_itself("a", hits)


def _status(**clip: int) -> dict[str, Any]:
    model = {
        "collection": "c",
        "points": 10,
        "embedded": 10,
        "pending": 0,
        "failed": 0,
        "coverage": 1.0,
    }
    return {
        "assets": 10,
        "failed": 0,
        "indexing": 0,
        "models": {"clip": {**model, **clip}, "siglip": dict(model)},
    }


class TestCoverage:
    def test_points_embedded_and_assets_agree(self) -> None:
        assert soak.coverage_failures(_status(), 10) == []

    def test_points_missing_from_a_collection(self) -> None:
        failures = soak.coverage_failures(_status(points=9), 10)
        assert failures == ["clip: 9 points in c but 10 assets recorded as embedded"]

    @pytest.mark.parametrize("field", ["pending", "failed"])
    def test_work_left(self, field: str) -> None:
        failures = soak.coverage_failures(_status(**{field: 1}), 10)
        assert len(failures) == 1
        assert failures[0].startswith("clip: embedded 10 of 10 assets")

    def test_assets_not_the_files_on_disk(self) -> None:
        failures = soak.coverage_failures(_status(), 11)
        assert failures == ["status: 10 searchable assets (0 failed, 0 indexing), 11 files on disk"]


def _life(
    pid: int, start: float, end: float, rss: tuple[float, float], fds: tuple[int, int]
) -> list[Any]:
    """Samples every 2 s from ``start`` to ``end``, RSS and open files moving linearly."""
    count = int((end - start) / 2) + 1
    return [
        soak.Sample(
            at=start + 2 * i,
            pid=pid,
            rss_mib=rss[0] + (rss[1] - rss[0]) * i / (count - 1),
            open_files=round(fds[0] + (fds[1] - fds[0]) * i / (count - 1)),
        )
        for i in range(count)
    ]


class TestGrowth:
    def test_flat_passes(self) -> None:
        verdicts = soak.judge_growth(_life(1, 0, 900, (1000, 1010), (40, 42)), [])
        assert [v.ok for v in verdicts] == [True]

    def test_growing_rss_fails(self) -> None:
        verdicts = soak.judge_growth(_life(1, 0, 900, (1000, 1400), (40, 40)), [])
        assert [v.ok for v in verdicts] == [False]

    def test_growing_open_files_fail(self) -> None:
        verdicts = soak.judge_growth(_life(1, 0, 900, (1000, 1000), (40, 80)), [])
        assert [v.ok for v in verdicts] == [False]

    def test_the_warm_up_is_not_judged(self) -> None:
        # A model loaded in the first quarter: RSS jumps, then stays.
        samples = _life(1, 0, 200, (500, 1000), (30, 40)) + _life(
            1, 202, 900, (1000, 1000), (40, 40)
        )
        verdicts = soak.judge_growth(samples, [])
        assert [v.ok for v in verdicts] == [True]
        assert verdicts[0].judged_from >= 900 / 4

    def test_an_operator_action_restarts_the_warm_up(self) -> None:
        # The rollout change at 800 s loads SigLIP: too little is left to judge.
        assert soak.judge_growth(_life(1, 0, 900, (1000, 1000), (40, 40)), [800.0]) == []

    def test_a_short_life_is_not_judged(self) -> None:
        assert soak.judge_growth(_life(1, 0, 150, (1000, 2000), (40, 90)), []) == []

    def test_each_server_life_on_its_own(self) -> None:
        # The restarted server starts lower than the killed one ended: no growth.
        samples = _life(1, 0, 900, (1200, 1200), (40, 40)) + _life(
            2, 910, 1800, (800, 800), (30, 30)
        )
        verdicts = soak.judge_growth(samples, [905.0])
        assert [(v.pid, v.ok) for v in verdicts] == [(1, True), (2, True)]
