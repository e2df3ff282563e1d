"""One encoder per model spec per process, created at start-up and handed down."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from image_search_service.encoders.base import EncodeObserver, Encoder

if TYPE_CHECKING:
    from image_search_service.core.config import Settings
    from image_search_service.core.specs import ModelSpec


class EncoderRegistry:
    """Encoders are made on first use, so a process that never encodes (``status``,
    ``reembed status``) never imports torch.

    ``runtime`` picks the model runtime: ``"torch"`` (open_clip eager, on ``device``) or
    ``"onnx"`` (ONNX Runtime on CPU, exports cached in ``export_dir``, in ``precision``).
    ONNX Runtime only serves CPUs here: with a GPU ``device`` PyTorch keeps serving.
    """

    def __init__(
        self,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        observer: EncodeObserver | None = None,
        runtime: str = "torch",
        precision: str = "fp32",
        export_dir: Path | None = None,
        threads: int = 0,
        cpu_isa: str | None = None,
    ) -> None:
        if runtime == "onnx" and export_dir is None:
            raise ValueError("the onnx runtime needs an export_dir")
        self._device = device
        self._cache_dir = cache_dir
        self._observer = observer
        self._runtime = runtime
        self._precision = precision
        self._export_dir = export_dir
        self._threads = threads
        self._cpu_isa = cpu_isa
        self._encoders: dict[ModelSpec, Encoder] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, observer: EncodeObserver | None = None
    ) -> EncoderRegistry:
        from image_search_service.core.threads import plan_threads

        return cls(
            device=settings.device,
            cache_dir=settings.model_cache_dir,
            observer=observer,
            runtime=settings.encoder_runtime,
            precision=settings.encoder_precision,
            export_dir=settings.export_dir,
            threads=plan_threads(settings).model_threads,
            cpu_isa=settings.onnx_cpu_isa,
        )

    @property
    def runtime(self) -> str:
        """The configured runtime and precision, e.g. ``onnx-int8`` (an encoder that fell
        back to PyTorch says so in its own ``runtime``)."""
        return f"{self._runtime}-{self._precision if self._runtime == 'onnx' else 'fp32'}"

    def _use_onnx(self) -> bool:
        if self._runtime != "onnx" or self._device not in ("auto", "cpu"):
            return False
        if self._device == "auto":
            import torch

            return not torch.cuda.is_available()  # a GPU: PyTorch serves on it
        return True

    def peek(self, spec: ModelSpec) -> Encoder | None:
        """The encoder made for ``spec`` in this process, if any: never makes one."""
        with self._lock:
            return self._encoders.get(spec)

    def get(self, spec: ModelSpec) -> Encoder:
        with self._lock:
            encoder = self._encoders.get(spec)
            if encoder is None:
                encoder = self._make(spec)
                self._encoders[spec] = encoder
            return encoder

    def _make(self, spec: ModelSpec) -> Encoder:
        if self._use_onnx():
            from image_search_service.encoders.onnx import OnnxEncoder

            assert self._export_dir is not None
            return OnnxEncoder(
                spec,
                export_dir=self._export_dir,
                precision=self._precision,
                cache_dir=self._cache_dir,
                observer=self._observer,
                threads=self._threads,
                cpu_isa=self._cpu_isa,
            )
        from image_search_service.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder(
            spec,
            device=self._device,
            cache_dir=self._cache_dir,
            observer=self._observer,
            threads=self._threads,
        )
