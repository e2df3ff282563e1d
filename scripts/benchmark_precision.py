"""Does a runtime or precision change search results? Held-out precision of the shipped demo
models per runtime (PyTorch fp32, ONNX fp32, ONNX INT8), and recall@10 of each against
PyTorch fp32.

The held-out set is the one the demo models' figures use (docs/demo-models.md): 400
pictures from ``write_library`` with seed 1_000_003, sizes 140-360 px, JPEG quality 55-90,
read back from the files with the service's own decoding and preprocessing. Queries are
the 40 single-shape captions. P@10 and R-precision as in scripts/train_tiny_models.py;
recall@10 is |top-10 with this runtime ∩ top-10 with PyTorch| / 10, averaged over the
text queries and over 100 image queries (each picture finding its neighbours).

    python scripts/benchmark_precision.py [--count 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.specs import model_spec
from image_search_service.demo.synthetic import ALL_SPECS, caption_for, write_library
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image

if TYPE_CHECKING:
    pass

RUNTIMES = (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))


def _embed(encoder: Encoder, files: list[Path]) -> np.ndarray[Any, Any]:
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    rows = []
    for i in range(0, len(files), 32):
        tensors = [
            encoder.preprocess(load_image(f, max_pixels=10**8, min_side=encoder.image_size).image)
            for f in files[i : i + 32]
        ]
        rows.append(encoder.encode_preprocessed(torch.stack(tensors)))
    return np.concatenate(rows)


def _top(scores: np.ndarray[Any, Any], k: int) -> list[set[int]]:
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = write_library(
            root / "held-out",
            args.count,
            seed=1_000_003,
            jpeg_quality_range=(55, 90),
            size_range=(140, 360),
        )
        files = [path for path, _ in written]
        queries = [caption_for([spec]) for spec in ALL_SPECS]
        relevant = np.array(
            [[spec.label in pic.labels for _, pic in written] for spec in ALL_SPECS]
        )
        keys: tuple[ModelKey, ...] = ("clip", "siglip")
        for key in keys:
            per_runtime: dict[str, Any] = {}
            reference: dict[str, list[set[int]]] = {}
            for runtime, precision in RUNTIMES:
                settings = Settings(
                    _env_file=None,
                    data_dir=root / "data",
                    clip_model_name="demo-clip",
                    clip_pretrained="",
                    siglip_model_name="demo-siglip",
                    siglip_pretrained="",
                    encoder_runtime=runtime,
                    encoder_precision=precision,
                )
                encoder = EncoderRegistry.from_settings(settings).get(model_spec(settings, key))
                images = _embed(encoder, files)
                texts = encoder.encode_text(queries)
                text_scores = texts @ images.T
                image_scores = images[:100] @ images.T
                image_scores[np.arange(100), np.arange(100)] = -2.0
                p10, rprec = [], []
                for row in range(len(queries)):
                    count = int(relevant[row].sum())
                    if count == 0:
                        continue
                    hits = relevant[row][np.argsort(-text_scores[row], kind="stable")]
                    p10.append(float(hits[: min(10, count)].mean()))
                    rprec.append(float(hits[:count].mean()))
                tops = {"text": _top(text_scores, 10), "image": _top(image_scores, 10)}
                name = encoder.runtime
                if not reference:
                    reference = tops
                recall = {
                    kind: float(
                        np.mean(
                            [
                                len(a & b) / 10
                                for a, b in zip(tops[kind], reference[kind], strict=True)
                            ]
                        )
                    )
                    for kind in tops
                }
                per_runtime[name] = {
                    "p@10": round(float(np.mean(p10)), 4),
                    "r_precision": round(float(np.mean(rprec)), 4),
                    "recall@10_vs_torch_text": round(recall["text"], 4),
                    "recall@10_vs_torch_image": round(recall["image"], 4),
                }
            report[f"demo-{key}"] = per_runtime
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"held-out pictures: {args.count}; 40 text queries; 100 image queries")
    print(
        f"{'model':12s} {'runtime':10s} {'P@10':>6s} {'R-prec':>6s} {'rec@10 txt':>10s} "
        f"{'rec@10 img':>10s}"
    )
    for model, per_runtime in report.items():
        for name, row in per_runtime.items():
            print(
                f"{model:12s} {name:10s} {row['p@10']:6.3f} {row['r_precision']:6.3f} "
                f"{row['recall@10_vs_torch_text']:10.3f} {row['recall@10_vs_torch_image']:10.3f}"
            )


if __name__ == "__main__":
    main()
