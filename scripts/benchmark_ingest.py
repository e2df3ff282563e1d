"""Ingest benchmark: PyTorch eager vs the ONNX runtime, and end-to-end `index`.

Generates 12-megapixel JPEGs and, with the ViT-B-32 architecture (random weights, seeded:
the same compute as trained ones, and the same weights in every runtime), prints from
one run, each as images/s:

- the model forward pass alone on already decoded, preprocessed images, with PyTorch
  eager fp32 and with ONNX Runtime (fp32 and INT8: the default precision and the other);
- end-to-end ``index`` (scan, hash, decode, encode, upsert, DB) with the default settings
  (ONNX Runtime, ENCODER_PRECISION default, threads chosen for the cores), and with
  ``--e2e-torch`` also with ENCODER_RUNTIME=torch;

and their ratios to the PyTorch eager forward-only rate (targets: end-to-end >= 1.5x
with default settings, >= 2x with INT8). The ONNX export (once per model identity, cached
in production) is timed separately.

    python scripts/benchmark_ingest.py [--images 32] [--batch-size 16] [--e2e-torch]

With ``--source s3`` it compares indexing the same photos from an S3 bucket (a moto
server started on loopback) with indexing them from a local folder instead
(``scripts/benchmark_s3.py``; target >= 0.9):

    python scripts/benchmark_ingest.py --source s3 [--images 200] [--width 2000 --height 1500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark_photos import make_photo

from image_search_service.core.config import Settings
from image_search_service.core.specs import model_spec
from image_search_service.core.threads import plan_threads
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image
from image_search_service.services.context import open_context
from image_search_service.services.indexing import index_paths

if TYPE_CHECKING:
    import torch


def forward_only(encoder: OpenClipEncoder, tensors: list[torch.Tensor], batch: int) -> float:
    """images/s of the image tower alone on already decoded, preprocessed tensors."""
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.encode_preprocessed(torch.stack(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)


def loaded(registry: EncoderRegistry, settings: Settings) -> tuple[OpenClipEncoder, float]:
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    torch.manual_seed(0)  # random weights, but the same in every runtime
    encoder = registry.get(model_spec(settings, "clip"))
    started = time.perf_counter()
    encoder.load()
    return encoder, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", choices=["folder", "s3"], default="folder")
    parser.add_argument("--images", type=int, default=None, help="32 (folder), 200 (s3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=None, help="4000 (folder), 2000 (s3)")
    parser.add_argument("--height", type=int, default=None, help="3000 (folder), 1500 (s3)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternated passes: 2 (folder), 3 (s3)"
    )
    parser.add_argument("--e2e-torch", action="store_true", help="also index with PyTorch")
    parser.add_argument(
        "--model-cache",
        type=Path,
        help="keep the ONNX exports here between runs (weights are seeded: same export)",
    )
    parser.add_argument("--decode-workers", type=int, default=0, help="0 = chosen for the cores")
    parser.add_argument("--model-threads", type=int, default=0, help="0 = chosen for the cores")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    s3 = args.source == "s3"
    args.images = args.images or (200 if s3 else 32)
    args.width = args.width or (2000 if s3 else 4000)
    args.height = args.height or (1500 if s3 else 3000)
    args.rounds = args.rounds or (3 if s3 else 2)
    if s3:
        from benchmark_s3 import compare_s3

        args.workers = args.decode_workers or 2
        compare_s3(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lib = root / "photos"
        lib.mkdir()
        print(f"generating {args.images} JPEGs of {args.width}x{args.height} ...", flush=True)
        files = []
        for i in range(args.images):
            path = lib / f"photo_{i:03d}.jpg"
            make_photo(path, i, (args.width, args.height))
            files.append(path)
        mb = sum(f.stat().st_size for f in files) / 1e6

        def settings_for(runtime: str, precision: str | None = None, data: str = "data") -> Any:
            extra: dict[str, Any] = {"encoder_precision": precision} if precision else {}
            return Settings(
                _env_file=None,
                data_dir=root / data,
                model_cache_dir=args.model_cache or root / "models",  # one for every run
                decode_workers=args.decode_workers,
                model_threads=args.model_threads,
                clip_model_name="ViT-B-32",
                clip_pretrained="random",
                batch_size=args.batch_size,
                device="cpu",
                encoder_runtime=runtime,
                **extra,
            )

        default = settings_for("onnx")
        other = "fp32" if default.encoder_precision == "int8" else "int8"
        plan = plan_threads(default)
        registries = {
            "torch-fp32": EncoderRegistry.from_settings(settings_for("torch")),
            f"onnx-{default.encoder_precision}": EncoderRegistry.from_settings(default),
            f"onnx-{other}": EncoderRegistry.from_settings(settings_for("onnx", other)),
        }
        encoders, load_s = {}, {}
        for name, registry in registries.items():
            encoders[name], load_s[name] = loaded(registry, default)
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
            f"decode threads; files {mb:.0f} MB; load+export s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in load_s.items()),
            flush=True,
        )
        for enc in encoders.values():
            forward_only(enc, tensors[: args.batch_size], args.batch_size)  # warm-up
        forward: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.rounds):  # alternated, so load from others hits all alike
            for name, enc in encoders.items():
                forward[name].append(forward_only(enc, tensors, args.batch_size))

        e2e: dict[str, float] = {}
        runs = [("default", default, registries[f"onnx-{default.encoder_precision}"])]
        if args.e2e_torch:
            runs.append(
                ("torch", settings_for("torch", data="data-torch"), registries["torch-fp32"])
            )
        for label, settings, registry in runs:
            ctx = open_context(settings, encoders=registry)
            try:
                started = time.perf_counter()
                report = index_paths(ctx, [lib], model_keys=["clip"])
                e2e[label] = report.indexed / (time.perf_counter() - started)
                assert report.indexed == args.images, report
            finally:
                ctx.close()
        for _ in range(args.rounds):
            for name, enc in encoders.items():
                forward[name].append(forward_only(enc, tensors, args.batch_size))

    fwd = {name: sum(v) / len(v) for name, v in forward.items()}
    eager = fwd["torch-fp32"]
    figures = {
        "images": args.images,
        "megapixels": args.width * args.height / 1e6,
        "batch_size": args.batch_size,
        "cores": plan.cores,
        "model_threads": plan.model_threads,
        "decode_workers": plan.decode_workers,
        "default_runtime": f"onnx-{default.encoder_precision}",
        "forward_images_per_s": {k: round(v, 2) for k, v in fwd.items()},
        "forward_ratio_to_eager": {k: round(v / eager, 2) for k, v in fwd.items()},
        "index_images_per_s": {k: round(v, 2) for k, v in e2e.items()},
        "index_ratio_to_eager_forward": {k: round(v / eager, 2) for k, v in e2e.items()},
        "index_ratio_to_own_forward": {
            "default": round(e2e["default"] / fwd[f"onnx-{default.encoder_precision}"], 2)
        },
        "load_and_export_s": {k: round(v, 1) for k, v in load_s.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"forward only (images/s, mean of {2 * args.rounds} alternated passes):")
    for name, value in fwd.items():
        print(f"  {name:11s}: {value:7.2f}  ({value / eager:.2f}x PyTorch eager)")
    for label, value in e2e.items():
        what = figures["default_runtime"] if label == "default" else "torch-fp32"
        print(
            f"end-to-end index, {label} ({what}): {value:7.2f} images/s = "
            f"{value / eager:.2f}x PyTorch eager forward-only (target >= 1.5x default, "
            ">= 2x INT8)"
        )
    print(f"end-to-end default / its own forward-only: {figures['index_ratio_to_own_forward']}")


if __name__ == "__main__":
    main()
