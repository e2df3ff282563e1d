"""Export-rewrite benchmark: an image tower exported plain vs with fused attention.

Exports the image tower of one architecture (random seeded weights: the same compute
as trained ones) twice from the same PyTorch model - the plain TorchScript export and
the export with self-attention rewritten as ONNX Runtime's fused ``MultiHeadAttention``
(``encoders/onnx_rewrites.py``) - quantizes both to INT8 the way the service does, and
times all four on the same batch, passes alternated so that load from other processes
hits each alike. Prints images/s, the fused/plain ratio per precision, and each
export's minimum cosine to PyTorch.

    python scripts/benchmark_export_rewrites.py [--model ViT-B-16-SigLIP] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from image_search_service.core.threads import plan_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16-SigLIP")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="0 = chosen for the cores")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    # After the package (imported above) set OMP_WAIT_POLICY.
    import open_clip
    import torch

    from image_search_service.core.config import Settings
    from image_search_service.encoders import onnx_export
    from image_search_service.encoders.onnx import make_session

    threads = args.threads or plan_threads(Settings(_env_file=None)).model_threads
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    size = model.visual.image_size
    side = int(size if isinstance(size, int) else size[0])
    inputs = torch.randn(args.batch_size, 3, side, side, generator=torch.Generator().manual_seed(1))
    reference = onnx_export._reference(model, "image", inputs)
    sessions: dict[str, Any] = {}
    agreement: dict[str, float] = {}
    fused_layers = 0
    with tempfile.TemporaryDirectory() as tmp:
        for variant, rewrite in (("plain", False), ("fused", True)):
            fp32 = Path(tmp) / f"{variant}.onnx"
            rewrites = onnx_export._export_tower(model, "image", inputs, fp32, rewrite=rewrite)
            if rewrite:
                fused_layers = rewrites["fused_attention"]
            int8 = Path(tmp) / f"{variant}.int8.onnx"
            onnx_export._quantize(fp32, int8)
            for precision, path in (("fp32", fp32), ("int8", int8)):
                name = f"{variant}-{precision}"
                sessions[name] = make_session(path, threads=threads)
                (out,) = sessions[name].run(None, {"input": inputs.numpy()})
                agreement[name] = onnx_export.min_cosine(np.asarray(out), reference)
    pixels = np.ascontiguousarray(inputs.numpy())
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(None, {"input": pixels})  # warm-up
    for _ in range(args.rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {"input": pixels})
            rates[name].append(args.batch_size / (time.perf_counter() - started))
    median = {name: statistics.median(v) for name, v in rates.items()}
    figures = {
        "model": args.model,
        "threads": threads,
        "batch_size": args.batch_size,
        "fused_attention_layers": fused_layers,
        "images_per_s": {k: round(v, 2) for k, v in median.items()},
        "fused_vs_plain": {
            p: round(median[f"fused-{p}"] / median[f"plain-{p}"], 2) for p in ("fp32", "int8")
        },
        "min_cosine_to_pytorch": {k: round(v, 7) for k, v in agreement.items()},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{args.model}, batch {args.batch_size}, {threads} threads, "
        f"{fused_layers} attention layers fused; median of {args.rounds} alternated passes:"
    )
    for name, rate in median.items():
        print(f"  {name:11s}: {rate:7.2f} images/s  (min cosine to PyTorch {agreement[name]:.7f})")
    for precision, ratio in figures["fused_vs_plain"].items():
        print(f"fused / plain, {precision}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
