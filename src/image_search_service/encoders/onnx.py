"""The open_clip models' image and text towers on ONNX Runtime.

Same interface and same outputs as :class:`~.openclip.OpenClipEncoder`, of which it is
a subclass: open_clip still loads the weights (every way the settings allow), does the
preprocessing and the tokenizing (CLIP's and SigLIP's tokenizers alike); the forward
passes run on ONNX Runtime from an export that is made once per model identity and
verified against PyTorch (see :mod:`.onnx_export`). Once the ONNX sessions are up the
PyTorch weights are released.

If the export cannot be made, the encoder says so in one log line and keeps encoding
with PyTorch; if INT8 disagrees with PyTorch beyond tolerance on this CPU class (INT8 is
quantized and verified per class, see :mod:`.cpu`) it is refused and fp32 ONNX serves,
said in the one INFO line that says what serves. :attr:`runtime` tells which one made
the vectors; :attr:`tower_runtimes` and :attr:`int8_refused` tell status, without loading.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image_search_service.core.config import CpuIsa
from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.base import EncodeObserver, FloatArray
from image_search_service.encoders.cpu import cpu_isa as resolve_cpu_isa
from image_search_service.encoders.onnx_export import (
    ExportFailed,
    ExportRefused,
    OnnxExport,
    ensure_export,
)
from image_search_service.encoders.openclip import OpenClipEncoder

logger = logging.getLogger(__name__)

# Tokens per forward pass of the image tower. ONNX Runtime's INT8 ViT runs fastest on
# small batches (the activations stay in cache): ViT-B-16-SigLIP (196 tokens per image)
# measured 31 images/s at 4-5 images per pass against 24.6 at 16; ViT-B-32 (50 tokens)
# was flat from 10 to 24. Batches are split into passes of about this many tokens.
IMAGE_PASS_TOKENS = 1000


def image_tokens(model: Any) -> int | None:
    """Patch tokens per image of a ViT image tower (None when it is not one)."""
    visual = getattr(model, "visual", None)
    for holder in (visual, getattr(getattr(visual, "trunk", None), "patch_embed", None)):
        grid = getattr(holder, "grid_size", None)
        if isinstance(grid, tuple | list) and len(grid) == 2:
            return int(grid[0]) * int(grid[1])
    return None


def make_session(path: Path, *, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting: between batches the cores belong to the JPEG decoders.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder(OpenClipEncoder):
    """An open_clip model whose forward passes run on ONNX Runtime (CPU)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        export_dir: Path,
        precision: str = "fp32",
        cache_dir: Path | None = None,
        observer: EncodeObserver | None = None,
        threads: int = 0,
        cpu_isa: str | None = None,
    ):
        # ONNX Runtime serves on CPU; PyTorch only loads the weights and exports them.
        super().__init__(
            spec, device="cpu", cache_dir=cache_dir, observer=observer, threads=threads
        )
        self._export_dir = export_dir
        self.precision = precision
        # The CPU class INT8 is quantized and verified for: None = ONNX_CPU_ISA or detected.
        # Resolved now, so a wrong name fails here and not at the first search.
        self.cpu_isa: CpuIsa = resolve_cpu_isa(cpu_isa)
        self._int8_refused: str | None = None
        self._active: str | None = None  # "fp32" | "int8" once ONNX serves; None = PyTorch
        self._export: OnnxExport | None = None
        self._image_session: Any = None
        self._text_session: Any = None
        self._images_per_pass: int | None = None  # None: the whole batch in one pass

    @property
    def runtime(self) -> str:
        self.load()
        return f"onnx-{self._active}" if self._active else "torch-fp32"

    @property
    def export(self) -> OnnxExport | None:
        """The export in use (None when PyTorch serves after a failed export)."""
        self.load()
        return self._export

    @property
    def tower_runtimes(self) -> dict[str, str] | None:
        """What encodes each tower (``{"image": "onnx-int8", "text": "onnx-int8"}``), or
        None while the model is not loaded: asking never loads it."""
        if not self.loaded:
            return None
        runtime = f"onnx-{self._active}" if self._active else "torch-fp32"
        return {"image": runtime, "text": runtime}

    @property
    def int8_refused(self) -> str | None:
        """Why INT8 does not serve though it was asked for: refused on this CPU class, or
        the export failed. None when it serves, was not asked for, or not loaded yet."""
        return self._int8_refused if self.loaded else None

    @property
    def int8_decision(self) -> str | None:
        """What the INT8 check decided and measured, per method tried (recall@10 against
        fp32 on the probe set, min cosine): None when INT8 was not asked for, not loaded."""
        if not self.loaded or self.precision != "int8":
            return None
        check = self._export.int8_check if self._export is not None else None
        if not check or not check.get("attempts"):
            return self._int8_refused
        parts = []
        for attempt in check["attempts"]:
            recalls = attempt.get("recall_at_10", {})
            cosines = attempt.get("min_cosine", {})
            measured = ", ".join(
                [f"recall@10 {q} {r:.3f}" for q, r in recalls.items()]
                + [f"min cosine {t} {c:.4f}" for t, c in cosines.items()]
            )
            verdict = "refused" if attempt.get("refused") else "accepted"
            parts.append(f"{attempt['method']} {verdict} ({measured or attempt.get('refused')})")
        return "; ".join(parts)

    def _load_locked(self) -> None:
        super()._load_locked()
        assert self._preprocess is not None
        assert self._image_size is not None
        try:
            try:
                export = ensure_export(
                    self._model,
                    spec=self.spec,
                    preprocess=self._preprocess,
                    image_size=self._image_size,
                    root=self._export_dir,
                    precision=self.precision,
                    isa=self.cpu_isa,
                )
                active = self.precision
            except ExportRefused as exc:
                if exc.fp32 is None:
                    raise
                # Not a fault: INT8 does not hold on this CPU class, fp32 serves (one INFO
                # line, below).
                export, active = exc.fp32, "fp32"
                self._int8_refused = str(exc)
            # Both sessions now: the files may be replaced later by another process that
            # exports newer weights of the same model (stale exports are pruned).
            image = make_session(export.path("image", active), threads=self._threads)
            text = make_session(export.path("text", active), threads=self._threads)
        except (ExportFailed, OSError) as exc:
            if self.precision == "int8":
                self._int8_refused = f"the ONNX export failed: {exc}"
            logger.warning(
                "%s: ONNX export of %s failed (%s); encoding with PyTorch instead",
                self.spec.key,
                self.spec.model_name,
                exc,
            )
            return
        except Exception as exc:  # onnxruntime raises its own types for unloadable graphs
            if self.precision == "int8":
                self._int8_refused = f"ONNX Runtime cannot load the export: {exc}"
            logger.warning(
                "%s: ONNX Runtime cannot load the export of %s (%s: %s); encoding with PyTorch",
                self.spec.key,
                self.spec.model_name,
                type(exc).__name__,
                exc,
            )
            return
        self._export, self._active = export, active
        self._image_session, self._text_session = image, text
        tokens = image_tokens(self._model)
        self._images_per_pass = max(1, IMAGE_PASS_TOKENS // tokens) if tokens else None
        self._model = None  # ONNX Runtime serves from here on; release the PyTorch weights
        cos = export.min_cosine(active)
        logger.info(
            "%s: ONNX Runtime %s serves %s (CPU class %s; min cosine to PyTorch: image %.6f, "
            "text %.6f)%s",
            self.spec.key,
            active,
            self.spec.model_name,
            self.cpu_isa,
            cos["image"],
            cos["text"],
            f"; INT8 refused: {self._int8_refused}" if self._int8_refused else "",
        )

    def encode_preprocessed(self, batch: Sequence[Any] | torch.Tensor) -> FloatArray:
        self.load()
        if self._active is None:
            return super().encode_preprocessed(batch)
        started = time.perf_counter()
        pixels = np.ascontiguousarray(
            self.pixel_batch(batch).detach().to("cpu", torch.float32).numpy()
        )
        step = self._images_per_pass or len(pixels) or 1
        parts = [
            self._image_session.run(None, {"input": pixels[i : i + step]})[0]
            for i in range(0, len(pixels), step)
        ]
        result = _normalised(np.concatenate(parts) if len(parts) != 1 else parts[0])
        self._observe("image", len(result), started)
        return result

    def _encode_text_locked(self, texts: Sequence[str]) -> FloatArray:
        if self._active is None:
            return super()._encode_text_locked(texts)
        tokens = self._get_tokenizer()(list(texts))
        ids = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
        (features,) = self._text_session.run(None, {"input": ids})
        return _normalised(features)


def _normalised(features: Any) -> FloatArray:
    array = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.asarray(array / np.maximum(norms, 1e-12), dtype=np.float32)
