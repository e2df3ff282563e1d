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
from typing import TYPE_CHECKING, Any

from benchmark_photos import make_photo
from PIL import Image

from image_search_service.core.config import Settings
from image_search_service.core.specs import model_spec
from image_search_service.core.threads import plan_threads
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image
from image_search_service.jobs.runner import run_in_process
from image_search_service.services.context import open_context
from image_search_service.services.indexing import index_paths
from image_search_service.services.reembed import plan_asset_ids

if TYPE_CHECKING:
    import torch


def forward_only(encoder: OpenClipEncoder, tensors: list[torch.Tensor], batch: int) -> float:
    """images/s of the image tower alone on already decoded, preprocessed tensors."""
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.encode_preprocessed(torch.stack(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--job-size", type=int, default=64, help="asset ids per job")
    parser.add_argument("--rounds", type=int, default=1, help="forward-only passes per side")
    parser.add_argument(
        "--model-cache",
        type=Path,
        help="keep the ONNX exports here between runs (weights are seeded: same export)",
    )
    parser.add_argument("--decode-workers", type=int, default=0, help="0 = chosen for the cores")
    parser.add_argument("--model-threads", type=int, default=0, help="0 = chosen for the cores")
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

        def settings_for(runtime: str, precision: str | None = None) -> Any:
            extra: dict[str, Any] = {"encoder_precision": precision} if precision else {}
            return Settings(
                _env_file=None,
                data_dir=root / "data",
                model_cache_dir=args.model_cache or root / "models",
                decode_workers=args.decode_workers,
                model_threads=args.model_threads,
                siglip_model_name="ViT-B-16-SigLIP",
                siglip_pretrained="random",
                batch_size=args.batch_size,
                device="cpu",
                encoder_runtime=runtime,
                **extra,
            )

        default = settings_for("onnx")
        other = "fp32" if default.encoder_precision == "int8" else "int8"
        plan = plan_threads(default)
        registries = {
            f"onnx-{default.encoder_precision}": EncoderRegistry.from_settings(default),
            f"onnx-{other}": EncoderRegistry.from_settings(settings_for("onnx", other)),
            "torch-fp32": EncoderRegistry.from_settings(settings_for("torch")),
        }
        encoders: dict[str, OpenClipEncoder] = {}
        load_s: dict[str, float] = {}
        for name, registry in registries.items():
            torch.manual_seed(0)  # random weights, but the same in every runtime
            encoders[name] = registry.get(model_spec(default, "siglip"))
            started = time.perf_counter()
            encoders[name].load()
            load_s[name] = time.perf_counter() - started
            assert encoders[name].runtime == name, (name, encoders[name].runtime)
        size = encoders["torch-fp32"].image_size
        tensors = [
            encoders["torch-fp32"].preprocess(
                load_image(f, max_pixels=default.max_image_pixels, min_side=size).image
            )
            for f in files
        ]
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
                ids = plan_asset_ids(session, ctx.spec("siglip"))
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
