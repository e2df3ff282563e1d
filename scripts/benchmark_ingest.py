"""Ingest benchmark: PyTorch eager vs the ONNX runtime, and end-to-end `index`.

Generates 12-megapixel JPEGs and, with the ViT-B-32 architecture (random weights, seeded:
the same compute as trained ones, and the same weights in every runtime), prints from
one run, each as images/s:

- the model forward pass alone on already decoded, preprocessed images, with PyTorch
  eager fp32 and with ONNX Runtime (fp32 and INT8: the default precision and the other);
- end-to-end ``index`` (scan, hash, decode, encode, upsert, DB) with the default settings
  (ONNX Runtime, ENCODER_PRECISION default, threads chosen for the cores), and with
  ``--e2e-torch`` also with ENCODER_RUNTIME=torch;

- the ceilings the end-to-end rate is held to: decode-only and decode+preprocess at the
  chosen decode threads (and at one thread, and in as many worker processes), the
  preprocessing's CPU cost per photo (open_clip's per-image transform against the batch
  preprocessing), and with a CUDA GPU also nvJPEG decode on the GPU and how busy the GPU
  was during ``index``;

and their ratios to the PyTorch eager forward-only rate (targets: end-to-end >= 1.5x
with default settings, >= 2x with INT8) and of end-to-end to the smallest ceiling
(target >= 0.9 on 2 cores). The ONNX export (once per model identity, cached in
production) is timed separately.

    python scripts/benchmark_ingest.py [--images 32] [--batch-size 16] [--e2e-torch]

With ``--gpu`` (a CUDA machine) it measures the GPU path instead, for ``--model``
(ViT-B-32 or ViT-B-16-SigLIP, random weights): the CPU decoders' ceilings, nvJPEG decode
+ resize, the model's forward pass on the GPU (fp32, and in the half precision the
encoder accepted), and end-to-end ``index`` on the GPU with the device lane
(JPEG_DEVICE_DECODE=auto) and without it (off), each with how busy the GPU was
(target: >= 600 images/s for both models, GPU busy >= 50% for SigLIP):

    python scripts/benchmark_ingest.py --gpu --model ViT-B-16-SigLIP --images 1024

With ``--source s3`` it compares indexing the same photos from an S3 bucket (a moto
server started on loopback) with indexing them from a local folder instead
(``scripts/benchmark_s3.py``; target >= 0.9):

    python scripts/benchmark_ingest.py --source s3 [--images 200] [--width 2000 --height 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmark_photos import make_photo
from benchmark_runtimes import (
    add_runtime_arguments,
    forward_only,
    load_runtimes,
    runtime_settings,
)

from image_search_service.context import open_context
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.preprocess import BatchPreprocess
from image_search_service.images.loading import load_image
from image_search_service.services.library.index import index_paths


def _decode(path: Path, min_side: int) -> Any:
    return load_image(path, max_pixels=10**9, min_side=min_side).image


def _decode_prepare(path: Path, min_side: int, prepare: BatchPreprocess) -> Any:
    return prepare(_decode(path, min_side))


def _rate(pool: Executor, fn: Callable[..., Any], files: list[Path], *args: Any) -> float:
    pool.submit(fn, files[0], *args).result()  # warm: imports, a forkserver child's start
    started = time.perf_counter()
    list(pool.map(fn, files, *([a] * len(files) for a in args)))
    return len(files) / (time.perf_counter() - started)


def ceilings(files: list[Path], encoder: Encoder, threads: int) -> dict[str, float]:
    """images/s of decoding alone and decoding + preprocessing, and the preprocessing's
    CPU cost per photo (ms, one thread) with open_clip's transform and the batch one."""
    import torch

    size = encoder.image_size
    prepare = getattr(encoder, "batch_preprocess", None)
    assert prepare is not None, "the batch preprocessing does not serve this model"
    out: dict[str, float] = {}
    for n in sorted({1, threads}):
        with ThreadPoolExecutor(n) as pool:
            out[f"decode_{n}_threads"] = _rate(pool, _decode, files, size)
            out[f"decode_preprocess_{n}_threads"] = _rate(
                pool, _decode_prepare, files, size, prepare
            )
    with ProcessPoolExecutor(threads, mp_context=get_context("forkserver")) as procs:
        out[f"decode_preprocess_{threads}_processes"] = _rate(
            procs, _decode_prepare, files, size, prepare
        )
    images = [_decode(f, size) for f in files]
    transform = encoder._preprocess  # type: ignore[attr-defined]  # open_clip's own
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, run in (
            ("open_clip", lambda: torch.stack([transform(im) for im in images])),
            ("batch", lambda: prepare.batch([prepare(im) for im in images])),
        ):
            run()
            started = time.perf_counter()
            run()
            out[f"preprocess_ms_per_photo_{label}"] = (
                (time.perf_counter() - started) / len(images) * 1e3
            )
    finally:
        torch.set_num_threads(torch_threads)
    return out


def gpu_ceilings(
    files: list[Path], size: int, batch: int, device: str = "cuda"
) -> dict[str, float]:
    """nvJPEG decode (torchvision on the GPU) + resize to the model's size, images/s."""
    import torch
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2.functional import resize

    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]

    def run() -> None:
        for i in range(0, len(datas), batch):
            for image in decode_jpeg(datas[i : i + batch], device=device):
                resize(image, [size], antialias=True)
        if device != "cpu":
            torch.cuda.synchronize()

    run()
    started = time.perf_counter()
    run()
    return {"nvjpeg_decode_resize": len(files) / (time.perf_counter() - started)}


class GpuBusy:
    """Samples the GPU's utilisation (nvidia-smi, else torch.cuda) while running."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import torch

        smi = shutil.which("nvidia-smi")
        if not smi and not torch.cuda.is_available():
            return  # a dry run on a CPU: nothing to sample
        while not self._stop.wait(0.2):
            if smi:
                query = [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
                text = subprocess.run(query, capture_output=True, text=True).stdout
                self.samples.append(float(text.split()[0]) if text.strip() else 0.0)
            else:
                self.samples.append(float(torch.cuda.utilization()))

    def __enter__(self) -> GpuBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0


def gpu_main(args: argparse.Namespace, root: Path, lib: Path, files: list[Path]) -> None:
    """The GPU path's figures (see the module's docstring)."""
    import torch

    from image_search_service.core.config import ModelKey
    from image_search_service.core.specs import model_spec
    from image_search_service.core.threads import plan_threads
    from image_search_service.encoders.registry import EncoderRegistry

    key: ModelKey = "siglip" if "SigLIP" in args.model else "clip"

    def settings(data: str, **update: Any) -> Any:
        base = runtime_settings(
            root,
            args,
            key=key,
            model_name=args.model,
            runtime="torch",
            data=data,
            device=args.gpu_device,
        )
        return base.model_copy(update=update)

    gpu = settings("data-gpu")
    plan = plan_threads(gpu)
    registry = EncoderRegistry.from_settings(gpu)
    torch.manual_seed(0)
    encoder = registry.get(model_spec(gpu, key))
    started = time.perf_counter()
    encoder.load()
    load_s = time.perf_counter() - started
    size = encoder.image_size
    limits = ceilings(files, encoder, plan.decode_workers)
    limits.update(gpu_ceilings(files, size, 64, args.gpu_device))
    prepare = getattr(encoder, "batch_preprocess", None)
    assert prepare is not None
    pixels = [torch.from_numpy(_decode_prepare(f, size, prepare)) for f in files]
    batch = max(args.batch_size, getattr(encoder, "preferred_batch_size", 0))
    forward_only(encoder, pixels[:batch], batch)  # warm-up: kernels, autocast caches
    forward = {encoder.runtime: forward_only(encoder, pixels, batch)}
    half = getattr(encoder, "_autocast", None)
    if half is not None:
        encoder._autocast = None  # type: ignore[attr-defined]
        forward["torch-fp32"] = forward_only(encoder, pixels, batch)
        encoder._autocast = half  # type: ignore[attr-defined]
    e2e: dict[str, float] = {}
    busy: dict[str, float] = {}
    for label, run_settings in (
        ("device lane (auto)", gpu),
        ("CPU decoders only (off)", settings("data-gpu-off", jpeg_device_decode="off")),
    ):
        ctx = open_context(run_settings, encoders=registry)
        try:
            started = time.perf_counter()
            with GpuBusy() as sampler:
                report = index_paths(ctx, [lib], model_keys=[key])
            e2e[label] = report.indexed / (time.perf_counter() - started)
            busy[label] = sampler.mean
            assert report.indexed == len(files), report
        finally:
            ctx.close()
    figures = {
        "model": args.model,
        "images": len(files),
        "cores": plan.cores,
        "decode_workers": plan.decode_workers,
        "batch": batch,
        "runtime": encoder.runtime,
        "half_check": getattr(encoder, "half_check", None),
        "load_s": round(load_s, 1),
        "ceilings": {k: round(v, 2) for k, v in limits.items()},
        "forward_images_per_s": {k: round(v, 1) for k, v in forward.items()},
        "index_images_per_s": {k: round(v, 1) for k, v in e2e.items()},
        "gpu_busy_percent": {k: round(v, 1) for k, v in busy.items()},
    }
    print(json.dumps(figures, indent=2))


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
    parser.add_argument("--gpu", action="store_true", help="measure the GPU path (CUDA)")
    parser.add_argument(
        "--gpu-device", default="cuda", help="with --gpu; cpu for a dry run of the script"
    )
    parser.add_argument(
        "--model", default="ViT-B-32", choices=["ViT-B-32", "ViT-B-16-SigLIP"], help="with --gpu"
    )
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
        if args.gpu:
            gpu_main(args, root, lib, files)
            return

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
        import torch

        cuda = torch.cuda.is_available()
        limits = ceilings(files, encoders["torch-fp32"], plan.decode_workers)
        if cuda:
            limits.update(gpu_ceilings(files, encoders["torch-fp32"].image_size, 64))
        for enc in encoders.values():
            forward_only(enc, tensors[: args.batch_size], args.batch_size)  # warm-up
        forward: dict[str, list[float]] = {name: [] for name in encoders}
        for _ in range(args.rounds):  # alternated, so load from others hits all alike
            for name, enc in encoders.items():
                forward[name].append(forward_only(enc, tensors, args.batch_size))

        e2e: dict[str, float] = {}
        gpu_busy: dict[str, float] = {}
        runs = [("default", default, registries[f"onnx-{default.encoder_precision}"])]
        if args.e2e_torch:
            runs.append(
                ("torch", runtimes.settings("torch", data="data-torch"), registries["torch-fp32"])
            )
        for label, settings, registry in runs:
            ctx = open_context(settings, encoders=registry)
            try:
                started = time.perf_counter()
                with GpuBusy() if cuda else contextlib.nullcontext() as busy:
                    report = index_paths(ctx, [lib], model_keys=["clip"])
                e2e[label] = report.indexed / (time.perf_counter() - started)
                if busy is not None:
                    gpu_busy[label] = busy.mean
                assert report.indexed == args.images, report
            finally:
                ctx.close()
        for _ in range(args.rounds):
            for name, enc in encoders.items():
                forward[name].append(forward_only(enc, tensors, args.batch_size))

    fwd = {name: sum(v) / len(v) for name, v in forward.items()}
    eager = fwd["torch-fp32"]
    own_forward = fwd[f"onnx-{default.encoder_precision}"]
    prepared = limits[f"decode_preprocess_{plan.decode_workers}_threads"]
    smallest = min(prepared, own_forward)
    # On a CPU-only machine decoding and the model take turns on the same cores: the
    # rate both allow together is the harmonic combination, not the smaller one.
    shared = 1.0 / (1.0 / prepared + 1.0 / own_forward)
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
        "ceilings": {k: round(v, 2) for k, v in limits.items()},
        "smallest_ceiling": round(smallest, 2),
        "index_ratio_to_smallest_ceiling": round(e2e["default"] / smallest, 2),
        "shared_cpu_ceiling": round(shared, 2),
        "index_ratio_to_shared_cpu_ceiling": round(e2e["default"] / shared, 2),
        "gpu_busy_percent": {k: round(v, 1) for k, v in gpu_busy.items()},
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
    print(f"ceilings ({plan.decode_workers} decode threads unless said):")
    for name, value in limits.items():
        unit = "ms" if name.startswith("preprocess_ms") else "images/s"
        print(f"  {name:34s}: {value:8.2f} {unit}")
    print(
        f"end-to-end default / smallest ceiling ({smallest:.2f} images/s): "
        f"{figures['index_ratio_to_smallest_ceiling']} (target >= 0.9 on 2 cores, 0.8 on 16); "
        f"/ shared-CPU ceiling ({shared:.2f}): {figures['index_ratio_to_shared_cpu_ceiling']}"
    )
    if gpu_busy:
        print(f"GPU busy during index (%): {figures['gpu_busy_percent']}")


if __name__ == "__main__":
    main()
