"""The experiment over HTTP: search ids, click events (accepted, repeated, refused),
interleaved answers, the admin report, /metrics, and the CLI report on the same DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.services.rollout.router import user_bucket
from tests.integration.api_support import ClientFactory, assert_error, index, metric

USERS = [f"user-{i}" for i in range(400)]


def _event(client: TestClient, body: dict[str, Any], **kwargs: Any) -> Any:
    return client.post("/api/v1/events", json=body, **kwargs)


@pytest.fixture
def client(make_indexed_client: ClientFactory) -> Iterator[TestClient]:
    with make_indexed_client(experiment_max_events_per_search=4) as test_client:
        yield test_client


class TestEvents:
    def test_a_click_on_a_result_is_recorded_once(self, client: TestClient) -> None:
        body = client.get("/api/v1/search", params={"q": "red", "limit": 4}).json()
        assert body["model"] == "clip"
        assert {hit["model"] for hit in body["results"]} == {"clip"}
        third = body["results"][2]["asset_id"]
        click = {"search_id": body["search_id"], "asset_id": third, "type": "click", "rank": 3}
        first = _event(client, click)
        assert first.status_code == 200, first.text
        assert first.json() == {"search_id": body["search_id"], "recorded": True, "model": "clip"}
        again = _event(client, click)
        assert again.json()["recorded"] is False
        assert (
            metric(
                client,
                "image_search_experiment_events_total",
                arm="clip",
                model="clip",
                type="click",
            )
            == 1
        )
        assert (
            metric(
                client,
                "image_search_experiment_searches_total",
                arm="clip",
                kind="text",
                results="some",
            )
            == 1
        )
        daily = client.get("/api/v1/admin/experiment/daily", params={"days": 7}).json()
        assert [(d["arm"], d["searches"], d["ctr"]) for d in daily] == [("clip", 1, 1.0)]
        report = client.get("/api/v1/admin/experiment").json()
        clip = report["arms"]["clip"]
        assert (clip["searches"], clip["clicked_searches"], clip["events"]) == (1, 1, 1)
        assert clip["mrr"] == pytest.approx(1 / 3, abs=1e-5)
        assert report["recommendation"]["action"] == "hold"

    def test_refused_events(self, client: TestClient) -> None:
        body = client.get("/api/v1/search", params={"q": "red", "limit": 2}).json()
        sid, top = body["search_id"], body["results"][0]["asset_id"]
        other = client.get("/api/v1/search", params={"q": "x", "limit": 6}).json()
        not_shown = other["results"][5]["asset_id"]
        unknown = {"search_id": "00000000-0000-4000-8000-000000000000", "asset_id": top}
        assert_error(_event(client, {**unknown, "type": "click", "rank": 1}), 404, "SearchNotFound")
        base = {"search_id": sid, "asset_id": top, "rank": 1}
        assert_error(_event(client, {**base, "asset_id": not_shown}), 422)
        assert_error(
            _event(client, {**base, "asset_id": not_shown, "type": "click"}), 422, "InvalidRequest"
        )
        assert_error(_event(client, {**base, "type": "like"}), 422)
        assert_error(_event(client, {**base, "type": "click", "rank": 2}), 422, "InvalidRequest")
        assert_error(_event(client, {**base, "type": "click", "rank": 0}), 422)
        assert_error(_event(client, {**base, "type": "click", "extra": 1}), 422)
        assert_error(
            client.post("/api/v1/events", content="x", headers={"Content-Type": "text/plain"}),
            415,
        )
        padded = json.dumps({**base, "type": "click", "pad": "x" * 5000})
        assert_error(
            client.post(
                "/api/v1/events", content=padded, headers={"Content-Type": "application/json"}
            ),
            413,
        )
        report = client.get("/api/v1/admin/experiment").json()
        assert report["arms"]["clip"]["events"] == 0

    def test_a_flood_of_events_is_capped_per_search(self, client: TestClient) -> None:
        body = client.get("/api/v1/search", params={"q": "red", "limit": 5}).json()
        sid, hits = body["search_id"], body["results"]
        types = ["click", "open", "more_like_this", "download"]
        for t in types:
            ok = _event(
                client, {"search_id": sid, "asset_id": hits[0]["asset_id"], "type": t, "rank": 1}
            )
            assert ok.status_code == 200
        flood = _event(
            client, {"search_id": sid, "asset_id": hits[1]["asset_id"], "type": "click", "rank": 2}
        )
        assert_error(flood, 429, "TooManyEvents")

    def test_cli_report_reads_the_same_log(
        self, client: TestClient, tmp_path: Path, tiny_models: dict[str, Path]
    ) -> None:
        body = client.get("/api/v1/search", params={"q": "red"}).json()
        hit = body["results"][0]["asset_id"]
        _event(client, {"search_id": body["search_id"], "asset_id": hit, "type": "open", "rank": 1})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "DATABASE_"))}
        env["DATA_DIR"] = str(tmp_path / "data")
        proc = subprocess.run(
            [sys.executable, "-m", "image_search_service.cli", "experiment", "report", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["arms"]["clip"]["ctr_at_1"] == 1.0
        assert report["recommendation"]["text"].startswith("hold")


class TestInterleaving:
    @pytest.fixture
    def both(self, make_indexed_client: ClientFactory) -> Iterator[TestClient]:
        with make_indexed_client(interleave_percentage=50, rollout_coverage_ttl_s=0) as client:
            yield client

    @staticmethod
    def interleaved_user() -> str:
        return next(u for u in USERS if user_bucket(u) >= 50)

    def test_falls_back_to_clip_while_siglip_cannot_serve(self, both: TestClient) -> None:
        body = both.get(
            "/api/v1/search", params={"q": "red"}, headers={"X-User-Id": self.interleaved_user()}
        ).json()
        assert (body["model"], body["collection"]) == ("clip", "image_assets")
        assert "does not exist yet" in body["fallback_reason"]

    def test_results_of_both_models_merged_and_credited(
        self, both: TestClient, tmp_path: Path
    ) -> None:
        index(both, [tmp_path / "photos"], ["siglip"])
        user = self.interleaved_user()
        body = both.get(
            "/api/v1/search", params={"q": "red", "limit": 6}, headers={"X-User-Id": user}
        ).json()
        assert body["model"] == "interleaved"
        assert body["collection"] == "image_assets+image_assets_siglip"
        assert body["fallback_reason"] is None
        ids = [h["asset_id"] for h in body["results"]]
        assert len(ids) == len(set(ids)) == 6
        teams = [h["model"] for h in body["results"]]
        assert abs(teams.count("clip") - teams.count("siglip")) <= 1
        # Paging the same query continues the same merged list.
        page2 = both.get(
            "/api/v1/search",
            params={"q": "red", "limit": 3, "offset": 3},
            headers={"X-User-Id": user},
        ).json()
        assert [h["asset_id"] for h in page2["results"]] == ids[3:]
        rank = teams.index("siglip") + 1
        click = {
            "search_id": body["search_id"],
            "asset_id": ids[rank - 1],
            "type": "click",
            "rank": rank,
        }
        assert _event(both, click).json()["model"] == "siglip"
        report = both.get("/api/v1/admin/experiment").json()
        assert report["interleaving"]["wins"] == 1
        assert report["arms"]["interleaved"]["searches"] == 2
        rollout = both.get("/api/v1/admin/rollout", params={"user_id": user}).json()
        assert rollout["interleave_percentage"] == 50
        assert (rollout["user"]["arm"], rollout["user"]["interleave"]) == ("interleaved", True)


def test_the_report_needs_the_key(make_client: ClientFactory) -> None:
    with make_client(api_key="k" * 20) as keyed:
        assert_error(keyed.get("/api/v1/admin/experiment"), 401, "Unauthorized")
        ok = keyed.get("/api/v1/admin/experiment", headers={"X-API-Key": "k" * 20})
        assert ok.status_code == 200
        assert set(ok.json()["arms"]) == {"clip", "siglip", "interleaved"}
        assert_error(
            keyed.get(
                "/api/v1/admin/experiment",
                params={"min_effect": 0},
                headers={"X-API-Key": "k" * 20},
            ),
            422,
        )
        # A bare number is not a time (pydantic would read it as seconds since 1970).
        for since in ("0", "1700000000", "1.5"):
            refused = keyed.get(
                "/api/v1/admin/experiment",
                params={"since": since},
                headers={"X-API-Key": "k" * 20},
            )
            assert_error(refused, 422)
            assert "ISO 8601" in refused.json()["detail"]
        dated = keyed.get(
            "/api/v1/admin/experiment",
            params={"since": "2026-01-01"},
            headers={"X-API-Key": "k" * 20},
        )
        assert dated.status_code == 200, dated.text
