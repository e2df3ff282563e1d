"""Decode one image safely: format check, bomb guard, draft mode, EXIF orientation, RGB.

Every failure is an :class:`UnsupportedImage` or :class:`ImageTooLarge` with a reason
a person can act on; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError, features
from pillow_heif import register_heif_opener

from image_search_service.core.errors import ImageTooLarge, UnsupportedImage

# HEIC/HEIF (iPhone) through pillow-heif's Pillow plugin; registering is idempotent.
register_heif_opener()

# Pillow's format name -> the file suffixes the scanner picks up. MPO (camera JPEGs with a
# second frame), GIF and multi-page TIFF are read by their first frame, the one Pillow
# opens on. AVIF only where this Pillow was built with libavif.
_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "MPO": (".mpo",),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "HEIF": (".heic", ".heif", ".hif"),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
    **({"AVIF": (".avif",)} if features.check("avif") else {}),
}
SUPPORTED_FORMATS = frozenset(_FORMATS)
SUPPORTED_SUFFIXES = frozenset(s for suffixes in _FORMATS.values() for s in suffixes)
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # served as the JPEG its first frame is
    "PNG": "image/png",
    "WEBP": "image/webp",
    "HEIF": "image/heic",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}
# The suffix an upload of each format is stored under.
FORMAT_SUFFIX = {fmt: suffixes[0] for fmt, suffixes in _FORMATS.items()}

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL = 0x010F, 0x0110
_TAG_DATETIME, _TAG_DATETIME_ORIGINAL = 0x0132, 0x9003


@dataclass(frozen=True)
class ImageMeta:
    width: int  # of the original file, after EXIF orientation
    height: int
    format: str
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, possibly reduced by JPEG draft mode
    meta: ImageMeta


def load_image(
    source: Path | bytes, *, max_pixels: int, min_side: int | None = None
) -> LoadedImage:
    """Decode ``source`` (a path or the file's bytes).

    ``min_side``: the caller only needs this many pixels on the shorter side, so JPEGs
    may be decoded at 1/2, 1/4 or 1/8 scale (draft mode), which is much cheaper.
    """
    name = source.name if isinstance(source, Path) else "upload"
    try:
        if isinstance(source, Path) and source.stat().st_size == 0:
            raise UnsupportedImage(f"{name}: empty file (0 bytes)")
        if isinstance(source, bytes) and not source:
            raise UnsupportedImage("empty upload (0 bytes)")
        fp = source if isinstance(source, Path) else io.BytesIO(source)
        with warnings.catch_warnings():
            # Pillow warns before it errors on bombs; we enforce our own limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                return _decode(img, name=name, max_pixels=max_pixels, min_side=min_side)
    except (UnsupportedImage, ImageTooLarge):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"{name}: refused as a possible decompression bomb ({exc}); see MAX_IMAGE_PIXELS"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedImage(f"{name}: not an image file Pillow can identify") from None
    except FileNotFoundError:
        raise UnsupportedImage(f"{name}: file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError or SyntaxError.
        raise UnsupportedImage(f"{name}: corrupt or truncated image ({exc})") from None


def _decode(img: Image.Image, *, name: str, max_pixels: int, min_side: int | None) -> LoadedImage:
    fmt = img.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(
            f"{name}: unsupported format {fmt} ({', '.join(sorted(SUPPORTED_FORMATS))})"
        )
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # MPO, animated GIF, multi-page TIFF: the first frame is the photo
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UnsupportedImage(f"{name}: image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (MAX_IMAGE_PIXELS)"
        )
    exif = img.getexif()
    orientation = exif.get(0x0112, 1)
    if fmt == "JPEG" and min_side:
        # Draft keeps both sides >= the requested size; rotation does not change that.
        scale = min(width, height) / min_side
        if scale >= 2:
            img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
    img.load()
    image = ImageOps.exif_transpose(img) or img
    if image.mode != "RGB":
        image = _to_rgb(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    sub = exif.get_ifd(_EXIF_IFD)
    meta = ImageMeta(
        width=width,
        height=height,
        format=fmt,
        taken_at=_parse_exif_time(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)),
        camera_make=_clean(exif.get(_TAG_MAKE)),
        camera_model=_clean(exif.get(_TAG_MODEL)),
    )
    return LoadedImage(image=image, meta=meta)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white rather than letting it turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 \t\r\n")
    return text[:128] or None


def _parse_exif_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
