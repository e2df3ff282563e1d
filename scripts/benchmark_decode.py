"""Decoding benchmark: 12-MP JPEGs to the model's input scale, Pillow draft vs simplejpeg.

All but "full" decode with libjpeg-turbo's DCT scaling (1/2, 1/4, 1/8) straight towards
the model's input size (load_image uses "simplejpeg scaled"; "fast" adds its fast
integer DCT and upsampling); this prints the median ms per image of each, interleaved over the
same files, and the ratios to Pillow's draft mode.

    python scripts/benchmark_decode.py [--images 8] [--size 224] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmark_photos import make_photo
from PIL import Image

from image_search_service.images.loading import decode_jpeg_scaled


def pillow_full(path: Path, size: int) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def pillow_draft(path: Path, size: int) -> Image.Image:
    with Image.open(path) as img:
        scale = min(img.size) / size
        img.draft("RGB", (int(img.width / scale), int(img.height / scale)))
        return img.convert("RGB")


def simplejpeg_scaled(path: Path, size: int, *, fast: bool = False) -> Image.Image:
    data = path.read_bytes()
    with Image.open(path) as img:  # the header, as load_image reads it anyway
        width, height = img.size
    image = decode_jpeg_scaled(data, width=width, height=height, min_side=size, fast=fast)
    assert image is not None
    return image


def simplejpeg_fast(path: Path, size: int) -> Image.Image:
    return simplejpeg_scaled(path, size, fast=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    methods: dict[str, Callable[[Path, int], Image.Image]] = {
        "pillow full": pillow_full,
        "pillow draft": pillow_draft,
        "simplejpeg scaled": simplejpeg_scaled,
        "simplejpeg fast": simplejpeg_fast,
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.images):
            path = Path(tmp) / f"p{i}.jpg"
            make_photo(path, i, (4000, 3000))
            files.append(path)
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for path in files:
                for name, fn in methods.items():
                    started = time.perf_counter()
                    out = fn(path, args.size)
                    times[name].append(time.perf_counter() - started)
                    assert min(out.size) >= args.size
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    for name, value in ms.items():
        print(f"{name:18s}: {value:6.1f} ms/image (median)")
    draft = ms["pillow draft"]
    print(f"ratio pillow draft / simplejpeg scaled: {draft / ms['simplejpeg scaled']:.2f}")
    print(f"ratio pillow draft / simplejpeg fast  : {draft / ms['simplejpeg fast']:.2f}")


if __name__ == "__main__":
    main()
