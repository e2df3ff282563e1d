"""Ingest benchmark: is decoding hidden behind the model?

Indexes generated 12-megapixel JPEGs with the ViT-B-32 architecture (random
weights: the same compute as trained ones) and prints, from one run, the
end-to-end images/s of `index`, the model-forward-only images/s on the same
images, and their ratio (target >= 0.9 on a 2-core machine).

    python scripts/benchmark_ingest.py [--images 48] [--batch-size 16] [--workers 2]

With ``--source s3`` it compares indexing the same photos from an S3 bucket (a moto
server started on loopback, like the tests') with indexing them from a local folder,
each into a fresh data dir with the same loaded model, and prints the ratio (target
>= 0.9):

    python scripts/benchmark_ingest.py --source s3 [--images 200] [--width 2000 --height 1500]
"""

from __future__ import annotations

import argparse
import statistics
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


def _settings(root: Path, args: argparse.Namespace) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=root,
        clip_model_name="ViT-B-32",
        clip_pretrained="random",
        batch_size=args.batch_size,
        decode_workers=args.workers,
        device="cpu",
    )


def _index_rate(
    registry: EncoderRegistry, settings: Settings, source: Path | str
) -> tuple[float, int, int]:
    ctx = open_context(settings, encoders=registry)
    try:
        started = time.perf_counter()
        report = index_paths(ctx, [source], model_keys=["clip"])
        return report.indexed / (time.perf_counter() - started), report.indexed, report.failed
    finally:
        ctx.close()


def compare_s3(args: argparse.Namespace) -> None:
    """Index the same photos from a loopback S3 server and from a folder; print the ratio."""
    import os
    import socket
    import subprocess
    import sys

    import boto3
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    credentials = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(credentials)
    try:
        for _ in range(100):
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            lib = root / "photos"
            lib.mkdir()
            print(f"generating {args.images} JPEGs of {args.width}x{args.height} ...")
            for i in range(args.images):
                make_photo(lib / f"photo_{i:03d}.jpg", i, (args.width, args.height))
            s3 = boto3.session.Session().client("s3")
            s3.create_bucket(Bucket="bench")
            for path in sorted(lib.iterdir()):
                s3.upload_file(str(path), "bench", f"photos/{path.name}")
            mb = sum(f.stat().st_size for f in lib.iterdir()) / 1e6
            registry = EncoderRegistry(device="cpu")
            print(f"torch threads: {torch.get_num_threads()}; {mb:.0f} MB in bucket and folder")
            # Warm-up (model load, first batches) outside the timed runs.
            _index_rate(registry, _settings(root / "warm", args), sorted(lib.iterdir())[0])
            folder_rates, s3_rates = [], []
            for run in range(args.rounds):  # alternate, so drift on a busy box hits both
                folder_rates.append(_index_rate(registry, _settings(root / f"f{run}", args), lib))
                s3_rates.append(
                    _index_rate(registry, _settings(root / f"s{run}", args), "s3://bench/photos/")
                )
            folder = statistics.median(r[0] for r in folder_rates)
            bucket = statistics.median(r[0] for r in s3_rates)
            print(
                f"indexed {folder_rates[0][1]} from the folder, {s3_rates[0][1]} from S3 "
                f"(failed {folder_rates[0][2]} / {s3_rates[0][2]})"
            )
            print("folder runs: " + ", ".join(f"{r[0]:.2f}" for r in folder_rates) + " images/s")
            print("S3 runs    : " + ", ".join(f"{r[0]:.2f}" for r in s3_rates) + " images/s")
            pairs = [b[0] / f[0] for f, b in zip(folder_rates, s3_rates, strict=True)]
            print("per-round ratios: " + ", ".join(f"{r:.3f}" for r in pairs))
            print(f"median folder: {folder:6.2f} images/s; median S3: {bucket:6.2f} images/s")
            print(f"ratio S3 / folder (medians): {bucket / folder:.3f}  (target >= 0.9)")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["folder", "s3"], default="folder")
    parser.add_argument("--images", type=int, default=None, help="48 (folder), 200 (s3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=None, help="4000 (folder), 2000 (s3)")
    parser.add_argument("--height", type=int, default=None, help="3000 (folder), 1500 (s3)")
    parser.add_argument("--rounds", type=int, default=3, help="s3: alternating runs of each")
    args = parser.parse_args()
    s3 = args.source == "s3"
    args.images = args.images or (200 if s3 else 48)
    args.width = args.width or (2000 if s3 else 4000)
    args.height = args.height or (1500 if s3 else 3000)
    if s3:
        compare_s3(args)
        return

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
