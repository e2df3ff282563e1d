"""Phone and camera formats: HEIC, MPO, GIF, TIFF, AVIF decode to their first frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_search_service.images.loading import SUPPORTED_FORMATS, load_image
from image_search_service.images.scan import scan_images
from tests.factories import PHONE_FORMATS, photo_bytes, write_jpeg, write_photo

BIG = 100_000_000


@pytest.mark.parametrize("fmt", [f for f in PHONE_FORMATS if f in SUPPORTED_FORMATS])
def test_phone_format_decodes_first_frame_to_rgb(fmt: str) -> None:
    loaded = load_image(photo_bytes(fmt, (64, 48), (220, 20, 20)), max_pixels=BIG)
    assert loaded.meta.format == fmt
    assert (loaded.meta.width, loaded.meta.height) == (64, 48)
    assert loaded.image.mode == "RGB"
    # The first frame is red; MPO and GIF carry a blue second frame.
    r, g, b = loaded.image.getpixel((63, 47))  # type: ignore[misc]
    assert r > 150, (fmt, r, g, b)
    assert b < 100, (fmt, r, g, b)


def test_heic_and_mpo_are_supported() -> None:
    assert {"HEIF", "MPO", "GIF", "TIFF"} <= SUPPORTED_FORMATS


def test_scanner_reports_files_it_skips(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg")
    write_photo(tmp_path / "b.heic", "HEIF")
    write_photo(tmp_path / "c.mpo", "MPO")
    (tmp_path / "clip.mov").write_bytes(b"\x00" * 10)
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".hidden").write_text("x")
    skipped: list[Path] = []
    found = list(scan_images([tmp_path], on_skipped=skipped.append))
    assert sorted(p.name for p in found) == ["a.jpg", "b.heic", "c.mpo"]
    assert sorted(p.name for p in skipped) == ["clip.mov", "notes.txt"]
