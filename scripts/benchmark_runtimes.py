"""The model runtimes the ingest and re-embedding benchmarks compare, set up alike.

PyTorch eager fp32 and ONNX Runtime in the default precision and the other one, all
on the same seeded random weights (the same compute as trained ones, no download),
with the threads the service would choose; and the forward-only rate of one of them
on already decoded, preprocessed images.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.specs import model_spec
from image_search_service.core.threads import ThreadPlan, plan_threads
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.loading import load_image

if TYPE_CHECKING:
    import torch

_MODEL_SETTINGS = {"clip": "clip_model_name", "siglip": "siglip_model_name"}
_PRETRAINED_SETTINGS = {"clip": "clip_pretrained", "siglip": "siglip_pretrained"}


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every runtime benchmark takes."""
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--model-cache",
        type=Path,
        help="keep the ONNX exports here between runs (weights are seeded: same export)",
    )
    parser.add_argument("--decode-workers", type=int, default=0, help="0 = chosen for the cores")
    parser.add_argument("--model-threads", type=int, default=0, help="0 = chosen for the cores")


@dataclass
class Runtimes:
    key: ModelKey
    model_name: str
    root: Path
    args: argparse.Namespace
    default: Settings
    plan: ThreadPlan
    registries: dict[str, EncoderRegistry]
    encoders: dict[str, Encoder]
    load_s: dict[str, float]

    @property
    def default_name(self) -> str:
        return f"onnx-{self.default.encoder_precision}"

    def settings(self, runtime: str, precision: str | None = None, data: str = "data") -> Any:
        return runtime_settings(
            self.root,
            self.args,
            key=self.key,
            model_name=self.model_name,
            runtime=runtime,
            precision=precision,
            data=data,
        )

    def preprocessed(self, files: list[Path]) -> list[torch.Tensor]:
        """The files decoded and preprocessed once, for the forward-only passes."""
        eager = self.encoders["torch-fp32"]
        size = eager.image_size
        return [
            eager.preprocess(
                load_image(f, max_pixels=self.default.max_image_pixels, min_side=size).image
            )
            for f in files
        ]


def runtime_settings(
    root: Path,
    args: argparse.Namespace,
    *,
    key: ModelKey,
    model_name: str,
    runtime: str,
    precision: str | None = None,
    data: str = "data",
    device: str = "cpu",
) -> Any:
    extra: dict[str, Any] = {"encoder_precision": precision} if precision else {}
    extra[_MODEL_SETTINGS[key]] = model_name
    extra[_PRETRAINED_SETTINGS[key]] = "random"
    return Settings(
        _env_file=None,
        data_dir=root / data,
        model_cache_dir=args.model_cache or root / "models",  # one for every run
        decode_workers=args.decode_workers,
        model_threads=args.model_threads,
        batch_size=args.batch_size,
        device=device,
        encoder_runtime=runtime,
        **extra,
    )


def load_runtimes(
    root: Path, args: argparse.Namespace, *, key: ModelKey, model_name: str, torch_first: bool
) -> Runtimes:
    """Every runtime's encoder, loaded (and exported, unless cached), with its load time."""
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    def settings(runtime: str, precision: str | None = None) -> Any:
        return runtime_settings(
            root, args, key=key, model_name=model_name, runtime=runtime, precision=precision
        )

    default = settings("onnx")
    other = "fp32" if default.encoder_precision == "int8" else "int8"
    onnx = {
        f"onnx-{default.encoder_precision}": EncoderRegistry.from_settings(default),
        f"onnx-{other}": EncoderRegistry.from_settings(settings("onnx", other)),
    }
    eager = {"torch-fp32": EncoderRegistry.from_settings(settings("torch"))}
    registries = {**eager, **onnx} if torch_first else {**onnx, **eager}
    encoders: dict[str, Encoder] = {}
    load_s: dict[str, float] = {}
    for name, registry in registries.items():
        torch.manual_seed(0)  # random weights, but the same in every runtime
        encoders[name] = registry.get(model_spec(default, key))
        started = time.perf_counter()
        encoders[name].load()
        load_s[name] = time.perf_counter() - started
        assert encoders[name].runtime == name, (name, encoders[name].runtime)
    return Runtimes(
        key=key,
        model_name=model_name,
        root=root,
        args=args,
        default=default,
        plan=plan_threads(default),
        registries=registries,
        encoders=encoders,
        load_s=load_s,
    )


def forward_only(encoder: Encoder, tensors: list[torch.Tensor], batch: int) -> float:
    """images/s of the image tower alone on already decoded, preprocessed tensors."""
    import torch

    started = time.perf_counter()
    for i in range(0, len(tensors), batch):
        encoder.encode_preprocessed(torch.stack(tensors[i : i + batch]))
    return len(tensors) / (time.perf_counter() - started)
