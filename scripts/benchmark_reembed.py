"""Re-embedding benchmark: PyTorch eager vs the ONNX runtime, and the real job body.

Registers generated 1-2 megapixel JPEGs, then re-embeds them with the
ViT-B-16-SigLIP architecture (random weights, SIGLIP_PRETRAINED=random, seeded: the
same compute as the trained model and the same weights in every runtime, no download)
through the real job body - decode, encode, upsert to the embedded store, per-asset DB
state - in the in-process runner, with the default settings (ONNX Runtime, the default
precision, threads chosen for the cores). Prints from one run, as images/s and as ratios
to PyTorch eager: the image tower forward-only with PyTorch eager fp32 and with ONNX
Runtime fp32 and INT8, and the re-embedding rate (target >= 3x PyTorch eager).
Only the image tower runs: SigLIP's text tokenizer is never loaded.

    python scripts/benchmark_reembed.py [--images 48] [--batch-size 16] [--job-size 64]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from benchmark_photos import make_photo
from benchmark_runtimes import add_runtime_arguments, forward_only, load_runtimes
from PIL import Image

from image_search_service.context import open_context
from image_search_service.db import repository as repo
from image_search_service.services.library.index import index_paths
from image_search_service.services.reembed.runner import run_in_process


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--job-size", type=int, default=64, help="asset ids per job")
    parser.add_argument("--rounds", type=int, default=1, help="forward-only passes per side")
    add_runtime_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lib = root / "photos"
        lib.mkdir()
        print(f"generating {args.images} JPEGs of 1-2 MP ...", flush=True)
        files = [lib / f"photo_{i:03d}.jpg" for i in range(args.images)]
        for i, path in enumerate(files):
            rng = random.Random(i)
            make_photo(path, i, (rng.randrange(1200, 1700), rng.randrange(900, 1150)))
        megapixels = [w * h / 1e6 for w, h in (Image.open(f).size for f in files)]
        mb = sum(f.stat().st_size for f in files) / 1e6

        runtimes = load_runtimes(
            root, args, key="siglip", model_name="ViT-B-16-SigLIP", torch_first=False
        )
        default, plan, encoders = runtimes.default, runtimes.plan, runtimes.encoders
        registries, load_s = runtimes.registries, runtimes.load_s
        tensors = runtimes.preprocessed(files)
        print(
            f"{plan.cores} cores: {plan.model_threads} model threads, {plan.decode_workers} "
            f"decode threads; files {mb:.0f} MB, {min(megapixels):.2f}-{max(megapixels):.2f} "
            "MP; load+export s: " + ", ".join(f"{k} {v:.1f}" for k, v in load_s.items()),
            flush=True,
        )
        for enc in encoders.values():
            forward_only(enc, tensors[: args.batch_size], args.batch_size)  # warm-up
        forward: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.rounds):
            for name, enc in encoders.items():
                forward[name].append(forward_only(enc, tensors, args.batch_size))

        ctx = open_context(default, encoders=registries[f"onnx-{default.encoder_precision}"])
        try:
            # Register the assets without embedding them: the library before a migration.
            index_paths(ctx, [lib], model_keys=[])
            ctx.store.ensure_collection(ctx.collection_spec("siglip"))
            with ctx.session_factory() as session:
                ids = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
            started = time.perf_counter()
            report = run_in_process(ctx, "siglip", ids, job_size=args.job_size)
            reembed = report.done / (time.perf_counter() - started)
            points = ctx.store.count(ctx.spec("siglip").collection)
        finally:
            ctx.close()
        for _ in range(args.rounds):
            for name, enc in reversed(encoders.items()):
                forward[name].append(forward_only(enc, tensors, args.batch_size))

    fwd = {name: sum(v) / len(v) for name, v in forward.items()}
    eager = fwd["torch-fp32"]
    own = fwd[f"onnx-{default.encoder_precision}"]
    figures = {
        "images": args.images,
        "batch_size": args.batch_size,
        "job_size": args.job_size,
        "cores": plan.cores,
        "model_threads": plan.model_threads,
        "decode_workers": plan.decode_workers,
        "default_runtime": f"onnx-{default.encoder_precision}",
        "reembedded": report.done,
        "failed": report.failed,
        "points": points,
        "forward_images_per_s": {k: round(v, 2) for k, v in fwd.items()},
        "forward_ratio_to_eager": {k: round(v / eager, 2) for k, v in fwd.items()},
        "reembed_images_per_s": round(reembed, 2),
        "reembed_ratio_to_eager_forward": round(reembed / eager, 2),
        "reembed_ratio_to_own_forward": round(reembed / own, 2),
        "load_and_export_s": {k: round(v, 1) for k, v in load_s.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"re-embedded {report.done} (failed {report.failed}), {points} points")
    print(f"forward only (images/s, mean of {2 * args.rounds} passes):")
    for name, value in fwd.items():
        print(f"  {name:11s}: {value:7.2f}  ({value / eager:.2f}x PyTorch eager)")
    print(
        f"re-embedding jobs ({figures['default_runtime']}): {reembed:7.2f} images/s = "
        f"{reembed / eager:.2f}x PyTorch eager forward-only (target >= 3x); "
        f"{reembed / own:.2f} of its own forward-only"
    )


if __name__ == "__main__":
    main()
