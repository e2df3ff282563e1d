"""Cross-site writes and DNS rebinding are refused; the same-origin page and non-browser
clients still work (issue 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.services.library.index import index_paths
from tests.factories import jpeg_bytes, write_jpeg
from tests.integration.api_support import ClientFactory, app_ctx, assert_error, stored_state

EVIL = "http://evil.example"
# What a browser sends for a fetch() from a page served by this API at localhost:8000.
SAME_ORIGIN = {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def client(make_client: ClientFactory, tmp_path: Path) -> Iterator[TestClient]:
    write_jpeg(tmp_path / "lib" / "a.jpg", seed=1)
    trusted = "https://photos.example"
    with make_client(trusted_origins=trusted, base_url="http://localhost:8000") as c:
        index_paths(app_ctx(c), [tmp_path / "lib"], model_keys=["clip"])
        yield c


def _upload(client: TestClient, seed: int, headers: dict[str, str]) -> Any:
    files = {"file": ("x.jpg", jpeg_bytes(seed=seed), "image/jpeg")}
    return client.post("/api/v1/assets", files=files, headers=headers)


def _first_id(client: TestClient) -> str:
    item: str = client.get("/api/v1/assets").json()["items"][0]["id"]
    return item


class TestCrossSiteWrites:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": EVIL},
            {"Origin": "null"},
            {"Origin": "http://localhost:3000"},  # another port is another origin
            {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ],
    )
    def test_upload_and_delete_are_refused(
        self, client: TestClient, headers: dict[str, str]
    ) -> None:
        before = stored_state(app_ctx(client))
        assert_error(_upload(client, 5, headers), 403, "CrossSiteRequest")
        asset_id = _first_id(client)
        assert_error(
            client.delete(f"/api/v1/assets/{asset_id}", headers=headers), 403, "CrossSiteRequest"
        )
        assert stored_state(app_ctx(client)) == before

    def test_two_origin_headers_are_refused(self, client: TestClient) -> None:
        """No browser sends two; a check that read only the first could be walked past."""
        own = SAME_ORIGIN["Origin"]
        asset_id = _first_id(client)
        for pair in ([own, EVIL], [EVIL, own]):
            doubled = [("Origin", origin) for origin in pair]
            response = client.delete(f"/api/v1/assets/{asset_id}", headers=doubled)
            assert_error(response, 403, "CrossSiteRequest")
        assert client.get(f"/api/v1/assets/{asset_id}").status_code == 200

    def test_the_same_origin_page_can_write(self, client: TestClient) -> None:
        response = _upload(client, 6, SAME_ORIGIN)
        assert response.status_code == 201, response.text
        search = client.post("/api/v1/search", json={"q": "red"}, headers=SAME_ORIGIN)
        assert search.status_code == 200, search.text
        deleted = client.delete(f"/api/v1/assets/{response.json()['id']}", headers=SAME_ORIGIN)
        assert deleted.status_code == 204

    def test_clients_that_are_not_browsers_can_write(self, client: TestClient) -> None:
        assert _upload(client, 7, {}).status_code == 201

    def test_a_trusted_origin_can_write(self, client: TestClient) -> None:
        headers = {"Origin": "https://photos.example", "Sec-Fetch-Site": "cross-site"}
        assert _upload(client, 8, headers).status_code == 201

    def test_cross_site_reads_still_answer(self, client: TestClient) -> None:
        # Reads change nothing; without CORS headers the browser hides them anyway.
        response = client.get("/api/v1/assets", headers={"Origin": EVIL})
        assert response.status_code == 200


class TestHostHeader:
    @pytest.mark.parametrize("method", ["GET", "DELETE"])
    def test_a_rebound_host_is_refused(self, client: TestClient, method: str) -> None:
        before = stored_state(app_ctx(client))
        asset_id = _first_id(client)
        response = client.request(
            method, f"/api/v1/assets/{asset_id}", headers={"Host": "evil.example"}
        )
        assert_error(response, 400, "InvalidHost")
        assert stored_state(app_ctx(client)) == before

    @pytest.mark.parametrize(
        "host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"]
    )
    def test_loopback_names_are_allowed(self, client: TestClient, host: str) -> None:
        assert client.get("/health", headers={"Host": host}).status_code == 200

    @pytest.mark.parametrize("host", ["", "localhost:abc", "localhost.evil.example"])
    def test_malformed_or_lookalike_hosts_are_refused(self, client: TestClient, host: str) -> None:
        assert_error(client.get("/health", headers={"Host": host}), 400, "InvalidHost")

    def test_configured_hosts_and_patterns(self, make_client: ClientFactory) -> None:
        allowed = "photos.example, *.lan"
        with make_client(allowed_hosts=allowed, base_url="http://photos.example") as c:
            assert c.get("/health").status_code == 200
            assert c.get("/health", headers={"Host": "nas.lan"}).status_code == 200
            assert_error(c.get("/health", headers={"Host": "localhost"}), 400, "InvalidHost")
