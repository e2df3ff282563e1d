from __future__ import annotations

import io
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search_service.core.errors import ImageShapeRefused, ImageTooLarge, UnsupportedImage
from image_search_service.images.loading import load_image
from tests.factories import (
    bad_exif_jpeg_bytes,
    bomb_png_bytes,
    broken_files,
    elongated_png_bytes,
    jpeg_bytes,
    mpo_bytes,
    png_bytes,
    png_claiming,
)

BIG = 100_000_000


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Acme"
    exif[0x0110] = "Snapper 3000"
    if orientation:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 18:30:00"
    return exif


def test_jpeg_metadata_and_rgb() -> None:
    loaded = load_image(jpeg_bytes((120, 80), exif=_exif()), max_pixels=BIG)
    assert loaded.image.mode == "RGB"
    assert (loaded.meta.width, loaded.meta.height, loaded.meta.format) == (120, 80, "JPEG")
    assert loaded.meta.taken_at == datetime(2021, 7, 4, 18, 30)
    assert (loaded.meta.camera_make, loaded.meta.camera_model) == ("Acme", "Snapper 3000")


def test_exif_orientation_is_applied() -> None:
    loaded = load_image(jpeg_bytes((120, 80), exif=_exif(orientation=6)), max_pixels=BIG)
    assert loaded.image.size == (80, 120)
    assert (loaded.meta.width, loaded.meta.height) == (80, 120)


def test_draft_mode_decodes_big_jpegs_smaller_but_not_below_need() -> None:
    loaded = load_image(jpeg_bytes((2000, 1500)), max_pixels=BIG, min_side=224)
    assert min(loaded.image.size) >= 224
    assert loaded.image.size[0] <= 1000  # decoded at 1/2 scale or less
    assert (loaded.meta.width, loaded.meta.height) == (2000, 1500)  # the file's real size


def test_transparent_png_becomes_rgb() -> None:
    loaded = load_image(png_bytes(mode="RGBA"), max_pixels=BIG)
    assert loaded.image.mode == "RGB"
    assert loaded.meta.format == "PNG"


def test_decompression_bomb_is_refused() -> None:
    with pytest.raises(ImageTooLarge, match="MAX_IMAGE_PIXELS"):
        load_image(bomb_png_bytes(), max_pixels=BIG)


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(ImageTooLarge):
        load_image(jpeg_bytes((100, 100)), max_pixels=9_999)


def test_the_pixel_limit_may_be_raised_past_pillows_own() -> None:
    """Pillow refuses at open past 179 MP by default; a higher MAX_IMAGE_PIXELS is ours to
    enforce, with our message (225 MP here, against a limit of 200 MP)."""
    with pytest.raises(ImageTooLarge, match=r"225,000,000 pixels exceeds the limit of 200,000,000"):
        load_image(bomb_png_bytes(15_000), max_pixels=200_000_000)


@pytest.mark.parametrize("kind", ["zero_byte", "not_image", "truncated", "corrupt"])
def test_broken_files_raise_unsupported_with_reason(tmp_path: Path, kind: str) -> None:
    path = broken_files(tmp_path)[kind]
    with pytest.raises(UnsupportedImage) as err:
        load_image(path, max_pixels=BIG)
    assert path.name in err.value.detail


def test_other_formats_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "BMP")
    with pytest.raises(UnsupportedImage, match="unsupported format BMP"):
        load_image(buf.getvalue(), max_pixels=BIG)


def test_empty_upload() -> None:
    with pytest.raises(UnsupportedImage, match="empty"):
        load_image(b"", max_pixels=BIG)


def test_malformed_exif_keeps_the_pixels_and_drops_the_metadata() -> None:
    loaded = load_image(bad_exif_jpeg_bytes((72, 40)), max_pixels=BIG)
    assert loaded.image.size == (72, 40)  # the rotation it asked for is not applied
    assert (loaded.meta.width, loaded.meta.height, loaded.meta.taken_at) == (72, 40, None)


def test_mpo_loads_its_first_frame() -> None:
    loaded = load_image(mpo_bytes((64, 48)), max_pixels=BIG)
    assert loaded.meta.format == "MPO"
    pixel = loaded.image.getpixel((1, 1))
    assert isinstance(pixel, tuple)
    assert pixel[2] > 150  # the first frame is blue-ish, the second black


def test_absurd_aspect_ratio_is_refused_from_the_header() -> None:
    with pytest.raises(ImageShapeRefused, match="too elongated"):
        load_image(elongated_png_bytes((1, 100_000)), max_pixels=BIG, min_side=224)
    ok = load_image(elongated_png_bytes((10, 200)), max_pixels=BIG, min_side=224)
    assert ok.image.size == (10, 200)


@pytest.mark.parametrize("size", [(1, 20_000_000), (20_000_000, 1), (100, 2001)])
def test_the_issues_strips_are_refused_from_the_header_alone(size: tuple[int, int]) -> None:
    # No pixel data at all: a decode attempt would fail differently (truncated).
    with pytest.raises(ImageShapeRefused, match="too elongated"):
        load_image(png_claiming(size), max_pixels=BIG, min_side=224)


def test_a_large_png_is_reduced_to_what_the_model_needs() -> None:
    loaded = load_image(png_bytes((4000, 3000), mode="RGB"), max_pixels=BIG, min_side=224)
    assert min(loaded.image.size) < 2 * 2 * 224  # not 3000
    assert min(loaded.image.size) >= 224
    assert (loaded.meta.width, loaded.meta.height) == (4000, 3000)


def test_any_exception_inside_the_decoder_is_that_files_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = png_bytes((10, 10))

    def boom(self: Image.Image) -> None:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(UnsupportedImage, match="struct.error|error: unpack"):
        load_image(data, max_pixels=BIG)

    def no_memory(self: Image.Image) -> None:
        raise MemoryError

    monkeypatch.setattr(Image.Image, "load", no_memory)
    with pytest.raises(ImageTooLarge, match="memory"):
        load_image(data, max_pixels=BIG)


class TestScaledJpegDecode:
    """Big JPEGs decode at the model's scale (simplejpeg), with Pillow as the fallback."""

    def test_scaled_decode_applies_exif_orientation(self) -> None:
        data = jpeg_bytes((2000, 1500), exif=_exif(orientation=6))
        loaded = load_image(data, max_pixels=BIG, min_side=224)
        width, height = loaded.image.size
        assert height > width  # rotated upright
        assert min(width, height) >= 224
        assert height <= 1000  # decoded at 1/2 scale or less
        assert (loaded.meta.width, loaded.meta.height) == (1500, 2000)

    def test_scaled_decode_matches_pillow_draft(self) -> None:
        data = jpeg_bytes((2000, 1500), seed=3)
        ours = load_image(data, max_pixels=BIG, min_side=224).image
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (int(2000 / (1500 / 224)), 224))
            reference = img.convert("RGB")
        assert ours.size == reference.size
        diff = np.abs(np.asarray(ours, np.int16) - np.asarray(reference, np.int16))
        assert float(diff.mean()) < 2.0

    def test_cmyk_jpeg_falls_back_to_pillow(self) -> None:
        buf = io.BytesIO()
        Image.new("CMYK", (1200, 900), (0, 120, 200, 10)).save(buf, "JPEG")
        loaded = load_image(buf.getvalue(), max_pixels=BIG, min_side=224)
        assert loaded.image.mode == "RGB"
        assert min(loaded.image.size) >= 224

    def test_truncated_big_jpeg_is_refused_with_reason(self, tmp_path: Path) -> None:
        data = jpeg_bytes((1600, 1200), seed=5)
        path = tmp_path / "cut.jpg"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(UnsupportedImage, match="cut.jpg"):
            load_image(path, max_pixels=BIG, min_side=224)
