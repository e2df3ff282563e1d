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

from benchmark_photos import make_photo
from benchmark_runtimes import add_runtime_arguments, forward_only, load_runtimes

from image_search_service.context import open_context
from image_search_service.services.library.index import index_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", choices=["folder", "s3"], default="folder")
    parser.add_argument("--images", type=int, default=None, help="32 (folder), 200 (s3)")
    parser.add_argument("--width", type=int, default=None, help="4000 (folder), 2000 (s3)")
    parser.add_argument("--height", type=int, default=None, help="3000 (folder), 1500 (s3)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="alternated passes: 2 (folder), 3 (s3)"
    )
    parser.add_argument("--e2e-torch", action="store_true", help="also index with PyTorch")
    add_runtime_arguments(parser)
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

        runtimes = load_runtimes(root, args, key="clip", model_name="ViT-B-32", torch_first=True)
        default, plan, encoders = runtimes.default, runtimes.plan, runtimes.encoders
        registries, load_s = runtimes.registries, runtimes.load_s
        tensors = runtimes.preprocessed(files)
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
                ("torch", runtimes.settings("torch", data="data-torch"), registries["torch-fp32"])
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
