"""Ingest benchmark: is decoding hidden behind the model?

Indexes generated 12-megapixel JPEGs with the ViT-B-32 architecture (random
weights: the same compute as trained ones) and prints, from one run, the
end-to-end images/s of `index`, the model-forward-only images/s on the same
images, and their ratio (target >= 0.9 on a 2-core machine).

    python scripts/benchmark_ingest.py [--images 48] [--batch-size 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from benchmark_photos import make_photo

from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image
from image_search_service.services.context import open_context
from image_search_service.services.indexing import index_paths


def forward_only(
    registry: EncoderRegistry, settings: Settings, files: list[Path], batch: int
) -> float:
    """images/s of the model alone on already-decoded, preprocessed tensors."""
    from image_search_service.core.specs import model_spec

    encoder = registry.get(model_spec(settings, "clip"))
    tensors = [
        encoder.preprocess(
            load_image(f, max_pixels=settings.max_image_pixels, min_side=encoder.image_size).image
        )
        for f in files
    ]
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.encode_preprocessed(torch.stack(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lib = root / "photos"
        lib.mkdir()
        print(f"generating {args.images} JPEGs of {args.width}x{args.height} ...")
        files = []
        for i in range(args.images):
            path = lib / f"photo_{i:03d}.jpg"
            make_photo(path, i, (args.width, args.height))
            files.append(path)
        mb = sum(f.stat().st_size for f in files) / 1e6
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            clip_model_name="ViT-B-32",
            clip_pretrained="random",
            batch_size=args.batch_size,
            decode_workers=args.workers,
            device="cpu",
        )
        registry = EncoderRegistry(device="cpu")
        print(f"torch threads: {torch.get_num_threads()}; files: {mb:.0f} MB")
        fwd_before = forward_only(registry, settings, files, args.batch_size)
        ctx = open_context(settings, encoders=registry)
        try:
            started = time.perf_counter()
            report = index_paths(ctx, [lib], model_keys=["clip"])
            e2e = report.indexed / (time.perf_counter() - started)
        finally:
            ctx.close()
        fwd_after = forward_only(registry, settings, files, args.batch_size)
    fwd = (fwd_before + fwd_after) / 2
    print(f"indexed {report.indexed} (failed {report.failed})")
    print(
        f"model forward only : {fwd:6.2f} images/s  "
        f"(before {fwd_before:.2f}, after {fwd_after:.2f})"
    )
    print(f"end-to-end index   : {e2e:6.2f} images/s  (scan, hash, decode, encode, upsert, DB)")
    print(f"ratio end-to-end / forward: {e2e / fwd:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
