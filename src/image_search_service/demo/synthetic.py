"""Deterministic synthetic pictures: one or two coloured shapes on a plain background.

The pictures train the tiny demo models (``scripts/train_tiny_models.py``) and give
tests and the offline demo a photo library whose content is known exactly. Every
random choice is drawn from the ``random.Random`` passed in, so a seed reproduces
the same pictures (and, through ``write_library``, the same JPEG bytes).

Shapes are always placed inside the centred square of the picture: CLIP-style
preprocessing resizes the short side and centre-crops, and a shape outside that
square would be invisible to the model although present in the labels.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS: tuple[str, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "white",
    "black",
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

DEFAULT_SIZE_RANGE: tuple[int, int] = (160, 320)

RGB = tuple[int, int, int]

# Base shades; each picture jitters them a little so models cannot key on exact values.
_PALETTE: dict[str, RGB] = {
    "red": (215, 30, 35),
    "green": (35, 155, 55),
    "blue": (35, 75, 215),
    "yellow": (245, 215, 35),
    "orange": (250, 130, 20),
    "purple": (135, 50, 175),
    "white": (248, 248, 248),
    "black": (15, 15, 15),
}
_COLOUR_JITTER = 15
# Minimum RGB distance and brightness (luma) difference between the background
# and every shape colour, so that a shape never melts into its background. Luma
# matters on its own: JPEG keeps colour at half resolution, so a blue shape on a
# grey of equal brightness would lose its outline.
_MIN_BACKGROUND_DISTANCE = 120.0
_MIN_LUMA_DIFFERENCE = 45.0
_MAX_ROTATION_DEGREES = 25.0
_SUBFOLDERS: tuple[str, ...] = ("album-1", "album-2", "album-2/more")


@dataclass(frozen=True)
class ShapeSpec:
    """One coloured shape, e.g. ``ShapeSpec("red", "circle")``."""

    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {COLOURS}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"


ALL_SPECS: tuple[ShapeSpec, ...] = tuple(ShapeSpec(c, s) for c in COLOURS for s in SHAPES)


@dataclass(frozen=True)
class SyntheticPicture:
    """A rendered picture together with what is in it."""

    image: Image.Image
    shapes: tuple[ShapeSpec, ...]
    caption: str

    @property
    def labels(self) -> frozenset[str]:
        """Labels such as ``{"red circle", "blue star"}``."""
        return frozenset(spec.label for spec in self.shapes)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_for(shapes: Sequence[ShapeSpec]) -> str:
    """English caption, e.g. ``"a red circle"`` or ``"a red circle and a blue star"``."""
    if not shapes:
        raise ValueError("a caption needs at least one shape")
    return " and ".join(f"{_article(s.colour)} {s.colour} {s.shape}" for s in shapes)


def _luma(colour: RGB) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def _contrast(a: RGB, b: RGB) -> float:
    """How clearly ``a`` stands out from ``b``; at least 1.0 is clear enough."""
    return min(
        math.dist(a, b) / _MIN_BACKGROUND_DISTANCE,
        abs(_luma(a) - _luma(b)) / _MIN_LUMA_DIFFERENCE,
    )


def _jitter(rng: random.Random, colour: RGB) -> RGB:
    r, g, b = (
        min(255, max(0, channel + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER)))
        for channel in colour
    )
    return (r, g, b)


def _background_colour(rng: random.Random, avoid: Sequence[RGB]) -> RGB:
    """A muted colour that contrasts with every shape colour.

    Saturation stays low so that a background is not itself read as one of the
    vocabulary colours. If no candidate is clear enough (rare), the best of them
    is kept, which keeps this total and deterministic.
    """
    best: RGB = (128, 128, 128)
    best_contrast = -1.0
    for _ in range(60):
        hue, sat, val = rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.98)
        r, g, b = (round(channel * 255) for channel in colorsys.hsv_to_rgb(hue, sat, val))
        candidate = (r, g, b)
        contrast = min(_contrast(candidate, colour) for colour in avoid)
        if contrast >= 1.0:
            return candidate
        if contrast > best_contrast:
            best, best_contrast = candidate, contrast
    return best


def _background(rng: random.Random, width: int, height: int, avoid: Sequence[RGB]) -> Image.Image:
    first = _background_colour(rng, avoid)
    if rng.random() >= 0.35:
        return Image.new("RGB", (width, height), first)
    second = np.array(_background_colour(rng, avoid), dtype=np.float32)
    start = np.array(first, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    else:
        ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(start * (1.0 - ramp) + second * ramp, (height, width, 3))
    return Image.fromarray((pixels + 0.5).astype(np.uint8))


def _outline(shape: str, radius: float) -> list[tuple[float, float]]:
    """Polygon around the origin, y pointing down, spanning about ``radius``."""
    if shape == "square":
        half = radius * 0.8
        return [(-half, -half), (half, -half), (half, half), (-half, half)]
    if shape == "triangle":
        angles = (-90.0, 30.0, 150.0)
        # Shifted down a little: the flat base would otherwise leave the lower part of
        # the circle empty and the triangle would look off-centre.
        return [
            (radius * math.cos(math.radians(a)), radius * math.sin(math.radians(a)) + radius * 0.15)
            for a in angles
        ]
    if shape == "star":
        points = []
        for i in range(10):
            r = radius if i % 2 == 0 else radius * 0.45
            angle = math.radians(-90.0 + 36.0 * i)
            points.append((r * math.cos(angle), r * math.sin(angle)))
        return points
    if shape == "cross":
        a, r = radius * 0.3, radius
        return [
            (-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a),
            (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a),
        ]  # fmt: skip
    raise ValueError(f"no outline for {shape!r}")


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    spec: ShapeSpec,
    colour: RGB,
    centre: tuple[float, float],
    radius: float,
    rotation: float,
) -> None:
    cx, cy = centre
    if spec.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        return
    cos_t, sin_t = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    points = [
        (cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t)
        for x, y in _outline(spec.shape, radius)
    ]
    draw.polygon(points, fill=colour)


def _layout(
    rng: random.Random, count: int, width: int, height: int
) -> list[tuple[tuple[float, float], float]]:
    """Centre and radius for each shape, inside the centred square, not overlapping."""
    side = min(width, height)
    left, top = (width - side) / 2.0, (height - side) / 2.0
    margin = side * 0.04
    if count == 1:
        radius = side * rng.uniform(0.2, 0.36)
        low, high = margin + radius, side - margin - radius
        return [((left + rng.uniform(low, high), top + rng.uniform(low, high)), radius)]
    # Two shapes: one in each half of the square (split left/right or top/bottom).
    placements = []
    horizontal = rng.random() < 0.5
    for half in range(2):
        radius = side * rng.uniform(0.15, 0.21)
        along_low = half * side / 2.0 + margin + radius
        along_high = (half + 1) * side / 2.0 - margin - radius
        along = rng.uniform(along_low, along_high)
        across = rng.uniform(margin + radius, side - margin - radius)
        x, y = (along, across) if horizontal else (across, along)
        placements.append(((left + x, top + y), radius))
    return placements


def render_picture(
    shapes: Sequence[ShapeSpec],
    *,
    rng: random.Random,
    size: tuple[int, int] | None = None,
) -> SyntheticPicture:
    """Draw one or two shapes; ``size`` is (width, height), random when ``None``."""
    if not 1 <= len(shapes) <= 2:
        raise ValueError(f"render_picture draws one or two shapes, got {len(shapes)}")
    if size is None:
        size = (rng.randint(*DEFAULT_SIZE_RANGE), rng.randint(*DEFAULT_SIZE_RANGE))
    width, height = size
    if min(width, height) < 16:
        raise ValueError(f"picture size {size} is too small")

    colours = [_jitter(rng, _PALETTE[spec.colour]) for spec in shapes]
    image = _background(rng, width, height, colours)
    draw = ImageDraw.Draw(image)
    for spec, colour, (centre, radius) in zip(
        shapes, colours, _layout(rng, len(shapes), width, height), strict=True
    ):
        rotation = rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES)
        _draw_shape(draw, spec, colour, centre, radius, rotation)

    if rng.random() < 0.7:
        # Sensor-like noise; seeded from rng so the picture stays reproducible.
        sigma = rng.uniform(2.0, 10.0)
        noise_rng = np.random.default_rng(rng.getrandbits(63))
        noisy = noise_rng.standard_normal((height, width, 3), dtype=np.float32)
        noisy *= sigma
        noisy += np.asarray(image)
        noisy += 0.5  # round, not truncate, in the cast below
        np.clip(noisy, 0.0, 255.0, out=noisy)
        image = Image.fromarray(noisy.astype(np.uint8))

    specs = tuple(shapes)
    return SyntheticPicture(image=image, shapes=specs, caption=caption_for(specs))


def random_picture(
    rng: random.Random,
    *,
    two_shape_probability: float = 0.3,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
) -> SyntheticPicture:
    """A picture of one (or, with the given probability, two different) random shapes."""
    count = 2 if rng.random() < two_shape_probability else 1
    specs = rng.sample(ALL_SPECS, count)
    size = (rng.randint(*size_range), rng.randint(*size_range))
    return render_picture(specs, rng=rng, size=size)


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """Encode and decode as JPEG, as a library photo would be, and return RGB."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def file_stem(index: int, picture: SyntheticPicture, *, width: int = 4) -> str:
    """Readable file name stem, e.g. ``0007_red-circle`` or ``0008_red-circle_blue-star``."""
    parts = "_".join(spec.label.replace(" ", "-") for spec in picture.shapes)
    return f"{index:0{width}d}_{parts}"


def write_library(
    root: Path,
    count: int,
    *,
    seed: int,
    jpeg_quality_range: tuple[int, int] = (70, 95),
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
    two_shape_probability: float = 0.3,
) -> list[tuple[Path, SyntheticPicture]]:
    """Write ``count`` JPEG pictures under ``root`` (spread over a few subfolders).

    Deterministic given ``seed``. Returns each file's path with the picture as
    rendered (before JPEG compression).
    """
    if count < 0:
        raise ValueError("count must not be negative")
    rng = random.Random(seed)
    width = max(4, len(str(max(count - 1, 0))))
    written: list[tuple[Path, SyntheticPicture]] = []
    for index in range(count):
        picture = random_picture(
            rng, two_shape_probability=two_shape_probability, size_range=size_range
        )
        quality = rng.randint(*jpeg_quality_range)
        folder = root / _SUBFOLDERS[index % len(_SUBFOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{file_stem(index, picture, width=width)}.jpg"
        picture.image.save(path, format="JPEG", quality=quality)
        written.append((path, picture))
    return written
