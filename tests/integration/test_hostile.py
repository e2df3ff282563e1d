"""Hostile files and requests (issue 9): every bad file fails alone, nothing outside the
library is served, cost is bounded by the model, and no such request is a 5xx."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from image_search_service.context import ServiceContext
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.services.library.index import index_paths
from tests.factories import (
    bad_exif_jpeg_bytes,
    elongated_png_bytes,
    hostile_files,
    jpeg_bytes,
    mpo_bytes,
    write_jpeg,
)
from tests.integration.api_support import ClientFactory, app_ctx, assert_error

PASSWD = Path("/etc/passwd")


def _assets_by_name(ctx: ServiceContext) -> dict[str, Asset]:
    with ctx.session_factory() as session:
        return {Path(a.path).name: a for a in session.query(Asset).all()}


def test_a_folder_of_hostile_files_indexes_every_valid_photo(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    valid, hostile = hostile_files(lib, tmp_path / "outside")
    valid["mpo_suffix"] = lib / "stereo.mpo"
    valid["mpo_suffix"].write_bytes(mpo_bytes(seed=40))
    report = index_paths(ctx, [lib], model_keys=["clip"])
    reasons = {Path(f["path"]).name: f["error"] for f in report.failures}
    # The symlink inside the folder and its target are one photo (same content).
    assert (report.indexed, report.duplicates) == (len(valid) - 1, 1)
    assert set(reasons) == {p.name for p in hostile.values()}, reasons
    assert "outside the indexed folder" in reasons["x.jpg"]
    assert "outside the indexed folder" in reasons["private_link.jpg"]
    assert "too elongated" in reasons["strip.png"]
    assert ctx.store.count("image_assets") == len(valid) - 1
    assets = _assets_by_name(ctx)
    assert "x.jpg" not in assets
    assert "private_link.jpg" not in assets
    # Readable pixels with a broken EXIF block: indexed, without the metadata.
    bad_exif = assets["bad_exif.jpg"]
    assert bad_exif.status == AssetStatus.ACTIVE
    assert (bad_exif.width, bad_exif.height, bad_exif.taken_at) == (72, 40, None)
    assert assets["phone.jpg"].format == "MPO"  # read by its first frame
    assert assets["stereo.mpo"].status == AssetStatus.ACTIVE
    # A rerun is quiet and still does not crash.
    again = index_paths(ctx, [lib], model_keys=["clip"])
    assert again.indexed == 0


def test_a_file_replaced_by_an_outside_link_is_dropped_on_the_next_run(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    photo = write_jpeg(lib / "a.jpg", seed=1)
    write_jpeg(lib / "b.jpg", seed=2)
    index_paths(ctx, [lib], model_keys=["clip"])
    photo.unlink()
    photo.symlink_to(PASSWD)
    report = index_paths(ctx, [lib], model_keys=["clip"])
    assert report.failed == 1
    assert "a.jpg" not in _assets_by_name(ctx)
    assert ctx.store.count("image_assets") == 1


@pytest.fixture
def served(make_client: ClientFactory, tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    lib = tmp_path / "lib"
    write_jpeg(lib / "a.jpg", seed=1, size=(80, 60))
    write_jpeg(lib / "b.jpg", seed=2, size=(60, 80))
    (lib / "notes.jpg").write_text("not a picture\n")
    with make_client() as client:
        index_paths(app_ctx(client), [lib], model_keys=["clip"])
        yield client, lib


def _ids(client: TestClient) -> dict[str, str]:
    items = client.get("/api/v1/assets").json()["items"]
    return {Path(item["path"]).name: item["id"] for item in items}


class TestServing:
    def test_a_failed_asset_is_never_served(self, served: tuple[TestClient, Path]) -> None:
        client, _ = served
        response = client.get(f"/api/v1/assets/{_ids(client)['notes.jpg']}/file")
        assert_error(response, 422, "AssetUnreadable")
        assert "not a picture" not in response.text

    def test_a_valid_photo_is_served(self, served: tuple[TestClient, Path]) -> None:
        client, lib = served
        response = client.get(f"/api/v1/assets/{_ids(client)['a.jpg']}/file")
        assert response.status_code == 200
        assert response.content == (lib / "a.jpg").read_bytes()

    def test_a_photo_swapped_for_a_link_to_passwd_is_not_served(
        self, served: tuple[TestClient, Path]
    ) -> None:
        client, lib = served
        ids = _ids(client)
        (lib / "a.jpg").unlink()
        (lib / "a.jpg").symlink_to(PASSWD)
        response = client.get(f"/api/v1/assets/{ids['a.jpg']}/file")
        assert_error(response, 409, "AssetFileChanged")
        assert "root:" not in response.text

    def test_a_link_repointed_to_an_outside_photo_is_not_served(
        self, served: tuple[TestClient, Path], tmp_path: Path
    ) -> None:
        client, lib = served
        ids = _ids(client)
        # Same size, same mtime, same format, other content: only the hash tells.
        outside = tmp_path / "outside" / "private.jpg"
        outside.parent.mkdir()
        original = (lib / "a.jpg").read_bytes()
        forged = bytearray(original)
        forged[-3] ^= 0xFF
        outside.write_bytes(bytes(forged))
        stat = (lib / "a.jpg").stat()
        os.utime(outside, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        (lib / "a.jpg").unlink()
        (lib / "a.jpg").symlink_to(outside)
        response = client.get(f"/api/v1/assets/{ids['a.jpg']}/file")
        assert_error(response, 409, "AssetFileChanged")

    def test_a_photo_rewritten_in_place_is_not_served_until_reindexed(
        self, served: tuple[TestClient, Path]
    ) -> None:
        client, lib = served
        ids = _ids(client)
        (lib / "b.jpg").write_text("now a text file\n")
        assert_error(client.get(f"/api/v1/assets/{ids['b.jpg']}/file"), 409, "AssetFileChanged")
        assert_error(
            client.get(f"/api/v1/assets/{ids['b.jpg']}/thumbnail"), 409, "AssetFileChanged"
        )

    def test_a_deleted_file_is_a_404(self, served: tuple[TestClient, Path]) -> None:
        client, lib = served
        ids = _ids(client)
        shutil.move(lib / "b.jpg", lib.parent / "elsewhere.jpg")
        assert_error(client.get(f"/api/v1/assets/{ids['b.jpg']}/file"), 404, "AssetFileMissing")


class TestHostileRequests:
    def test_malformed_exif_uploads_and_searches(self, served: tuple[TestClient, Path]) -> None:
        client, _ = served
        data = bad_exif_jpeg_bytes()
        files = {"file": ("bad.jpg", data, "image/jpeg")}
        upload = client.post("/api/v1/assets", files=files)
        assert upload.status_code == 201, upload.text
        assert upload.json()["taken_at"] is None
        search = client.post("/api/v1/search/image", files=files)
        assert search.status_code == 200, search.text

    def test_mpo_is_accepted(self, served: tuple[TestClient, Path]) -> None:
        client, _ = served
        files = {"file": ("phone.jpg", mpo_bytes(), "image/jpeg")}
        upload = client.post("/api/v1/assets", files=files)
        assert upload.status_code == 201, upload.text
        assert upload.json()["format"] == "MPO"
        asset_id = upload.json()["id"]
        assert client.get(f"/api/v1/assets/{asset_id}/file").status_code == 200

    @pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (30, 20_000)])
    def test_absurd_aspect_ratios_are_refused_before_decoding(
        self, served: tuple[TestClient, Path], size: tuple[int, int]
    ) -> None:
        client, _ = served
        files = {"file": ("strip.png", elongated_png_bytes(size), "image/png")}
        for url in ("/api/v1/assets", "/api/v1/search/image"):
            response = client.post(url, files=files)
            assert_error(response, 422, "ImageShapeRefused")
            assert "too elongated" in response.json()["detail"]

    @pytest.mark.parametrize(
        ("after", "before"),
        [
            ("2020-01-01", "2021-01-01T00:00:00Z"),
            ("2020-01-01T00:00:00+02:00", "2021-01-01T00:00:00"),
            ("2020-06-01T00:00:00Z", "2020-06-01T01:00:00+02:00"),
        ],
    )
    def test_mixed_time_zones_in_filters(
        self, served: tuple[TestClient, Path], after: str, before: str
    ) -> None:
        client, _ = served
        ids = _ids(client)
        params = {"taken_after": after, "taken_before": before}
        responses = [
            client.get("/api/v1/search", params={"q": "red", **params}),
            client.post("/api/v1/search", json={"q": "red", **params}),
            client.post(
                "/api/v1/search/image",
                files={"file": ("q.jpg", jpeg_bytes(), "image/jpeg")},
                data=params,
            ),
            client.get(f"/api/v1/search/similar/{ids['a.jpg']}", params=params),
        ]
        for response in responses:
            assert response.status_code in (200, 422), response.text
            if response.status_code == 422:  # the last pair is empty once both are UTC
                assert "earlier" in response.json()["detail"]
            assert response.status_code == (422 if after.endswith("Z") else 200)
