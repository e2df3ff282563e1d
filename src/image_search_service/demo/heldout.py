"""A held-out evaluation set for search quality (scripts/benchmark_quality.py).

Drawn independently of the generator the demo models were trained on (demo/synthetic.py):
its own renderer, shades, gradient backgrounds (training used plain ones), shape sizes
outside the training range and positions anywhere in the centred square; and captions
written the way people write them, with other words ("a crimson ring", "an emerald
box"), on only some of the photos, so the image space, the captions' words and their
meaning each have something to find that the others miss.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from image_search_service.demo.library import xmp_packet
from image_search_service.demo.synthetic import COLOURS, SHAPES

# Other shades than the training palette's, still plainly the named colour.
SHADES: dict[str, tuple[int, int, int]] = {
    "red": (196, 22, 48),
    "green": (60, 170, 40),
    "blue": (20, 60, 190),
    "yellow": (235, 225, 60),
    "orange": (235, 115, 40),
    "purple": (115, 40, 160),
    "white": (238, 238, 232),
    "black": (28, 24, 30),
}
# How captions name colours and shapes: mostly other words than a query would use.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet", "red"),
    "green": ("emerald", "lime"),
    "blue": ("navy", "azure"),
    "yellow": ("golden", "lemon"),
    "orange": ("tangerine",),
    "purple": ("violet", "lilac"),
    "white": ("ivory", "snow-white"),
    "black": ("ebony",),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("ring", "disc", "circle"),
    "square": ("box", "block"),
    "triangle": ("pyramid", "triangle"),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
}
SETTINGS = ("on the kitchen table", "at the seaside", "in the garden", "by the window", "")
CAPTIONED_SHARE = 0.7
SIZE_RANGE = (140, 420)


@dataclass(frozen=True)
class HeldOutPhoto:
    path: Path
    labels: frozenset[str]  # "red circle", ...: what is drawn
    caption: str | None  # what its owner wrote, if anything


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float) -> list[tuple[float, float]]:
        return [
            (
                cx + radius * math.cos(offset + turn + 2 * math.pi * i / n),
                cy + radius * math.sin(offset + turn + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]

    if shape == "circle":
        return ring(48, r, 0.0)
    if shape == "square":
        return ring(4, r * 1.2, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.15, -math.pi / 2)
    if shape == "star":
        outer, inner = ring(5, r * 1.1, -math.pi / 2), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    # cross: a plus of two bars, as one outline
    a, b = r * 0.35, r * 1.05
    points = [
        (a, b),
        (a, a),
        (b, a),
        (b, -a),
        (a, -a),
        (a, -b),
        (-a, -b),
        (-a, -a),
        (-b, -a),
        (-b, a),
        (-a, a),
        (-a, b),
    ]
    c, s = math.cos(turn), math.sin(turn)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _background(
    rng: random.Random, size: tuple[int, int], avoid: list[tuple[int, int, int]]
) -> Image.Image:
    """A vertical gradient between two colours far enough in brightness from every
    shape (the demand is eased when two shapes leave no such band, e.g. green and yellow)."""
    attempt = 0
    while True:
        needed = max(10.0, 50.0 - attempt // 50 * 10)
        attempt += 1
        top = (rng.randint(40, 220), rng.randint(40, 220), rng.randint(40, 220))
        r, g, b = (min(255, max(0, c + rng.randint(-40, 40))) for c in top)
        bottom = (r, g, b)
        if all(
            min(abs(_luma(top) - _luma(a)), abs(_luma(bottom) - _luma(a))) > needed for a in avoid
        ):
            break
    width, height = size
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / max(1, height - 1)
        column.putpixel(
            (0, y), tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    return column.resize((width, height))


def _caption(rng: random.Random, shapes: list[tuple[str, str]]) -> str:
    parts = []
    for colour, shape in shapes:
        named_colour = rng.random() < 0.8  # some captions leave the colour out
        words = f"{rng.choice(COLOUR_WORDS[colour])} " if named_colour else ""
        phrase = f"{words}{rng.choice(SHAPE_WORDS[shape])}"
        parts.append(f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}")
    return f"{' and '.join(parts)} {rng.choice(SETTINGS)}".strip()


def write_heldout(root: Path, count: int, *, seed: int = 2027) -> list[HeldOutPhoto]:
    """``count`` JPEGs under ``root``, each with its XMP caption (when it has one)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    photos = []
    for index in range(count):
        n = 2 if rng.random() < 0.25 else 1
        shapes = [(rng.choice(COLOURS), rng.choice(SHAPES)) for _ in range(n)]
        size = (rng.randint(*SIZE_RANGE), rng.randint(*SIZE_RANGE))
        colours = [SHADES[c] for c, _ in shapes]
        image = _background(rng, size, colours)
        draw = ImageDraw.Draw(image)
        side = min(size)
        left, top = (size[0] - side) / 2, (size[1] - side) / 2
        for slot, ((_, shape), rgb) in enumerate(zip(shapes, colours, strict=True)):
            # Smaller and larger than the training range (0.15-0.36 of the side).
            small, large = rng.uniform(0.12, 0.16), rng.uniform(0.38, 0.44)
            r = side * (rng.uniform(0.1, 0.14) if n == 2 else rng.choice([small, large]))
            span = (side / n) if n == 2 else side
            lo = slot * span + r * 1.2
            cx = left + rng.uniform(lo, max(lo, (slot + 1) * span - r * 1.2))
            cy = top + rng.uniform(r * 1.2, side - r * 1.2)
            draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.5, 0.5)), fill=rgb)
        caption = _caption(rng, shapes) if rng.random() < CAPTIONED_SHARE else None
        path = root / f"{index:04d}.jpg"
        xmp = xmp_packet((), (), caption) if caption else None
        image.save(path, "JPEG", quality=rng.randint(60, 92), **({"xmp": xmp} if xmp else {}))
        labels = frozenset(f"{c} {s}" for c, s in shapes)
        photos.append(HeldOutPhoto(path, labels, caption))
    return photos
