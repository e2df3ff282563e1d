"""Phone and camera formats through the real pipeline: folders and uploads."""

from __future__ import annotations

from pathlib import Path

from image_search_service.context import ServiceContext
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import SUPPORTED_FORMATS
from image_search_service.services.library.index import index_paths
from image_search_service.services.search.service import SearchOptions, SearchService
from tests.factories import PHONE_FORMATS, SUFFIX, photo_bytes, write_jpeg, write_photo
from tests.integration.api_support import api_client


def test_folder_of_phone_formats_is_indexed_and_others_listed(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    lib = tmp_path / "phone"
    write_jpeg(lib / "a.jpg", seed=1)
    formats = [f for f in PHONE_FORMATS if f in SUPPORTED_FORMATS and f in SUFFIX]
    files = {
        fmt: write_photo(lib / f"p_{fmt.lower()}{SUFFIX[fmt]}", fmt, seed=10 + i)
        for i, fmt in enumerate(formats)
    }
    (lib / "video.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  ")
    (lib / "raw.dng").write_bytes(b"II*\x00")
    report = index_paths(ctx, [lib], model_keys=["clip"])
    assert report.failed == 0, report.failures
    assert report.indexed == 1 + len(formats)
    assert report.unsupported == 2
    assert sorted(Path(p).name for p in report.unsupported_files) == ["raw.dng", "video.mov"]
    assert report.unsupported_files
    # A HEIC finds itself first.
    outcome = SearchService(ctx).search_image(
        files["HEIF"], model="clip", options=SearchOptions(limit=1)
    )
    assert outcome.results[0].path == str(files["HEIF"].resolve())
    assert outcome.results[0].format == "HEIF"


def test_heic_upload_is_stored_and_served(make_settings: object, encoders: EncoderRegistry) -> None:
    settings = make_settings()  # type: ignore[operator]
    with api_client(settings, encoders=encoders) as client:
        data = photo_bytes("HEIF", (60, 40), seed=5)
        response = client.post(
            "/api/v1/assets", files={"file": ("IMG_0001.HEIC", data, "image/heic")}
        )
        assert response.status_code == 201, response.text
        asset = response.json()
        assert asset["format"] == "HEIF"
        assert asset["path"].endswith(".heic")
        file = client.get(f"/api/v1/assets/{asset['id']}/file")
        assert file.status_code == 200
        assert file.headers["content-type"] == "image/heic"
        assert file.content == data
        thumb = client.get(f"/api/v1/assets/{asset['id']}/thumbnail?size=128")
        assert thumb.status_code == 200
        assert thumb.headers["content-type"] == "image/jpeg"
