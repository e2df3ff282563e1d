"""S3 ingest benchmark: indexing photos from an S3 bucket against the same local folder.

Started by ``scripts/benchmark_ingest.py --source s3``: a moto server on loopback (like
the tests'), the same photos uploaded to it, then alternating rounds of indexing from
the bucket and from the folder, each into a fresh data dir with the same loaded model;
prints per-round ratios and the ratio of medians (target >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmark_photos import make_photo

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths


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
            print(f"runtime: {registry.runtime}; {mb:.0f} MB in bucket and folder")
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
