"""The HTTP API over TestClient with real stores (Qdrant Edge on disk, SQLite) and tiny
real open_clip models; the library is indexed through services.indexing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.services.library.index import index_paths
from image_search_service.services.rollout.router import user_bucket
from tests.factories import broken_files, jpeg_bytes
from tests.integration.api_support import (
    TAKEN,
    ClientFactory,
    api_client,
    app_ctx,
    assert_error,
    index,
    metric,
    services,
    write_library,
)

RESULT_KEYS = {"asset_id", "score", "path", "width", "height", "taken_at"}
RESPONSE_KEYS = {"results", "model", "collection", "limit", "offset", "took_ms", "fallback_reason"}


@pytest.fixture
def client(make_indexed_client: ClientFactory) -> Iterator[TestClient]:
    with make_indexed_client() as test_client:
        yield test_client


def _ids(response: Any) -> list[str]:
    return [hit["asset_id"] for hit in response.json()["results"]]


class TestTextSearch:
    def test_get_returns_the_documented_shape(self, client: TestClient) -> None:
        response = client.get("/api/v1/search", params={"q": "a red photo", "limit": 4})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= RESPONSE_KEYS
        assert (body["model"], body["collection"]) == ("clip", "image_assets")
        assert (body["limit"], body["offset"], body["fallback_reason"]) == (4, 0, None)
        assert body["took_ms"] >= 0
        assert len(body["results"]) == 4
        for hit in body["results"]:
            assert set(hit) >= RESULT_KEYS
            assert Path(hit["path"]).is_file()
        scores = [hit["score"] for hit in body["results"]]
        assert scores == sorted(scores, reverse=True)

    def test_post_json_matches_get(self, client: TestClient) -> None:
        params: dict[str, str | int] = {"q": "green field", "limit": 3, "offset": 1}
        by_get = client.get("/api/v1/search", params=params)
        by_post = client.post("/api/v1/search", json=params)
        assert by_post.status_code == 200, by_post.text
        assert _ids(by_post) == _ids(by_get)

    def test_offset_walks_the_ranking(self, client: TestClient) -> None:
        top4 = _ids(client.get("/api/v1/search", params={"q": "sky", "limit": 4}))
        page1 = _ids(client.get("/api/v1/search", params={"q": "sky", "limit": 2}))
        page2 = _ids(client.get("/api/v1/search", params={"q": "sky", "limit": 2, "offset": 2}))
        assert page1 + page2 == top4

    def test_format_and_date_filters(self, client: TestClient) -> None:
        pngs = client.get("/api/v1/search", params={"q": "drawing", "format": "png"}).json()
        assert [Path(h["path"]).name for h in pngs["results"]] == ["drawing.png"]
        window = client.post(
            "/api/v1/search",
            json={"q": "photo", "taken_after": "2020-01-01", "taken_before": "2022-01-01T00:00"},
        ).json()
        # EXIF times carry no zone: they leave the API as UTC, as the filters read them.
        expected = {d.replace(tzinfo=UTC) for d in TAKEN if d and 2020 <= d.year <= 2021}
        assert {datetime.fromisoformat(h["taken_at"]) for h in window["results"]} == expected

    def test_min_score_drops_weaker_hits(self, client: TestClient) -> None:
        hits = client.get("/api/v1/search", params={"q": "yellow"}).json()["results"]
        floor = (hits[2]["score"] + hits[3]["score"]) / 2  # scores in responses are rounded
        kept = client.get("/api/v1/search", params={"q": "yellow", "min_score": floor}).json()
        assert [h["asset_id"] for h in kept["results"]] == [h["asset_id"] for h in hits[:3]]

    def test_repeated_query_is_answered_from_the_text_cache(self, client: TestClient) -> None:
        cache = services(client).search.text_cache
        client.get("/api/v1/search", params={"q": "a unique query"})
        hits, misses = cache.hits, cache.misses
        again = client.get("/api/v1/search", params={"q": "a unique query"})
        assert again.status_code == 200
        assert (cache.hits, cache.misses) == (hits + 1, misses)
        assert metric(client, "image_search_text_cache_lookups_total", result="hit") >= 1


class TestImageAndSimilar:
    def test_image_search_finds_the_same_photo_first(
        self, client: TestClient, photo_library: list[Path]
    ) -> None:
        response = client.post(
            "/api/v1/search/image",
            files={"file": ("query.jpg", photo_library[2].read_bytes(), "image/jpeg")},
            data={"limit": "3"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["limit"], body["model"]) == (3, "clip")
        assert body["results"][0]["path"] == str(photo_library[2].resolve())
        assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
        # One query image: two `file` parts are refused, not one of them taken silently.
        two = [("file", ("a.jpg", photo_library[2].read_bytes(), "image/jpeg"))] * 2
        for url in ("/api/v1/search/image", "/api/v1/embed/image"):
            assert_error(client.post(url, files=two), 422, "InvalidRequest")

    def test_similar_uses_the_stored_vector_and_excludes_the_asset(
        self, settings: Settings, photo_library: list[Path]
    ) -> None:
        # The app's own (instrumented) encoders: the encoder metric proves nothing is encoded.
        with api_client(settings) as client:
            index(client, [photo_library[0].parent], ["clip"])
            asset_id = client.get("/api/v1/assets").json()["items"][0]["id"]
            before = {
                kind: metric(client, "image_search_encoder_duration_seconds_count", kind=kind)
                for kind in ("text", "image")
            }
            response = client.get(f"/api/v1/search/similar/{asset_id}", params={"limit": 10})
            assert response.status_code == 200, response.text
            after = {
                kind: metric(client, "image_search_encoder_duration_seconds_count", kind=kind)
                for kind in ("text", "image")
            }
            body = response.json()
            assert body["model"] == "clip"
            assert asset_id not in _ids(response)
            assert len(body["results"]) == len(photo_library) - 1
            assert before["image"] > 0  # indexing was observed, so the metric is live
            assert after == before

    def test_similar_to_an_unknown_asset_is_404(self, client: TestClient) -> None:
        response = client.get("/api/v1/search/similar/00000000-0000-4000-8000-000000000000")
        assert_error(response, 404, "AssetNotFound")


class TestAssets:
    def test_list_is_paginated(self, client: TestClient, photo_library: list[Path]) -> None:
        first = client.get("/api/v1/assets", params={"limit": 4}).json()
        rest = client.get("/api/v1/assets", params={"limit": 4, "offset": 4}).json()
        assert first["total"] == rest["total"] == len(photo_library)
        assert (first["limit"], first["offset"], rest["offset"]) == (4, 0, 4)
        ids = [a["id"] for a in first["items"] + rest["items"]]
        assert len(ids) == len(set(ids)) == len(photo_library)

    def test_one_asset_its_file_and_thumbnail(
        self, client: TestClient, photo_library: list[Path]
    ) -> None:
        items = client.get("/api/v1/assets", params={"limit": 100}).json()["items"]
        asset = next(a for a in items if a["path"] == str(photo_library[4].resolve()))
        detail = client.get(f"/api/v1/assets/{asset['id']}").json()
        assert detail["embeddings"] == {"clip": "done"}
        assert (detail["width"], detail["height"], detail["format"]) == (96, 48, "JPEG")
        assert TAKEN[4] is not None
        assert detail["taken_at"] == TAKEN[4].isoformat() + "Z"
        for stamp in ("created_at", "updated_at"):  # every time says its zone
            assert datetime.fromisoformat(detail[stamp]).tzinfo is not None
        original = client.get(f"/api/v1/assets/{asset['id']}/file")
        assert original.headers["content-type"] == "image/jpeg"
        assert original.content == photo_library[4].read_bytes()
        for _ in range(2):  # the second answer comes from the thumbnail cache
            thumb = client.get(f"/api/v1/assets/{asset['id']}/thumbnail", params={"size": 128})
            assert thumb.status_code == 200
            assert thumb.headers["content-type"] == "image/jpeg"
            with Image.open(io.BytesIO(thumb.content)) as image:
                assert image.format == "JPEG"
                assert max(image.size) <= 128
        # A cached thumbnail, too, is served only while the file is the indexed one.
        photo_library[4].write_bytes(photo_library[4].read_bytes()[:200])
        thumb = client.get(f"/api/v1/assets/{asset['id']}/thumbnail", params={"size": 128})
        assert_error(thumb, 409, "AssetFileChanged")
        photo_library[4].unlink()
        photo_library[4].symlink_to("/etc/hostname")
        thumb = client.get(f"/api/v1/assets/{asset['id']}/thumbnail", params={"size": 128})
        assert_error(thumb, 409, "AssetFileChanged")

    def test_upload_is_stored_and_indexed_by_every_model_with_a_collection(
        self, client: TestClient
    ) -> None:
        ctx = app_ctx(client)
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))  # a migration has begun
        data = jpeg_bytes((90, 70), colour=(10, 120, 130), seed=42)
        response = client.post("/api/v1/assets", files={"file": ("new.jpg", data, "image/jpeg")})
        assert response.status_code == 201, response.text
        asset = response.json()
        assert response.headers["location"].endswith(f"/api/v1/assets/{asset['id']}")
        assert asset["embeddings"] == {"clip": "done", "siglip": "done"}
        stored = Path(asset["path"])
        assert stored.is_relative_to(ctx.settings.uploads_dir.resolve())
        assert stored.read_bytes() == data
        found = client.post(
            "/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")}
        ).json()
        assert found["results"][0]["asset_id"] == asset["id"]
        again = client.post("/api/v1/assets", files={"file": ("copy.jpg", data, "image/jpeg")})
        assert again.status_code == 200
        assert again.json()["id"] == asset["id"]
        # Two files in one upload: refused, not the last one silently taken.
        other = jpeg_bytes((60, 60), colour=(200, 20, 30), seed=43)
        two = [("file", ("a.jpg", other, "image/jpeg")), ("file", ("b.jpg", data, "image/jpeg"))]
        before = client.get("/api/v1/assets").json()["total"]
        assert_error(client.post("/api/v1/assets", files=two), 422, "InvalidRequest")
        assert client.get("/api/v1/assets").json()["total"] == before

    def test_uploading_known_content_again_embeds_what_it_lacks(self, client: TestClient) -> None:
        data = jpeg_bytes((60, 60), seed=31)
        first = client.post("/api/v1/assets", files={"file": ("a.jpg", data, "image/jpeg")})
        assert first.json()["embeddings"] == {"clip": "done"}
        ctx = app_ctx(client)
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))  # created since
        again = client.post("/api/v1/assets", files={"file": ("b.jpg", data, "image/jpeg")})
        assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
        assert again.json()["embeddings"] == {"clip": "done", "siglip": "done"}

    def test_unreadable_or_vanished_files(
        self, client: TestClient, photo_library: list[Path], tmp_path: Path
    ) -> None:
        broken = broken_files(tmp_path / "broken")
        index_paths(app_ctx(client), [tmp_path / "broken"], model_keys=["clip"])
        items = client.get("/api/v1/assets", params={"limit": 100}).json()["items"]
        by_path = {a["path"]: a for a in items}
        truncated = by_path[str(broken["truncated"].resolve())]
        assert truncated["status"] == "failed"
        assert truncated["error"]
        thumb = client.get(f"/api/v1/assets/{truncated['id']}/thumbnail")
        assert_error(thumb, 422, "AssetUnreadable")
        # A failed asset is not an image of the library: its bytes are never served.
        raw = client.get(f"/api/v1/assets/{truncated['id']}/file")
        assert_error(raw, 422, "AssetUnreadable")

        gone = by_path[str(photo_library[1].resolve())]
        photo_library[1].unlink()  # removed on disk, not re-indexed yet
        for suffix in ("file", "thumbnail"):
            response = client.get(f"/api/v1/assets/{gone['id']}/{suffix}")
            assert_error(response, 404, "AssetFileMissing")

    def test_delete_removes_the_row_the_points_and_an_uploaded_file(
        self, client: TestClient, photo_library: list[Path]
    ) -> None:
        ctx = app_ctx(client)
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
        data = jpeg_bytes((80, 60), seed=7)
        uploaded = client.post("/api/v1/assets", files={"file": ("x.jpg", data, "image/jpeg")})
        asset_id = uploaded.json()["id"]
        collections = [ctx.spec(k).collection for k in ("clip", "siglip")]
        assert all(ctx.store.retrieve_vectors(c, [UUID(asset_id)]) for c in collections)

        response = client.delete(f"/api/v1/assets/{asset_id}")
        assert response.status_code == 204
        with ctx.session_factory() as session:
            assert repo.get_asset(session, UUID(asset_id)) is None
        assert not any(ctx.store.retrieve_vectors(c, [UUID(asset_id)]) for c in collections)
        assert not Path(uploaded.json()["path"]).exists()
        assert_error(client.get(f"/api/v1/assets/{asset_id}"), 404, "AssetNotFound")
        assert_error(client.delete(f"/api/v1/assets/{asset_id}"), 404, "AssetNotFound")

        # A library photo leaves the index but stays on disk: it is the user's file.
        items = client.get("/api/v1/assets", params={"limit": 100}).json()["items"]
        library_asset = next(a for a in items if a["path"] == str(photo_library[0].resolve()))
        assert client.delete(f"/api/v1/assets/{library_asset['id']}").status_code == 204
        assert photo_library[0].is_file()
        assert library_asset["id"] not in _ids(client.get("/api/v1/search", params={"q": "x"}))


class TestRollout:
    @pytest.fixture
    def rollout_client(self, make_client: ClientFactory, tmp_path: Path) -> Iterator[TestClient]:
        # Half the library embedded by SigLIP (photos/a), all of it by CLIP; no caching of
        # the coverage check so each request sees the latest state.
        write_library(tmp_path / "photos" / "a")
        write_library(tmp_path / "photos" / "b", seed=1)
        with make_client(siglip_rollout_percentage=50, rollout_coverage_ttl_s=0) as client:
            index(client, [tmp_path / "photos"], ["clip"])
            index(client, [tmp_path / "photos" / "a"], ["siglip"])
            yield client

    @staticmethod
    def users(in_rollout: bool, n: int = 3) -> list[str]:
        ids = (f"user-{i}" for i in range(1000))
        return [u for u in ids if (user_bucket(u) < 50) == in_rollout][:n]

    def test_partial_collection_never_serves(self, rollout_client: TestClient) -> None:
        for user in self.users(in_rollout=True):
            body = rollout_client.get(
                "/api/v1/search", params={"q": "sea"}, headers={"X-User-Id": user}
            ).json()
            assert (body["model"], body["collection"]) == ("clip", "image_assets")
            assert "has not embedded 6 of the assets clip covers" in body["fallback_reason"]
        reason = "coverage_incomplete"
        assert metric(
            rollout_client, "image_search_router_fallbacks_total", selected="siglip", reason=reason
        ) == len(self.users(in_rollout=True))

    def test_users_in_the_rollout_get_siglip_once_it_covers_the_library(
        self, rollout_client: TestClient, tmp_path: Path
    ) -> None:
        index(rollout_client, [tmp_path / "photos" / "b"], ["siglip"])
        for in_rollout, model in ((True, "siglip"), (False, "clip")):
            for user in self.users(in_rollout):
                for _ in range(2):  # the same user gets the same model every time
                    body = rollout_client.get(
                        "/api/v1/search", params={"q": "sea"}, headers={"X-User-Id": user}
                    ).json()
                    assert (body["model"], body["fallback_reason"]) == (model, None)
                    if model == "siglip":
                        assert body["collection"] == "image_assets_siglip"
                        assert body["results"][0]["calibrated_score"] is not None
        # The user_id parameter routes too; the X-User-Id header wins over it.
        inside, outside = self.users(True, 1)[0], self.users(False, 1)[0]
        by_param = rollout_client.get("/api/v1/search", params={"q": "sea", "user_id": inside})
        assert by_param.json()["model"] == "siglip"
        both = rollout_client.get(
            "/api/v1/search",
            params={"q": "sea", "user_id": inside},
            headers={"X-User-Id": outside},
        )
        assert both.json()["model"] == "clip"
        assert metric(rollout_client, "image_search_searches_total", model="siglip") >= 7

    def test_a_search_that_names_its_model_bypasses_the_router(
        self, rollout_client: TestClient
    ) -> None:
        inside, outside = self.users(True, 1)[0], self.users(False, 1)[0]
        # The named model answers, whatever the user's bucket, the coverage guard (SigLIP
        # covers half the library: its half is what it finds) or interleaving.
        for user, model in ((inside, "clip"), (outside, "siglip"), (inside, "siglip")):
            body = rollout_client.get(
                "/api/v1/search",
                params={"q": "sea", "model": model, "limit": 50},
                headers={"X-User-Id": user},
            ).json()
            assert (body["model"], body["fallback_reason"]) == (model, None)
            assert len(body["results"]) == (12 if model == "clip" else 6)
        similar = rollout_client.get("/api/v1/assets").json()["items"][0]["id"]
        pinned = rollout_client.get(f"/api/v1/search/similar/{similar}", params={"model": "clip"})
        assert pinned.json()["model"] == "clip"
        # Not rollout evidence: the user chose the arm. No search id, no experiment count.
        assert body["search_id"] is None
        report = rollout_client.get("/api/v1/admin/experiment").json()
        assert sum(arm["searches"] for arm in report["arms"].values()) == 0
        counted = "image_search_experiment_searches_total"
        assert metric(rollout_client, counted, arm="siglip", kind="text", results="some") == 0
        routed = rollout_client.get(
            "/api/v1/search", params={"q": "sea"}, headers={"X-User-Id": inside}
        ).json()
        assert routed["search_id"] is not None
        report = rollout_client.get("/api/v1/admin/experiment").json()
        assert sum(arm["searches"] for arm in report["arms"].values()) == 1  # a routed one is
        assert_error(rollout_client.get("/api/v1/search", params={"q": "x", "model": "b"}), 422)

    def test_similar_search_runs_in_the_routed_collection(
        self, rollout_client: TestClient, tmp_path: Path
    ) -> None:
        index(rollout_client, [tmp_path / "photos" / "b"], ["siglip"])
        asset_id = rollout_client.get("/api/v1/assets").json()["items"][0]["id"]
        user = self.users(in_rollout=True, n=1)[0]
        body = rollout_client.get(
            f"/api/v1/search/similar/{asset_id}", headers={"X-User-Id": user}
        ).json()
        assert body["model"] == "siglip"
        assert body["collection"] == "image_assets_siglip"
        assert asset_id not in [h["asset_id"] for h in body["results"]]

    def test_admin_rollout_reports_flags_coverage_and_a_users_model(
        self, rollout_client: TestClient
    ) -> None:
        user = self.users(in_rollout=True, n=1)[0]
        body = rollout_client.get("/api/v1/admin/rollout", params={"user_id": user}).json()
        assert (body["use_siglip"], body["siglip_rollout_percentage"]) == (False, 50)
        clip, siglip = body["models"]["clip"], body["models"]["siglip"]
        assert (clip["ready"], clip["embedded"], clip["coverage"]) == (True, 12, 1.0)
        assert (siglip["ready"], siglip["embedded"], siglip["missing"]) == (False, 6, 6)
        assert siglip["reason_code"] == "coverage_incomplete"
        assert body["user"]["bucket"] == user_bucket(user)
        assert (body["user"]["selected"], body["user"]["model"]) == ("siglip", "clip")
        assert body["user"]["fallback_reason"]
        no_user = rollout_client.get("/api/v1/admin/rollout").json()
        assert no_user["user"] is None

    def test_admin_reembed_reports_migration_progress(self, rollout_client: TestClient) -> None:
        body = rollout_client.get("/api/v1/admin/reembed", params={"target": "siglip"}).json()
        assert body["target"] == "siglip"
        assert (body["total"], body["done"], body["pending"]) == (12, 6, 6)
        assert body["models"]["clip"]["done"] == 12
        assert body["queue"] is None  # embedded mode: Redis is never contacted
        bad = rollout_client.get("/api/v1/admin/reembed", params={"target": "dall-e"})
        assert_error(bad, 422, "InvalidRequest")


class TestApiKey:
    KEY = "s3cret-key"

    @pytest.fixture
    def keyed_client(self, make_indexed_client: ClientFactory) -> Iterator[TestClient]:
        with make_indexed_client(api_key=self.KEY) as client:
            yield client

    @pytest.mark.parametrize("key", [None, "wrong", "s3cret-key "])
    def test_changes_and_admin_need_the_key(
        self, keyed_client: TestClient, key: str | None
    ) -> None:
        headers = {"X-API-Key": key} if key is not None else {}
        listed = keyed_client.get("/api/v1/assets", headers={"X-API-Key": self.KEY})
        asset_id = listed.json()["items"][0]["id"]
        upload = keyed_client.post(
            "/api/v1/assets",
            files={"file": ("x.jpg", jpeg_bytes(seed=5), "image/jpeg")},
            headers=headers,
        )
        assert_error(upload, 401, "Unauthorized")
        assert upload.headers["www-authenticate"].startswith("Bearer")
        delete = keyed_client.delete(f"/api/v1/assets/{asset_id}", headers=headers)
        assert_error(delete, 401, "Unauthorized")
        assert_error(keyed_client.get("/api/v1/admin/rollout", headers=headers), 401)
        assert_error(keyed_client.get("/api/v1/admin/reembed", headers=headers), 401)
        # Private by default: reads need it too.
        assert_error(keyed_client.get(f"/api/v1/assets/{asset_id}", headers=headers), 401)

    def test_the_right_key_is_accepted_and_search_needs_it_too(
        self, keyed_client: TestClient
    ) -> None:
        headers = {"X-API-Key": self.KEY}
        assert_error(keyed_client.get("/api/v1/search", params={"q": "x"}), 401)
        found = keyed_client.get("/api/v1/search", params={"q": "x"}, headers=headers)
        assert found.status_code == 200
        assert keyed_client.get("/api/v1/admin/rollout", headers=headers).status_code == 200
        upload = keyed_client.post(
            "/api/v1/assets",
            files={"file": ("x.jpg", jpeg_bytes(seed=5), "image/jpeg")},
            headers=headers,
        )
        assert upload.status_code == 201
        delete = keyed_client.delete(f"/api/v1/assets/{upload.json()['id']}", headers=headers)
        assert delete.status_code == 204

    @pytest.mark.parametrize("order", [(KEY, "wrong"), ("wrong", KEY), (KEY, KEY)])
    def test_a_key_sent_twice_is_refused(
        self, keyed_client: TestClient, order: tuple[str, str]
    ) -> None:
        headers = [("X-API-Key", order[0]), ("X-API-Key", order[1])]
        response = keyed_client.get("/api/v1/admin/rollout", headers=headers)
        assert_error(response, 401, "Unauthorized")
        assert "more than once" in response.json()["detail"]


class TestOperations:
    def test_health_and_ready(self, client: TestClient) -> None:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        disk = ready.pop("disk")
        assert ready == {"status": "ready", "database": "sqlite", "vector_store": "embedded"}
        assert disk["reserve_mb"] == 256
        assert disk["low"] is (disk["free_mb"] < 256)

    def test_not_ready_while_the_models_load_in_the_background(self, client: TestClient) -> None:
        """`serve` without --preload listens first and loads the models after: a load
        balancer polling /ready waits for them (a failed load is left to the searches,
        which try again and say why)."""
        from image_search_service.services.search.warmup import ModelWarmup

        ctx = client.app.state.services.ctx  # type: ignore[attr-defined]
        warmup = ModelWarmup(ctx, ["clip", "siglip"])
        client.app.state.warmup = warmup  # type: ignore[attr-defined]
        for key in ("clip", "siglip"):
            warmup._set(key, "loading", None)
        response = client.get("/ready")
        assert_error(response, 503, "ModelsLoading")
        assert "loading the clip and siglip models" in response.json()["detail"]
        warmup._set("clip", "ready", None)
        warmup._set("siglip", "failed", "weights not found")
        assert client.get("/ready").json()["status"] == "ready"

    def test_metrics_by_route_and_model(self, client: TestClient) -> None:
        client.get("/api/v1/search", params={"q": "dog"})
        latency = metric(
            client,
            "image_search_http_request_duration_seconds_count",
            route="/api/v1/search",
            model="clip",
            status="200",
        )
        assert latency == 1
        assert metric(client, "image_search_searches_total", model="clip", kind="text") == 1
        client.get("/no/such/route")
        assert (
            metric(client, "image_search_http_request_duration_seconds_count", route="unmatched")
            == 1
        )

    def test_openapi_documents_routes_and_their_errors(self, client: TestClient) -> None:
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        search = spec["paths"]["/api/v1/search"]
        assert {"get", "post"} <= set(search)
        assert {"422", "503"} <= set(search["get"]["responses"])
        upload = spec["paths"]["/api/v1/assets"]["post"]
        assert {"401", "413", "415"} <= set(upload["responses"])
        assert upload["security"] == [{"APIKeyHeader": []}]
