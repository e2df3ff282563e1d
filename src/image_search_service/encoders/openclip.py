"""One open_clip encoder class for every model (CLIP, SigLIP, shipped demo models).

Loaded lazily, once per spec per process (see :class:`~.registry.EncoderRegistry`), in eval
and inference mode. Outputs are L2-normalised float32 rows whose width must
equal the configured dimension.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from image_search_service.core.errors import ModelLoadError
from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.base import EncodeObserver, FloatArray
from image_search_service.encoders.preprocess import BatchPreprocess, from_transform

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random"  # explicit opt-in, for benchmarks only
LOAD_RETRY_COOLDOWN_S = 60.0
# Half precision serves the image tower on a GPU only where it agrees with fp32 this well
# on fixed inputs at load (the ONNX exports' INT8 is held to retrieval, see onnx_export).
HALF_MIN_COSINE = 0.999
HALF_CHECK_IMAGES = 8
# Images per forward pass on a GPU: small batches leave it idle between launches.
GPU_BATCH_SIZE = 128

_HOW_TO_PROVIDE = (
    "Provide weights one of these ways: (1) run once with network access so open_clip can "
    "cache them in MODEL_CACHE_DIR; (2) set {prefix}_PRETRAINED to a checkpoint file; "
    "(3) set {prefix}_MODEL_NAME=local-dir:/path/to/dir (open_clip_config.json + "
    "open_clip_model.safetensors); or (4) use the shipped offline demo model "
    "{prefix}_MODEL_NAME=demo-{key}."
)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def half_precision(device: torch.device) -> torch.dtype | None:
    """The half precision tried for the image tower on ``device``: fp16 autocast on a
    CUDA GPU (10 mantissa bits against bf16's 7; the check catches overflow), none on CPU
    (ONNX Runtime's INT8 is the CPU's fast path)."""
    return torch.float16 if device.type == "cuda" else None


def _registered_preprocess(model_name: str) -> tuple[dict[str, Any], bool]:
    """(create_model_and_transforms image_* kwargs, QuickGELU) of the model's weights."""
    pp, quick_gelu = _registered_preprocess_cfg(model_name)
    return {f"image_{k}": v for k, v in pp.items()}, quick_gelu


def _registered_preprocess_cfg(model_name: str) -> tuple[dict[str, Any], bool]:
    """Preprocessing and QuickGELU of a built-in model's first registered weights.

    open_clip falls back to OpenAI preprocessing when weights come from a file,
    which is wrong for SigLIP (mean=std=0.5, squash); the model's own registered
    pretrained configs say what it was trained with.
    """
    for tag in open_clip.list_pretrained_tags_by_model(model_name):
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if cfg:
            keys = ("mean", "std", "interpolation", "resize_mode")
            return {k: cfg[k] for k in keys if k in cfg}, bool(cfg.get("quick_gelu", False))
    return {}, False


class OpenClipEncoder:
    """Encodes images and text with one open_clip model (PyTorch eager)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        observer: EncodeObserver | None = None,
        threads: int = 0,
    ):
        self.spec = spec
        self._observer = observer
        self._threads = threads
        self._ready = False
        self._image_size: int | None = None
        self._device_name = device
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._batch_preprocess: BatchPreprocess | None = None
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()
        self._logit_scale = 1.0
        self._logit_bias: float | None = None
        self._failed: tuple[float, ModelLoadError] | None = None
        self.device = resolve_device(device)
        self._autocast: torch.dtype | None = None  # the image tower's, once checked
        # What the half-precision check at load measured (None: not tried on this device).
        self.half_check: dict[str, Any] | None = None

    # -- loading -----------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._ready

    @property
    def runtime(self) -> str:
        """What makes the vectors (recorded in the collection's stamp): ``torch-fp32``, or
        ``torch-fp16`` where half precision passed its check on the GPU."""
        if self._autocast is None:
            return "torch-fp32"
        return "torch-" + {torch.float16: "fp16", torch.bfloat16: "bf16"}[self._autocast]

    @property
    def preferred_batch_size(self) -> int:
        """The batch the device wants at least (0: the configured one is fine)."""
        return GPU_BATCH_SIZE if self.device.type == "cuda" else 0

    def load(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            # A failed load (offline hub retries take ~45 s) is not retried on every
            # request: the same error comes back at once until the cool-down passes.
            if self._failed and time.monotonic() - self._failed[0] < LOAD_RETRY_COOLDOWN_S:
                raise self._failed[1]
            try:
                self._load_locked()
            except ModelLoadError as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._failed = None
            self._ready = True

    def _load_locked(self) -> None:
        spec = self.spec
        prefix = spec.key.upper()
        how = _HOW_TO_PROVIDE.format(prefix=prefix, key=spec.key)
        name = spec.open_clip_name
        has_schema = name.startswith(("local-dir:", "hf-hub:"))
        pretrained: str | None = None if has_schema else (spec.pretrained or None)
        kwargs: dict[str, Any] = {}
        if not has_schema:
            if pretrained is None:
                raise ModelLoadError(
                    f"{prefix}_PRETRAINED is empty for {prefix}_MODEL_NAME={spec.model_name!r}; "
                    "a built-in model name needs a pretrained tag or checkpoint file. " + how
                )
            registered_pp, quick_gelu = _registered_preprocess(name)
            if pretrained == RANDOM_WEIGHTS:
                logger.warning("%s: random weights (%s_PRETRAINED=random)", spec.key, prefix)
                kwargs["load_weights"] = False
                pretrained = None
                kwargs.update(registered_pp)
            else:
                tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
                if tag_cfg:
                    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
                elif os.path.isfile(pretrained):
                    kwargs.update(registered_pp)
                else:
                    tags = open_clip.list_pretrained_tags_by_model(name)
                    raise ModelLoadError(
                        f"{prefix}_PRETRAINED={pretrained!r} is neither a pretrained tag of "
                        f"{name!r} (known: {', '.join(tags) or 'none'}) nor an existing file. "
                        + how
                    )
                kwargs["require_pretrained"] = True
                if tag_cfg:
                    _announce_download(spec, tag_cfg, self._cache_dir, how)
            # OpenAI's CLIP weights were trained with QuickGELU; open_clip's registry says so.
            kwargs["force_quick_gelu"] = quick_gelu
        else:
            kwargs["require_pretrained"] = True
        if self._threads and self.device.type == "cpu":
            torch.set_num_threads(self._threads)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                device=self.device,
                cache_dir=str(self._cache_dir) if self._cache_dir else None,
                **kwargs,
            )
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"could not load {spec.key} model {spec.model_name!r}"
                f"{' / ' + spec.pretrained if spec.pretrained and not has_schema else ''}: "
                f"{exc}. {how}"
            ) from exc
        model.eval()
        self._model = model
        self._preprocess = preprocess
        self._batch_preprocess = from_transform(preprocess)
        if self._batch_preprocess is None:
            logger.info("%s: open_clip's per-image preprocessing (%s)", spec.key, preprocess)
        scale = getattr(model, "logit_scale", None)
        bias = getattr(model, "logit_bias", None)
        self._logit_scale = float(scale.exp().item()) if scale is not None else 1.0
        self._logit_bias = float(bias.item()) if bias is not None else None
        # Checked through the image tower: the tokenizer loads on first encode_text, because
        # SigLIP's is a Hugging Face download that image-only work (re-embedding) never needs.
        side = model.visual.image_size
        size = (int(side[1]), int(side[0])) if isinstance(side, tuple | list) else (side, side)
        self._image_size = max(size)
        dummy = self.pixel_batch([self._preprocess_one(Image.new("RGB", size))])
        with torch.inference_mode():
            probe = self._model.encode_image(dummy.to(self.device), normalize=True)
        width = int(probe.shape[1])
        if width != spec.embedding_dim:
            self._model = None
            raise ModelLoadError(
                f"{spec.key} model {spec.model_name!r} produces {width}-d embeddings but "
                f"{prefix}_EMBEDDING_DIM={spec.embedding_dim}; fix the setting or the model"
            )
        logger.info(
            "loaded %s model %s on %s (%d-d)", spec.key, spec.model_name, self.device, width
        )
        half = half_precision(self.device)
        if half is not None:
            self._autocast = self.check_half_precision(half)

    def check_half_precision(self, dtype: torch.dtype) -> torch.dtype | None:
        """``dtype`` if autocast in it keeps the image tower's vectors within
        :data:`HALF_MIN_COSINE` of fp32 on fixed inputs, else None (fp32, one log line)."""
        rng = np.random.default_rng(1234)
        side = self._image_size or 224
        images = [
            Image.fromarray(rng.integers(0, 256, (4 + i, 5 + i, 3), dtype=np.uint8)).resize(
                (side + 7 * i, side), Image.Resampling.BICUBIC
            )
            for i in range(HALF_CHECK_IMAGES)
        ]
        pixels = self.pixel_batch([self._preprocess_one(im) for im in images]).to(self.device)
        with torch.inference_mode():
            full = _as_float32(self._model.encode_image(pixels, normalize=True))
            with torch.autocast(self.device.type, dtype=dtype):
                half = _as_float32(self._model.encode_image(pixels, normalize=True))
        cosine = float(np.min(np.sum(full * half, axis=1)))  # nan fails the check
        name = str(dtype).removeprefix("torch.")
        self.half_check = {"dtype": name, "min_cosine": round(cosine, 6), "min": HALF_MIN_COSINE}
        if cosine >= HALF_MIN_COSINE:
            logger.info(
                "%s: %s autocast serves images (min cosine to fp32 %.6f)",
                self.spec.key,
                name,
                cosine,
            )
            return dtype
        logger.info(
            "%s: %s refused (min cosine to fp32 %.6f < %s); fp32 serves",
            self.spec.key,
            name,
            cosine,
            HALF_MIN_COSINE,
        )
        return None

    # -- encoding ----------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own preprocessing, per image; safe to call from decode threads.

        Resized and cropped uint8 pixels (height, width, 3) where :mod:`.preprocess`
        knows the transform (normalised once per batch by :meth:`encode_preprocessed`),
        else open_clip's normalised (3, height, width) float tensor."""
        self.load()
        return self._preprocess_one(image)

    def _preprocess_one(self, image: Image.Image) -> torch.Tensor:
        assert self._preprocess is not None
        if self._batch_preprocess is not None:
            return torch.from_numpy(self._batch_preprocess(image))
        return self._preprocess(image)

    def pixel_batch(self, batch: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """What :meth:`preprocess` made (or :attr:`batch_preprocess` in a decode process:
        numpy arrays), as one normalised float (n, 3, h, w) batch."""
        if isinstance(batch, torch.Tensor):
            stacked = batch
        else:
            # numpy arrays (decode processes, the device lane on a CPU), CPU tensors
            # (decode threads) and GPU tensors (the device lane on a GPU) may meet in one
            # batch: the CPU ones cross to the GPU in one copy, then all are stacked there.
            items = [torch.as_tensor(item) for item in batch]
            on_gpu = [i for i, item in enumerate(items) if item.is_cuda]
            for i in on_gpu:
                # Made on the device lane's CUDA stream: its memory is not reused before
                # what this stream queues on it (the stack below) is done.
                items[i].record_stream(torch.cuda.current_stream(items[i].device))
            if on_gpu and len(on_gpu) < len(items):
                on_cpu = [i for i, item in enumerate(items) if not item.is_cuda]
                moved = self._to_device(torch.stack([items[i] for i in on_cpu]))
                for j, i in enumerate(on_cpu):
                    items[i] = moved[j]
            stacked = torch.stack(items)
        if stacked.dtype != torch.uint8:
            return stacked
        assert self._batch_preprocess is not None
        if self.device.type == "cuda":
            # uint8 over the bus, from pinned memory without blocking; normalised there.
            result: torch.Tensor = self._batch_preprocess.batch_on(self._to_device(stacked))
            return result
        return torch.from_numpy(self._batch_preprocess.batch(stacked.numpy()))

    def _to_device(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` on the model's device (``cuda`` and ``cuda:0`` alike count as there)."""
        if pixels.device.type == self.device.type:
            return pixels
        if self.device.type == "cuda":
            return pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels.to(self.device)

    @property
    def batch_preprocess(self) -> BatchPreprocess | None:
        """The per-image half of :meth:`preprocess` as a picklable object (for decode
        processes), or None where open_clip's own transform serves."""
        self.load()
        return self._batch_preprocess

    @property
    def image_size(self) -> int:
        self.load()
        assert self._image_size is not None
        return self._image_size

    def encode_images(self, images: Sequence[Image.Image]) -> FloatArray:
        if not images:
            return np.zeros((0, self.spec.embedding_dim), dtype=np.float32)
        return self.encode_preprocessed([self.preprocess(img) for img in images])

    def encode_preprocessed(self, batch: Sequence[Any] | torch.Tensor) -> FloatArray:
        """Encode what :meth:`preprocess` made: a list of tensors or a stacked batch."""
        self.load()
        started = time.perf_counter()
        stacked = self.pixel_batch(batch)
        half = self._autocast
        autocast = torch.autocast(self.device.type, dtype=half) if half else nullcontext()
        with torch.inference_mode(), autocast:
            features = self._model.encode_image(stacked.to(self.device), normalize=True)
        result = _as_float32(features)
        self._observe("image", len(result), started)
        return result

    def encode_text(self, texts: Sequence[str]) -> FloatArray:
        self.load()
        started = time.perf_counter()
        result = self._encode_text_locked(texts)
        self._observe("text", len(result), started)
        return result

    def _observe(self, kind: str, batch: int, started: float) -> None:
        if self._observer is not None:
            self._observer(self.spec.key, kind, batch, time.perf_counter() - started)

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._tokenizer_lock:
                if self._tokenizer is None:
                    cache = str(self._cache_dir) if self._cache_dir else None
                    try:
                        self._tokenizer = open_clip.get_tokenizer(
                            self.spec.open_clip_name, cache_dir=cache
                        )
                    except Exception as exc:
                        raise ModelLoadError(
                            f"could not load the text tokenizer of {self.spec.key} model "
                            f"{self.spec.model_name!r}: {exc}. SigLIP's tokenizer comes from "
                            "Hugging Face (`transformers`) and is downloaded once, online, into "
                            "MODEL_CACHE_DIR; image encoding works without it."
                        ) from exc
        return self._tokenizer

    def _encode_text_locked(self, texts: Sequence[str]) -> FloatArray:
        tokens = self._get_tokenizer()(list(texts)).to(self.device)
        with torch.inference_mode():
            features = self._model.encode_text(tokens, normalize=True)
        return _as_float32(features)

    # -- scores ------------------------------------------------------------------------
    def calibrated_score(self, cosine: float) -> float | None:
        """SigLIP's text-image probability: sigmoid(cos * exp(logit_scale) + logit_bias)."""
        self.load()
        if self._logit_bias is None:
            return None
        logit = cosine * self._logit_scale + self._logit_bias
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0

    def cosine_at(self, probability: float) -> float | None:
        """The cosine whose calibrated score is ``probability`` (a min-score for SigLIP)."""
        self.load()
        if self._logit_bias is None or not 0.0 < probability < 1.0:
            return None
        logit = math.log(probability / (1.0 - probability))
        return (logit - self._logit_bias) / self._logit_scale


def _as_float32(features: torch.Tensor) -> FloatArray:
    array: FloatArray = features.detach().to("cpu", torch.float32).numpy()
    # Renormalise in float32: half-precision models can drift off the unit sphere.
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.asarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


# The weight files open_clip fetches from a Hugging Face repo, newest layout first.
_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_CHECK_TIMEOUT_S = 3.0


def _announce_download(
    spec: ModelSpec, tag_cfg: dict[str, Any], cache_dir: Path | None, how: str
) -> None:
    """Say at once when a first load must download the weights, and fail in seconds
    (not after the hub's retries) when it cannot: offline, or HF_HUB_OFFLINE set."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    repo = str(tag_cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return  # a plain URL download (open_clip's own cache): nothing to check ahead
    folder = str(cache_dir) if cache_dir else None
    if any(isinstance(try_to_load_from_cache(repo, f, cache_dir=folder), str) for f in _HUB_FILES):
        return
    where = cache_dir or constants.HF_HUB_CACHE
    prefix = spec.key.upper()
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(
            f"the {spec.key} weights ({spec.model_name} / {spec.pretrained}) are not in {where} "
            f"and HF_HUB_OFFLINE is set. {how}"
        )
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_CHECK_TIMEOUT_S).close()
    except OSError as exc:
        raise ModelLoadError(
            f"the {spec.key} weights ({spec.model_name} / {spec.pretrained}) are not in {where} "
            f"and {host} cannot be reached to download them ({exc}). {how}"
        ) from None
    logger.info(  # expected on a first run; said before the wait, not after
        "Downloading %s weights (%s / %s, hundreds of MB) from %s into %s "
        "(%s_MODEL_NAME / MODEL_CACHE_DIR); the first search waits for it",
        prefix,
        spec.model_name,
        spec.pretrained,
        repo,
        where,
        prefix,
    )
