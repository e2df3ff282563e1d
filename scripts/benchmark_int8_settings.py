"""INT8 quantization settings side by side, on this CPU: agreement with PyTorch and speed.

For each model and each of the INT8 settings in ``encoders/cpu.py`` (U8S8 = today's
signed weights, U8S8 with 7-bit weights (reduce_range), U8U8 = unsigned weights), both
towers are quantized from the same verified fp32 export and checked exactly as the
service checks them (the export's fixed inputs, minimum cosine to PyTorch fp32, refused
below 0.999). Then the forward pass of each tower, batch 8, is timed for PyTorch eager,
ONNX fp32 and each INT8 variant, interleaved round by round (medians), with the same
thread count everywhere. Ratios are within this one run.

On a CPU with VNNI (or ARM) no setting saturates, so the agreement printed here is what
each setting gives on every CPU for U8U8 and reduce_range (neither can saturate
anywhere); U8S8's figure holds only where it does not saturate (not on AVX2/AVX-512
without VNNI).

    python scripts/benchmark_int8_settings.py [--models demo-clip,demo-siglip,ViT-B-32]
        [--batch 8] [--threads 2] [--rounds 9] [--json]

``ViT-B-32`` (any open_clip name) is built with seeded random weights: real compute, but
its agreement says nothing about trained weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.cpu import INT8_SETTINGS, detect_cpu_isa, int8_settings
from image_search_service.encoders.onnx_export import INT8_MIN_COSINE

TOWERS = ("image", "text")


def _spec(name: str) -> ModelSpec:
    key = "siglip" if "siglip" in name.lower() else "clip"
    pretrained = "" if name.startswith("demo-") else "random"
    dim = 768 if name == "demo-siglip" else 512
    return ModelSpec(key, name, pretrained, dim, "bench")  # type: ignore[arg-type]


def _timed(run: Callable[[], Any], rounds: list[float]) -> None:
    """Append one run's milliseconds."""
    started = time.perf_counter()
    run()
    rounds.append((time.perf_counter() - started) * 1000)


def _time_tower(eager: Any, tensor: Any, sessions: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median ms per batch of each runtime, the runtimes interleaved round by round."""
    import torch

    def run_eager() -> None:
        with torch.inference_mode():
            eager(tensor)

    feed = {"input": np.ascontiguousarray(tensor.numpy())}
    runs: dict[str, Callable[[], Any]] = {"torch-fp32": run_eager}
    for key, session in sessions.items():
        runs[key] = functools.partial(session.run, None, feed)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(rounds):
        for key, run in runs.items():
            _timed(run, times[key])
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def measure(name: str, root: Path, *, batch: int, threads: int, rounds: int) -> dict[str, Any]:
    import torch

    from image_search_service.encoders import onnx_export as ox
    from image_search_service.encoders.onnx import make_session
    from image_search_service.encoders.openclip import OpenClipEncoder

    torch.manual_seed(0)  # random weights (ViT-B-32): the same in every run
    encoder = OpenClipEncoder(_spec(name), device="cpu", threads=threads)
    encoder.load()
    torch.set_num_threads(threads)
    model = encoder._model
    assert encoder._preprocess is not None
    assert encoder._image_size is not None
    export = ox.ensure_export(
        model,
        spec=encoder.spec,
        preprocess=encoder._preprocess,
        image_size=encoder._image_size,
        root=root,
        precision="fp32",
    )
    inputs = {
        "image": ox.check_images(encoder._preprocess, encoder._image_size),
        "text": ox.check_tokens(model),
    }
    result: dict[str, Any] = {"agreement": {}, "ms": {}, "ratios": {}}
    for tower in TOWERS:
        reference = ox._reference(model, tower, inputs[tower])
        paths = {"onnx-fp32": export.path(tower, "fp32")}
        cosines = {}
        for settings in INT8_SETTINGS.values():
            path = root / f"{name}.{tower}.{settings.name}.onnx"
            ox._quantize(paths["onnx-fp32"], path, settings)
            paths[f"int8-{settings.name}"] = path
            cosines[settings.name] = round(
                ox.min_cosine(ox._run_onnx(path, inputs[tower]), reference), 6
            )
        result["agreement"][tower] = cosines
        ms = _time_tower(
            ox._Tower(model, tower).eval(),
            inputs[tower][:batch],
            {k: make_session(p, threads=threads) for k, p in paths.items()},
            rounds,
        )
        result["ms"][tower] = ms
        result["ratios"][tower] = {
            k: {
                "vs_fp32": round(ms["onnx-fp32"] / v, 2),
                "vs_eager": round(ms["torch-fp32"] / v, 2),
            }
            for k, v in ms.items()
            if k != "torch-fp32"
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="demo-clip,demo-siglip")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isa = detect_cpu_isa()
    report: dict[str, Any] = {
        "cpu_isa": isa,
        "settings_for_this_cpu": int8_settings(isa).name,
        "settings": {s.name: s.description for s in INT8_SETTINGS.values()},
        "batch": args.batch,
        "threads": args.threads,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            report["models"][name] = measure(
                name, Path(tmp), batch=args.batch, threads=args.threads, rounds=args.rounds
            )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"CPU class {isa} (INT8 settings chosen here: {report['settings_for_this_cpu']}); "
        f"batch {args.batch}, {args.threads} threads, medians of {args.rounds} rounds"
    )
    for name, figures in report["models"].items():
        for tower in TOWERS:
            ms = figures["ms"][tower]
            print(
                f"\n{name} {tower}: torch-fp32 {ms['torch-fp32']} ms, onnx-fp32 "
                f"{ms['onnx-fp32']} ms ({figures['ratios'][tower]['onnx-fp32']['vs_eager']}x eager)"
            )
            for settings, cosine in figures["agreement"][tower].items():
                key = f"int8-{settings}"
                ratio = figures["ratios"][tower][key]
                verdict = "accepted" if cosine >= INT8_MIN_COSINE else "REFUSED"
                print(
                    f"  {settings:18s} min cosine {cosine:.6f} ({verdict})  {ms[key]:7.2f} ms  "
                    f"{ratio['vs_fp32']:.2f}x onnx-fp32  {ratio['vs_eager']:.2f}x eager"
                )


if __name__ == "__main__":
    main()
