"""Photo-like JPEGs for the benchmarks: real decoding work, not flat colour."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


def make_photo(path: Path, seed: int, size: tuple[int, int]) -> None:
    """Blurred shapes plus sensor-like noise, saved at JPEG quality 90."""
    rng = random.Random(seed)
    small = Image.new("RGB", (size[0] // 8, size[1] // 8))
    draw = ImageDraw.Draw(small)
    max_radius = max(8, min(small.size) // 3)
    for _ in range(40):
        x, y = rng.randrange(small.width), rng.randrange(small.height)
        r = rng.randrange(4, max_radius)
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    big = small.resize(size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise(size, 24).convert("RGB")
    Image.blend(big, noise, 0.15).save(path, "JPEG", quality=90)
