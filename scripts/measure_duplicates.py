"""Measure the near-duplicate threshold per model on generated copies.

Writes unrelated photo-like pictures, and for some of them the copies a library
collects (a JPEG re-save at quality 60, a half-size copy, a 5% crop, a 3% shifted
crop as in a burst), indexes them with each model, runs ``find_duplicates`` at a
range of thresholds and prints pair precision and recall (a pair counts when both
photos land in one group). The best threshold is the lowest one with precision 1.0.

    python scripts/measure_duplicates.py [--originals 80] [--with-copies 30]
        [--clip demo-clip] [--siglip demo-siglip] [--clip-pretrained openai] ...
"""

from __future__ import annotations

import argparse
import io
import itertools
import tempfile
from pathlib import Path

from benchmark_photos import make_photo
from PIL import Image

from image_search_service.context import open_context
from image_search_service.core.config import ModelKey, Settings
from image_search_service.services.library.duplicates import find_duplicates
from image_search_service.services.library.index import index_paths

THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=60)
    dx, dy = w * 3 // 100, h * 3 // 100
    return {
        "resave": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "half": image.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
        "crop": image.crop((w // 20, h // 20, w - w // 20, h - h // 20)),
        "burst": image.crop((dx, dy, w, h)).resize((w, h), Image.Resampling.BILINEAR),
    }


def write_set(root: Path, originals: int, with_copies: int) -> set[frozenset[str]]:
    """The files, and the true near-duplicate pairs (by file name)."""
    root.mkdir(parents=True)
    pairs: set[frozenset[str]] = set()
    for seed in range(originals):
        path = root / f"p{seed:03d}.jpg"
        make_photo(path, seed + 1000, (640, 480))
        if seed < with_copies:
            image = Image.open(path).convert("RGB")
            names = [path.name]
            for kind, copy in copies(image).items():
                name = f"p{seed:03d}_{kind}.jpg"
                copy.save(root / name, "JPEG", quality=88)
                names.append(name)
            pairs.update(frozenset(p) for p in itertools.combinations(names, 2))
    return pairs


def measure(settings: Settings, key: ModelKey, library: Path, truth: set[frozenset[str]]) -> None:
    ctx = open_context(settings)
    try:
        index_paths(ctx, [library], model_keys=[key])
        print(f"\n{key}: {ctx.spec(key).model_name}")
        print("threshold  precision  recall  groups")
        for threshold in THRESHOLDS:
            report = find_duplicates(ctx, model=key, threshold=threshold, limit=10_000)
            found: set[frozenset[str]] = set()
            for group in report.groups:
                names = [Path(m.path).name for m in group.members]
                found.update(frozenset(p) for p in itertools.combinations(names, 2))
            hits = len(found & truth)
            precision = hits / len(found) if found else 1.0
            recall = hits / len(truth) if truth else 1.0
            print(f"{threshold:9.2f}  {precision:9.3f}  {recall:6.3f}  {len(report.groups):6d}")
    finally:
        ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=80)
    parser.add_argument("--with-copies", type=int, default=30)
    parser.add_argument("--clip", default="demo-clip")
    parser.add_argument("--siglip", default="demo-siglip")
    parser.add_argument("--clip-pretrained", default="")
    parser.add_argument("--siglip-pretrained", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth = write_set(root / "lib", args.originals, args.with_copies)
        files = len(list((root / "lib").iterdir()))
        print(f"{files} files, {args.originals} originals, {len(truth)} true pairs")
        settings = Settings(
            data_dir=root / "data",
            clip_model_name=args.clip,
            clip_pretrained=args.clip_pretrained,
            siglip_model_name=args.siglip,
            siglip_pretrained=args.siglip_pretrained,
            _env_file=None,
        )
        for key in ("clip", "siglip"):
            measure(settings, key, root / "lib", truth)


if __name__ == "__main__":
    main()
