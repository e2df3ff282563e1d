"""Re-embedding benchmark: does the job body keep the model busy?

Registers generated 1-2 megapixel JPEGs, then re-embeds them with the
ViT-B-16-SigLIP architecture (random weights, SIGLIP_PRETRAINED=random: the same
compute as the trained model, no download) through the real job body - decode,
encode, upsert to the embedded store, per-asset DB state - in the in-process
runner. Prints, from one run, its images/s, the model's forward-only images/s on
the same images (mean of a pass before and after), and their ratio (target >= 0.9).
Only the image tower runs: SigLIP's text tokenizer is never loaded.

    python scripts/benchmark_reembed.py [--images 100] [--batch-size 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from benchmark_photos import make_photo
from PIL import Image

from image_search_service.core.config import Settings
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.images.loading import load_image
from image_search_service.jobs.runner import run_in_process
from image_search_service.services.context import open_context
from image_search_service.services.indexing import index_paths
from image_search_service.services.reembed import plan_asset_ids


def forward_only(encoder: OpenClipEncoder, tensors: list[torch.Tensor], batch: int) -> float:
    """images/s of the image tower alone on already decoded, preprocessed tensors."""
    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.encode_preprocessed(torch.stack(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--job-size", type=int, default=64, help="asset ids per job")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lib = root / "photos"
        lib.mkdir()
        print(f"generating {args.images} JPEGs of 1-2 MP ...")
        files = [lib / f"photo_{i:03d}.jpg" for i in range(args.images)]
        for i, path in enumerate(files):
            rng = random.Random(i)
            make_photo(path, i, (rng.randrange(1200, 1700), rng.randrange(900, 1150)))
        megapixels = [w * h / 1e6 for w, h in (Image.open(f).size for f in files)]
        mb = sum(f.stat().st_size for f in files) / 1e6
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            siglip_model_name="ViT-B-16-SigLIP",
            siglip_pretrained="random",
            batch_size=args.batch_size,
            decode_workers=args.workers,
            device="cpu",
        )
        ctx = open_context(settings)
        try:
            # Register the assets without embedding them: the library before a migration.
            index_paths(ctx, [lib], model_keys=[])
            ctx.store.ensure_collection(ctx.collection_spec("siglip"))
            encoder = ctx.encoder("siglip")
            started = time.perf_counter()
            encoder.load()
            load_s = time.perf_counter() - started
            tensors = [
                encoder.preprocess(
                    load_image(
                        f, max_pixels=settings.max_image_pixels, min_side=encoder.image_size
                    ).image
                )
                for f in files
            ]
            print(
                f"torch threads: {torch.get_num_threads()}; files: {mb:.0f} MB, "
                f"{min(megapixels):.2f}-{max(megapixels):.2f} MP; model load {load_s:.1f}s"
            )
            forward_only(encoder, tensors[: args.batch_size], args.batch_size)  # warm-up
            fwd_before = forward_only(encoder, tensors, args.batch_size)

            with ctx.session_factory() as session:
                ids = plan_asset_ids(session, ctx.spec("siglip"))
            started = time.perf_counter()
            report = run_in_process(ctx, "siglip", ids, job_size=args.job_size)
            reembed = report.done / (time.perf_counter() - started)
            points = ctx.store.count(ctx.spec("siglip").collection)

            fwd_after = forward_only(encoder, tensors, args.batch_size)
        finally:
            ctx.close()
    fwd = (fwd_before + fwd_after) / 2
    figures = {
        "images": args.images,
        "batch_size": args.batch_size,
        "decode_workers": args.workers,
        "job_size": args.job_size,
        "torch_threads": torch.get_num_threads(),
        "reembedded": report.done,
        "failed": report.failed,
        "points": points,
        "forward_images_per_s": round(fwd, 2),
        "forward_before": round(fwd_before, 2),
        "forward_after": round(fwd_after, 2),
        "reembed_images_per_s": round(reembed, 2),
        "ratio": round(reembed / fwd, 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"re-embedded {report.done} (failed {report.failed}), {points} points")
    print(
        f"model forward only : {fwd:6.2f} images/s  "
        f"(before {fwd_before:.2f}, after {fwd_after:.2f})"
    )
    print(f"re-embedding jobs  : {reembed:6.2f} images/s  (decode, encode, upsert, DB state)")
    print(f"ratio re-embedding / forward: {reembed / fwd:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
