"""Decode one image safely: format check, bomb guard, draft mode, EXIF orientation, RGB.

Every failure is an :class:`UnsupportedImage` or :class:`ImageTooLarge` with a reason
a person can act on; nothing here raises anything else for bad input, whatever Pillow
raises inside (``struct.error`` from a malformed EXIF block, ``MemoryError``, ...).
Broken metadata with readable pixels is not a failure: the image loads without it.

Cost is bounded by what the caller needs (``min_side``), not by the file: absurd aspect
ratios are refused from the header before any pixel is decoded, JPEGs decode reduced
(draft mode) and anything larger than needed is reduced right after decoding, so a
model's preprocessing never resizes millions of pixels.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError, features
from pillow_heif import register_heif_opener

from image_search_service.core.errors import ImageShapeRefused, ImageTooLarge, UnsupportedImage

logger = logging.getLogger(__name__)

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


def describe_formats() -> str:
    """The supported formats for a person: "JPEG, PNG, WebP, HEIC, ... or TIFF"."""
    names = {"WEBP": "WebP", "HEIF": "HEIC"}
    shown = [names.get(f, f) for f in _FORMATS]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


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
# Longer side / shorter side. Phone panoramas reach about 10:1; past this a model's
# preprocessing (resize the short side to ~224 px) would produce millions of pixels.
MAX_ASPECT_RATIO = 20

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL = 0x010F, 0x0110
_TAG_DATETIME, _TAG_DATETIME_ORIGINAL = 0x0132, 0x9003
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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
    with _failures_as_reasons(name, max_pixels), _opened(source, name, max_pixels) as img:
        return _decode(img, source=source, name=name, max_pixels=max_pixels, min_side=min_side)


@dataclass(frozen=True)
class JpegFile:
    """A JPEG's bytes, checked and described from its header, not decoded: for a decoder
    elsewhere (nvJPEG on a GPU, see encoders/device_decode.py)."""

    data: bytes
    meta: ImageMeta  # width and height after the orientation
    orientation: int  # EXIF orientation (1-8) the decoder must still apply


def read_jpeg(path: Path, *, max_pixels: int) -> JpegFile | None:
    """``path``'s bytes when it is a plain RGB or greyscale JPEG that passes every check
    :func:`load_image` makes from the header; None for any other image (decode it with
    :func:`load_image`); the same errors as :func:`load_image` for a refused file."""
    name = path.name
    with _failures_as_reasons(name, max_pixels):
        data = path.read_bytes()  # once: the header checked is the header decoded
        if not data:
            raise UnsupportedImage(f"{name}: empty file (0 bytes)")
        with _opened(data, name, max_pixels) as img:
            fmt, width, height = _check_header(img, name=name, max_pixels=max_pixels)
            if fmt != "JPEG" or img.mode not in ("RGB", "L"):
                return None  # MPO, CMYK and the rest: the CPU decoder's special cases
            exif = _read_exif(img, name)
            orientation = exif.get(0x0112, 1) if exif is not None else 1
            if orientation not in range(1, 9):
                orientation = 1
            if orientation != 1 and not _transposable(img):
                return None  # the CPU path keeps such a photo as stored: it decides
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            meta = _meta(exif, name, width=width, height=height, fmt=fmt)
        if not data[-64:].rstrip(b"\0").endswith(b"\xff\xd9"):
            # No end-of-image marker: truncated (or data after the picture). The CPU
            # decoder judges it; a GPU decoder may fill the missing rows silently.
            return None
        return JpegFile(data, meta, orientation)


def _transposable(img: Image.Image) -> bool:
    """Whether ``ImageOps.exif_transpose`` can rewrite this file's EXIF (it raises on
    some malformed blocks, and :func:`load_image` then keeps the photo unrotated)."""
    try:
        exif = Image.Exif()  # parsed afresh, as exif_transpose does: the image's stays
        exif.load(img.info.get("exif", b""))
        exif.pop(0x0112, None)
        exif.tobytes()
    except Exception:
        return False
    return True


@contextmanager
def _opened(source: Path | bytes, name: str, max_pixels: int) -> Iterator[Image.Image]:
    if isinstance(source, Path) and source.stat().st_size == 0:
        raise UnsupportedImage(f"{name}: empty file (0 bytes)")
    if isinstance(source, bytes) and not source:
        raise UnsupportedImage("empty upload (0 bytes)")
    fp = source if isinstance(source, Path) else io.BytesIO(source)
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        # Pillow refuses at open past twice its own limit (179 MP by default), which
        # would cap MAX_IMAGE_PIXELS there; ours is checked from the header.
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        # Pillow warns before it errors on bombs; we enforce our own limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(fp) as img:
            yield img


@contextmanager
def _failures_as_reasons(name: str, max_pixels: int) -> Iterator[None]:
    """Whatever reading one file raises, as an :class:`UnsupportedImage` or
    :class:`ImageTooLarge` with a reason a person can act on."""
    try:
        yield
    except (UnsupportedImage, ImageTooLarge):
        raise
    except MemoryError:
        raise ImageTooLarge(f"{name}: not enough memory to decode this image") from None
    except Image.DecompressionBombError:  # Pillow's own check, at open: far past ours
        raise ImageTooLarge(
            f"{name}: refused as a possible decompression bomb: far more pixels than "
            f"{max_pixels:,} (MAX_IMAGE_PIXELS)"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedImage(
            f"{name}: not a supported image file (supported: {describe_formats()})"
        ) from None
    except FileNotFoundError:
        raise UnsupportedImage(f"{name}: file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError or SyntaxError.
        raise UnsupportedImage(f"{name}: corrupt or truncated image ({exc})") from None
    except Exception as exc:
        # Any other exception while reading one file (struct.error, IndexError,
        # ZeroDivisionError deep in a plugin) is that file's failure, never the caller's.
        raise UnsupportedImage(f"{name}: unreadable image ({type(exc).__name__}: {exc})") from None


def _check_header(img: Image.Image, *, name: str, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) from the header, or the reason the file is refused
    before any pixel is decoded."""
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
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageShapeRefused(
            f"{name}: {width}x{height} is too elongated (longer side more than "
            f"{MAX_ASPECT_RATIO} times the shorter); crop it first"
        )
    return fmt, width, height


def _decode(
    img: Image.Image,
    *,
    source: Path | bytes,
    name: str,
    max_pixels: int,
    min_side: int | None,
) -> LoadedImage:
    fmt, width, height = _check_header(img, name=name, max_pixels=max_pixels)
    exif = _read_exif(img, name)
    orientation = exif.get(0x0112, 1) if exif is not None else 1
    image: Image.Image | None = None
    # MPO's first frame is a plain JPEG at the start of the file: same fast path.
    if fmt in ("JPEG", "MPO") and min_side and min(width, height) >= 2 * min_side:
        # DCT scaling straight towards the model's input size (both sides stay >= it;
        # rotation does not change that): libjpeg-turbo through simplejpeg, measured
        # faster than Pillow's draft mode (docs/performance.md), which stays the fallback
        # for what simplejpeg cannot decode (CMYK, odd files: Pillow then gives the reason).
        data = source if isinstance(source, bytes) else source.read_bytes()
        image = decode_jpeg_scaled(data, width=width, height=height, min_side=min_side)
        if image is not None and orientation in _ORIENT:
            image = image.transpose(_ORIENT[orientation])
        if image is None:
            scale = min(width, height) / min_side
            img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
    if image is None:
        img.load()
        image = img
        if orientation != 1:
            try:
                image = ImageOps.exif_transpose(img) or img
            except Exception as exc:  # a malformed EXIF block: keep the pixels, drop the metadata
                logger.info("%s: EXIF orientation ignored (%s: %s)", name, type(exc).__name__, exc)
                image, exif, orientation = img, None, 1
    if min_side:
        image = _reduce(image, min_side)
    if image.mode != "RGB":
        image = _to_rgb(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return LoadedImage(image=image, meta=_meta(exif, name, width=width, height=height, fmt=fmt))


def _read_exif(img: Image.Image, name: str) -> Image.Exif | None:
    try:
        return img.getexif()
    except Exception as exc:  # broken metadata never costs the photo
        logger.info("%s: EXIF ignored (%s: %s)", name, type(exc).__name__, exc)
        return None


def _meta(exif: Image.Exif | None, name: str, *, width: int, height: int, fmt: str) -> ImageMeta:
    taken_at = make = model = None
    if exif is not None:
        try:
            sub = exif.get_ifd(_EXIF_IFD)
            taken_at = _parse_exif_time(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME))
            make, model = _clean(exif.get(_TAG_MAKE)), _clean(exif.get(_TAG_MODEL))
        except Exception as exc:
            logger.info("%s: EXIF ignored (%s: %s)", name, type(exc).__name__, exc)
            taken_at = make = model = None
    return ImageMeta(
        width=width,
        height=height,
        format=fmt,
        taken_at=taken_at,
        camera_make=make,
        camera_model=model,
    )


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Shrink by a whole factor (box filter, cheap) while the shorter side stays at
    least twice ``min_side``: what a format without draft mode (PNG, WebP) decoded at
    full size costs the model's preprocessing is then bounded by the model."""
    factor = min(image.size) // (2 * min_side)
    if factor < 2:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I", "F"):
        image = _to_rgb(image)
    return image.reduce(factor)


def decode_jpeg_scaled(
    data: bytes, *, width: int, height: int, min_side: int, fast: bool = False
) -> Image.Image | None:
    """Decode at the smallest DCT scale whose shorter side is still >= ``min_side``
    (EXIF orientation not applied); None when simplejpeg cannot decode the file."""
    import simplejpeg

    scale = min(width, height) / min_side
    try:
        array = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            fastdct=fast,
            fastupsample=fast,
            min_width=math.ceil(width / scale),
            min_height=math.ceil(height / scale),
        )
    except (ValueError, OSError):
        return None
    return Image.fromarray(array, "RGB")


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
