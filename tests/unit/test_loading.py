from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from image_search_service.core.errors import ImageTooLarge, UnsupportedImage
from image_search_service.images.loading import load_image
from tests.factories import bomb_png_bytes, broken_files, jpeg_bytes, png_bytes

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
