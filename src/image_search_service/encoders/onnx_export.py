"""Export an open_clip model's towers to ONNX once, verify them, cache them on disk.

Layout, one folder per model identity (a hash of the weights' content, so changed
weights re-export and stale exports are never used) and CPU class (:mod:`.cpu`: INT8 is
quantized with the settings that hold on this class of CPU and verified on it, so an
export verified on one class is never trusted on another)::

    <MODEL_CACHE_DIR or DATA_DIR/models>/onnx/<model>-<identity>-<cpu class>/
        image.onnx  text.onnx  [image.int8.onnx  text.int8.onnx]
        manifest.json   # written last: files with sha256, agreement with PyTorch

A folder whose manifest is missing, unreadable, or whose files do not match their
recorded size and sha256 is a partial or corrupt export: it is deleted and rebuilt,
never loaded. A new export is built in a temporary folder and renamed into place, so
two processes exporting at once never see each other's half-written files.

Agreement is measured at export time against the live PyTorch model on fixed inputs
(seeded images through the model's own preprocessing, seeded token ids) and recorded:
fp32 must reach :data:`FP32_MIN_COSINE`, INT8 :data:`INT8_MIN_COSINE` on every tower
(:func:`int8_refusal`), or the export is refused (:class:`ExportRefused`). What INT8
measured is recorded either way (``int8_check``).

Export notes (docs/design.md): opset 17 with the TorchScript exporter (``dynamo=False``),
with gradients enabled (the attention fast path under ``no_grad`` does not export), from
a copy of the model put in ``eval()`` (exporting a wrapper that is not in eval mode puts
the wrapped model back in training mode, and BatchNorm then corrupts it).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from image_search_service.core.config import CpuIsa
from image_search_service.core.specs import ModelSpec
from image_search_service.encoders.cpu import Int8Settings, cpu_isa, int8_settings
from image_search_service.encoders.onnx_rewrites import MS_DOMAIN, fuse_self_attention

logger = logging.getLogger(__name__)

# Bump when the export recipe changes: every cached export is rebuilt.
# 2: image towers export self-attention as ONNX Runtime's fused MultiHeadAttention.
# 3: keyed by CPU class, INT8 settings chosen per class, the INT8 check recorded.
EXPORT_FORMAT = 3
OPSET = 17
FP32_MIN_COSINE = 0.99999
INT8_MIN_COSINE = 0.999
MANIFEST = "manifest.json"
CHECK_IMAGES = 8
CHECK_TEXTS = 8

TOWERS = ("image", "text")
PRECISIONS = ("fp32", "int8")


class ExportFailed(Exception):
    """The model could not be exported (or the export does not match PyTorch)."""


class ExportRefused(ExportFailed):
    """An export ran but disagrees with PyTorch beyond the allowed tolerance.

    ``fp32`` is the verified fp32 export when it was INT8 that was refused.
    """

    def __init__(self, reason: str, fp32: OnnxExport | None = None) -> None:
        super().__init__(reason)
        self.fp32 = fp32


@dataclass(frozen=True)
class OnnxExport:
    """A verified export on disk."""

    directory: Path
    manifest: dict[str, Any]

    def path(self, tower: str, precision: str) -> Path:
        return self.directory / str(self.manifest["precisions"][precision][tower]["file"])

    def has(self, precision: str) -> bool:
        return precision in self.manifest.get("precisions", {})

    def min_cosine(self, precision: str) -> dict[str, float]:
        entries = self.manifest["precisions"][precision]
        return {tower: float(entries[tower]["min_cosine"]) for tower in TOWERS}

    @property
    def cpu_isa(self) -> str:
        """The CPU class this export was made and verified for."""
        return str(self.manifest["cpu_isa"])

    @property
    def int8_refused(self) -> str | None:
        """Why INT8 was refused on this CPU class (None: accepted or not tried yet)."""
        refused = self.manifest.get("int8_refused")
        return str(refused) if refused else None

    @property
    def int8_check(self) -> dict[str, Any] | None:
        """What the INT8 check measured: settings, per-tower min cosine, threshold."""
        check = self.manifest.get("int8_check")
        return dict(check) if isinstance(check, dict) else None


# -- identity --------------------------------------------------------------------------
def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every tensor (name, dtype, shape, bytes) of the model's state."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def export_folder_name(spec: ModelSpec, digest: str, isa: CpuIsa) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec.model_name.split(":")[-1]).name)[:60]
    return f"{stem or 'model'}-{digest[:20]}-{isa}"


# <stem>-<20 hex digits of the weights digest>[-<cpu class>] (format 2 had no class).
_FOLDER = re.compile(r"^(?P<stem>.+)-(?P<digest>[0-9a-f]{20})(?:-(?P<isa>[a-z0-9_]+))?$")


# -- cache -----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_valid_export(directory: Path, digest: str, isa: CpuIsa) -> OnnxExport | None:
    """The export in ``directory`` if it is complete, intact and made for these weights
    on this CPU class, else None."""
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
        if (
            manifest.get("format") != EXPORT_FORMAT
            or manifest.get("weights") != digest
            or manifest.get("cpu_isa") != isa
        ):
            return None
        for entries in manifest["precisions"].values():
            for tower in TOWERS:
                entry = entries[tower]
                path = directory / entry["file"]
                if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
                    return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return OnnxExport(directory, manifest)


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, directory / MANIFEST)


def _file_entry(directory: Path, name: str, min_cosine: float) -> dict[str, Any]:
    path = directory / name
    return {
        "file": name,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "min_cosine": round(min_cosine, 7),
    }


# -- fixed inputs and agreement --------------------------------------------------------
def check_images(preprocess: Callable[[Image.Image], torch.Tensor], size: int) -> torch.Tensor:
    """Seeded smooth colour fields with edges, through the model's own preprocessing."""
    rng = np.random.default_rng(1234)
    tensors = []
    for i in range(CHECK_IMAGES):
        coarse = rng.integers(0, 256, size=(4 + i, 5 + i, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size + 7 * i, size), Image.Resampling.BICUBIC)
        tensors.append(preprocess(image))
    return torch.stack(tensors)


def check_tokens(model: torch.nn.Module) -> torch.Tensor:
    """Seeded token ids: a start token, random words, an end token, then padding."""
    text = getattr(model, "text", None)
    length = int(getattr(model, "context_length", 0) or getattr(text, "context_length", 0))
    vocab = int(getattr(model, "vocab_size", 0) or getattr(text, "vocab_size", 0))
    if length <= 1 or vocab <= 3:
        raise ExportFailed("cannot tell the text tower's context length and vocabulary")
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.zeros((CHECK_TEXTS, length), dtype=torch.long)
    for i in range(CHECK_TEXTS):
        words = 1 + (i * 3) % (length - 2)
        tokens[i, 0] = vocab - 2
        tokens[i, 1 : 1 + words] = torch.randint(1, vocab - 2, (words,), generator=gen)
        tokens[i, 1 + words] = vocab - 1
    return tokens


def min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


class _Tower(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, tower: str) -> None:
        super().__init__()
        self.model = model
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tower == "image":
            return self.model.encode_image(x, normalize=True)  # type: ignore[operator, no-any-return]
        return self.model.encode_text(x, normalize=True)  # type: ignore[operator, no-any-return]


def _reference(model: torch.nn.Module, tower: str, inputs: torch.Tensor) -> np.ndarray[Any, Any]:
    with torch.inference_mode():
        out = _Tower(model, tower).eval()(inputs)
    return np.asarray(out.detach().to("cpu", torch.float32).numpy())


def _run_onnx(path: Path, inputs: torch.Tensor) -> np.ndarray[Any, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": inputs.numpy()})
    return np.asarray(out)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation chatter and the quantizer's root-logger hint."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export_tower(
    model: torch.nn.Module, tower: str, inputs: torch.Tensor, path: Path, *, rewrite: bool
) -> dict[str, int]:
    """Export one tower to ``path``; returns what was rewritten (see onnx_rewrites)."""
    wrapper = _Tower(copy.deepcopy(model), tower).eval()
    visual = getattr(wrapper.model, "visual", None)
    rewrites = {"fused_attention": 0}
    if rewrite and isinstance(visual, torch.nn.Module):
        rewrites["fused_attention"] = fuse_self_attention(visual)
    wrapper.eval()
    with torch.inference_mode(False), torch.enable_grad(), _quiet():
        torch.onnx.export(
            wrapper,
            (inputs[:2].clone(),),
            str(path),
            opset_version=OPSET,
            dynamo=False,
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            # Declared only when a rewrite uses it: otherwise the exporter warns (from C++,
            # past any Python filter) that the domain is unused.
            custom_opsets={MS_DOMAIN: 1} if rewrites["fused_attention"] else None,
        )
    return rewrites


def _export_verified(
    model: torch.nn.Module, tower: str, inputs: torch.Tensor, reference: Any, path: Path
) -> tuple[float, dict[str, int]]:
    """Export ``tower`` and check it against PyTorch: (min cosine, rewrites made).

    The image tower is tried with the rewrites first; if that export fails, does not
    load or disagrees, the plain export is made instead (and must agree on its own).
    """
    attempts = (True, False) if tower == "image" else (False,)
    for rewrite in attempts:
        last = rewrite is attempts[-1]
        try:
            rewrites = _export_tower(model, tower, inputs, path, rewrite=rewrite)
        except Exception as exc:  # the exporter raises anything from any op
            if not last:
                logger.info("%s tower: rewritten export failed (%s); plain export", tower, exc)
                continue
            raise ExportFailed(f"{tower} tower: {type(exc).__name__}: {exc}") from exc
        try:
            cosine = min_cosine(_run_onnx(path, inputs), reference)
        except Exception as exc:  # ONNX Runtime refused the graph (e.g. an older build)
            if not last:
                logger.info(
                    "%s tower: rewritten export did not load (%s); plain export", tower, exc
                )
                continue
            raise ExportFailed(f"{tower} tower: ONNX Runtime: {exc}") from exc
        if cosine >= FP32_MIN_COSINE:
            return cosine, rewrites
        if last:
            raise ExportRefused(
                f"{tower} tower: min cosine to PyTorch {cosine:.6f} < {FP32_MIN_COSINE}"
            )
        logger.info("%s tower: rewritten export disagrees (%.6f); plain export", tower, cosine)
    raise AssertionError("unreachable")


def _quantize(source: Path, target: Path, settings: Int8Settings | None = None) -> None:
    """Dynamic INT8 of ``source`` with ``settings`` (default: those for this CPU)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = settings or int8_settings(cpu_isa())
    # Per-channel: per-tensor INT8 dropped SigLIP's agreement to 0.977 (docs/design.md).
    # MatMul/Gemm only: the transformer's weight and the ResNet heads; convolutions stay fp32
    # (ORT's CPU ConvInteger does not take signed weights).
    with _quiet():
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8 if settings.weights == "int8" else QuantType.QUInt8,
            reduce_range=settings.reduce_range,
            op_types_to_quantize=["MatMul", "Gemm"],
            # Outputs of com.microsoft operators (fused attention) carry no inferred type.
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )


# -- the entry point -------------------------------------------------------------------
def ensure_export(
    model: torch.nn.Module,
    *,
    spec: ModelSpec,
    preprocess: Callable[[Image.Image], torch.Tensor],
    image_size: int,
    root: Path,
    precision: str,
    isa: CpuIsa | None = None,
) -> OnnxExport:
    """A verified export of ``model`` holding ``precision`` (cached, or built now) for
    the CPU class ``isa`` (None: this CPU's, see :func:`.cpu.cpu_isa`).

    Raises :class:`ExportFailed` when nothing usable could be made, and
    :class:`ExportRefused` when INT8 was asked for and disagrees with PyTorch (the fp32
    export then exists and verified; the caller may use it).
    """
    if precision not in PRECISIONS:
        raise ExportFailed(f"unknown precision {precision!r}")
    isa = isa or cpu_isa()
    digest = weights_digest(model)
    directory = root / export_folder_name(spec, digest, isa)
    export = read_valid_export(directory, digest, isa)
    if export is None:
        if directory.exists():
            logger.warning(
                "%s: cached ONNX export %s is partial or corrupt; rebuilding", spec.key, directory
            )
            shutil.rmtree(directory, ignore_errors=True)
        export = _build(
            model,
            spec=spec,
            preprocess=preprocess,
            image_size=image_size,
            root=root,
            directory=directory,
            digest=digest,
            isa=isa,
        )
        _prune_siblings(directory)
    if precision == "int8":
        export = _ensure_int8(model, export, preprocess=preprocess, image_size=image_size)
    return export


def _build(
    model: torch.nn.Module,
    *,
    spec: ModelSpec,
    preprocess: Callable[[Image.Image], torch.Tensor],
    image_size: int,
    root: Path,
    directory: Path,
    digest: str,
    isa: CpuIsa,
) -> OnnxExport:
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    work.chmod(0o755)
    try:
        inputs = {"image": check_images(preprocess, image_size), "text": check_tokens(model)}
        refs = {tower: _reference(model, tower, inputs[tower]) for tower in TOWERS}
        entries: dict[str, Any] = {}
        for tower in TOWERS:
            name = f"{tower}.onnx"
            cosine, rewrites = _export_verified(
                model, tower, inputs[tower], refs[tower], work / name
            )
            entries[tower] = {**_file_entry(work, name, cosine), **rewrites}
        # The live model must come out of export exactly as it went in (see the module doc).
        model.eval()
        for tower in TOWERS:
            after = min_cosine(_reference(model, tower, inputs[tower]), refs[tower])
            if not after >= FP32_MIN_COSINE:
                raise ExportFailed(f"exporting changed the PyTorch model ({tower}: {after:.6f})")
        manifest = {
            "format": EXPORT_FORMAT,
            "weights": digest,
            "cpu_isa": isa,
            "model_name": spec.model_name,
            "pretrained": spec.pretrained,
            "dim": spec.embedding_dim,
            "opset": OPSET,
            "versions": _versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "precisions": {"fp32": entries},
        }
        _write_manifest(work, manifest)
        try:
            os.rename(work, directory)
        except OSError:
            # Another process finished the same export first: use its copy if it is whole.
            other = read_valid_export(directory, digest, isa)
            if other is None:
                raise
            return other
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info(
        "%s: exported %s to ONNX in %.1f s (min cosine to PyTorch: image %.6f, text %.6f) at %s",
        spec.key,
        spec.model_name,
        time.perf_counter() - started,
        entries["image"]["min_cosine"],
        entries["text"]["min_cosine"],
        directory,
    )
    return OnnxExport(directory, manifest)


def int8_refusal(min_cosines: dict[str, float], *, isa: str, settings: Int8Settings) -> str | None:
    """The rule: INT8 is accepted iff every tower's min cosine to PyTorch reaches
    :data:`INT8_MIN_COSINE` (NaN never does); else the reason it is refused."""
    for tower, cosine in min_cosines.items():
        if not cosine >= INT8_MIN_COSINE:
            return (
                f"INT8 {tower} tower: min cosine to PyTorch {cosine:.6f} < {INT8_MIN_COSINE} "
                f"(CPU class {isa}, {settings.name})"
            )
    return None


def _ensure_int8(
    model: torch.nn.Module,
    export: OnnxExport,
    *,
    preprocess: Callable[[Image.Image], torch.Tensor],
    image_size: int,
) -> OnnxExport:
    manifest = export.manifest
    refused = export.int8_refused
    if refused:
        raise ExportRefused(refused, fp32=export)
    if export.has("int8"):
        return export
    directory = export.directory
    isa: CpuIsa = manifest["cpu_isa"]
    settings = int8_settings(isa)
    inputs = {"image": check_images(preprocess, image_size), "text": check_tokens(model)}
    cosines: dict[str, float] = {}
    made: dict[str, Path] = {}
    try:
        # Both towers are measured (not stopping at the first refusal): the check is
        # recorded whole, and status can say how far each tower was from the threshold.
        for tower in TOWERS:
            made[tower] = directory / f".{tower}.int8.onnx.{os.getpid()}.tmp"
            try:
                _quantize(directory / f"{tower}.onnx", made[tower], settings)
                cosines[tower] = min_cosine(
                    _run_onnx(made[tower], inputs[tower]),
                    _reference(model, tower, inputs[tower]),
                )
            except Exception as exc:
                raise ExportFailed(f"INT8 {tower} tower: {type(exc).__name__}: {exc}") from exc
        check = {
            "settings": settings.name,
            "min_cosine": {tower: round(c, 7) for tower, c in cosines.items()},
            "threshold": INT8_MIN_COSINE,
        }
        reason = int8_refusal(cosines, isa=isa, settings=settings)
        if reason:
            # Recorded, so the next start does not quantize (and refuse) all over again.
            manifest = {**manifest, "int8_refused": reason, "int8_check": check}
            _write_manifest(directory, manifest)
            raise ExportRefused(reason, fp32=OnnxExport(directory, manifest))
        entries: dict[str, Any] = {}
        for tower in TOWERS:
            name = f"{tower}.int8.onnx"
            os.replace(made.pop(tower), directory / name)
            entries[tower] = {
                **_file_entry(directory, name, cosines[tower]),
                "settings": settings.name,
            }
    finally:
        for leftover in made.values():
            leftover.unlink(missing_ok=True)
    manifest = {
        **manifest,
        "precisions": {**manifest["precisions"], "int8": entries},
        "int8_check": check,
    }
    _write_manifest(directory, manifest)
    return OnnxExport(directory, manifest)


def _remove_abandoned(root: Path, older_than_s: float = 3600.0) -> None:
    """Temporary folders of exports killed half-way (another process may be mid-export
    in a fresh one, so only old ones go)."""
    now = time.time()
    for work in root.glob(".export-*"):
        try:
            if now - work.stat().st_mtime > older_than_s:
                shutil.rmtree(work, ignore_errors=True)
        except OSError:
            continue


def _prune_siblings(directory: Path) -> None:
    """Exports of older weights of the same model, on any CPU class, and exports in an
    older layout: never used again, so not kept. Exports of these weights for other CPU
    classes stay (a model cache shared by different machines)."""
    mine = _FOLDER.match(directory.name)
    if mine is None:
        return
    for other in directory.parent.glob(f"{glob.escape(mine['stem'])}-*"):
        theirs = _FOLDER.match(other.name)
        if other == directory or theirs is None or theirs["stem"] != mine["stem"]:
            continue
        if other.is_dir() and (theirs["digest"] != mine["digest"] or theirs["isa"] is None):
            shutil.rmtree(other, ignore_errors=True)


def _versions() -> dict[str, str]:
    import onnxruntime
    import open_clip

    return {
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
