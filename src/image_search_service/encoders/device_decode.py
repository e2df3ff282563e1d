"""JPEG decoding on the models' device: nvJPEG through torchvision on a CUDA GPU.

The CPU decoders shrink a JPEG while decoding it (DCT scaling) and still spend ~23 ms of a
core on each 12-MP photo's Huffman decoding. On a machine whose models run on a GPU, the
GPU takes a share: torchvision's ``decode_jpeg(..., device="cuda")`` decodes a run of
files in one call with nvJPEG, at full size, and each picture is turned upright and
resized to every model's input right there, with the same resize and crop arithmetic as
the CPU path (:meth:`~.preprocess.BatchPreprocess.resize_tensor`): the pixels never cross
the bus back. The pipeline's device lane feeds it (services/library/decoding.py).

The same code runs on the CPU with torchvision's libjpeg decoder: that is how the tests
cover it on machines without a GPU, and what ``JPEG_DEVICE_DECODE=always`` does on one
(slower there than the scaled CPU decode; never chosen by ``auto``).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from image_search_service.core.config import DeviceDecodeMode, ModelKey
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.preprocess import BatchPreprocess
from image_search_service.images.loading import JpegFile

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Files per run of the device lane: nvJPEG + resize measured 618 images/s at 64 on an
# H200 (docs/performance.md).
DEVICE_DECODE_BATCH = 64
# Decoded pixels per nvJPEG call: 64 12-MP photos (2.3 GB as uint8 RGB); a run of bigger
# files is split, and a file past it decodes alone.
MAX_RUN_PIXELS = 64 * 12_000_000
# Whole runs failing in a row (a driver error, out of memory) before the lane stops.
MAX_FAILED_RUNS = 2

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the call is
# the one documented for nvJPEG and is kept until TorchCodec ships it in the same wheel.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


class DeviceJpegDecoder:
    """Decodes runs of JPEGs on ``device`` to every model's uint8 input. One per run of
    the pipeline, used by its device lane alone."""

    def __init__(
        self,
        device: torch.device,
        preprocessors: Mapping[ModelKey, BatchPreprocess],
        *,
        batch_size: int = DEVICE_DECODE_BATCH,
        max_run_pixels: int = MAX_RUN_PIXELS,
    ):
        self.device = device
        self.batch_size = batch_size
        self.max_run_pixels = max_run_pixels
        self._preprocessors = dict(preprocessors)
        self._stream: Any = None  # the CUDA stream decoding runs on, made on first use
        self._failed_runs = 0  # in a row; the lane stops at MAX_FAILED_RUNS

    @property
    def failing(self) -> bool:
        """True once whole runs failed :data:`MAX_FAILED_RUNS` times in a row: the
        device lane stops and the CPU decoders take the rest."""
        return self._failed_runs >= MAX_FAILED_RUNS

    def decode(self, files: Sequence[JpegFile]) -> list[dict[ModelKey, Any] | None]:
        """Each file as ``{model key: (height, width, 3) uint8}`` - a tensor on the GPU,
        a numpy array on the CPU - or None where the device could not decode that file
        (the caller decodes it on the CPU, which also gives the reason if it is broken).
        Raises what failed the device itself (out of memory, a driver error)."""
        import torch

        out: list[dict[ModelKey, Any] | None] = []
        try:
            for run in _runs(files, self.max_run_pixels):
                if self.device.type != "cuda":
                    out.extend(self._decode(run))
                    continue
                # A stream of its own, so decoding overlaps the model's work on the
                # default stream; waited for here (this thread only) before the pixels
                # are handed over.
                if self._stream is None:
                    self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
                with torch.cuda.stream(self._stream):
                    decoded = self._decode(run)
                self._stream.synchronize()
                out.extend(decoded)
        except Exception:
            self._failed_runs += 1
            raise
        self._failed_runs = 0
        return out

    def _decode(self, files: Sequence[JpegFile]) -> list[dict[ModelKey, Any] | None]:
        out: list[dict[ModelKey, Any] | None] = []
        for file, image in zip(files, self._decode_jpegs(files), strict=True):
            if image is None:
                out.append(None)
                continue
            upright = orient(image, file.orientation)
            pixels = {k: p.resize_tensor(upright) for k, p in self._preprocessors.items()}
            if self.device.type == "cpu":
                pixels = {k: v.numpy() for k, v in pixels.items()}
            out.append(pixels)
        return out

    def _decode_jpegs(self, files: Sequence[JpegFile]) -> list[Any]:
        """(3, h, w) uint8 per file, None for a file the device refused. nvJPEG's batched
        call is all or nothing: a refused run is halved until the culprits are alone."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        datas = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) for f in files]
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device))
        except torch.OutOfMemoryError:
            raise  # the device, not a file: the caller hands the run to the CPU
        except RuntimeError:
            if len(files) == 1:
                return [None]
            half = len(files) // 2
            return self._decode_jpegs(files[:half]) + self._decode_jpegs(files[half:])


def _runs(files: Sequence[JpegFile], max_pixels: int) -> list[Sequence[JpegFile]]:
    """``files`` in consecutive runs of at most ``max_pixels`` decoded pixels (a file
    bigger than that alone): nvJPEG allocates every full-size picture of a call at once."""
    runs: list[Sequence[JpegFile]] = []
    start, pixels = 0, 0
    for i, file in enumerate(files):
        size = file.meta.width * file.meta.height
        if i > start and pixels + size > max_pixels:
            runs.append(files[start:i])
            start, pixels = i, 0
        pixels += size
    if start < len(files):
        runs.append(files[start:])
    return runs


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A decoded (3, h, w) picture turned upright by its EXIF orientation (as Pillow's
    ``ImageOps.exif_transpose``)."""
    import torch

    h, w = -2, -1
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return image.flip(h, w)
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:
        return image.transpose(h, w)
    if orientation == 6:
        return torch.rot90(image, -1, (h, w))
    if orientation == 7:
        return image.transpose(h, w).flip(h, w)
    if orientation == 8:
        return torch.rot90(image, 1, (h, w))
    return image


def decoder_for(encoders: Sequence[Encoder], mode: DeviceDecodeMode) -> DeviceJpegDecoder | None:
    """The device decoder for these encoders: with ``auto`` when they all run on one
    CUDA device and nvJPEG decodes there; with ``always`` on their device, whatever it
    is; None with ``off``, or where some encoder's preprocessing has no batch form."""
    if mode == "off" or not encoders:
        return None
    devices = {str(getattr(enc, "device", "")) for enc in encoders}
    if len(devices) != 1 or devices == {""}:
        return None
    preprocessors = {enc.spec.key: getattr(enc, "batch_preprocess", None) for enc in encoders}
    usable = {k: p for k, p in preprocessors.items() if isinstance(p, BatchPreprocess)}
    if len(usable) != len(preprocessors):
        return None
    import torch

    device = torch.device(devices.pop())
    if mode == "auto" and device.type != "cuda":
        return None
    decoder = DeviceJpegDecoder(device, usable)
    key = (str(device), frozenset(usable.values()))
    with _checked_lock:
        if key not in _checked:
            _checked[key] = _can_decode(decoder)
    return decoder if _checked[key] else None


# Whether a device decodes the test JPEGs like the CPU, per device and set of resizes:
# checked (and said in the log) once per process.
_checked: dict[tuple[str, frozenset[BatchPreprocess]], bool] = {}
_checked_lock = threading.Lock()
# Mean difference (grey levels) from the CPU path beyond which a device is not used: the
# two resizes differ by about one level; a decoder that skips or garbles a picture, by tens.
PROBE_MAX_DIFFERENCE = 4.0


def _can_decode(decoder: DeviceJpegDecoder) -> bool:
    """Decode a run of test JPEGs of the kinds cameras write (4:2:0, 4:4:4, progressive,
    greyscale, rotated) on the device, and compare with what the CPU path makes."""
    probes = _probe_jpegs()
    try:
        decoded = decoder.decode([jpeg for jpeg, _ in probes])
    except Exception as exc:  # a driver without nvJPEG, a torchvision built without it
        logger.info("JPEG decoding stays on the CPU: %s cannot decode (%s)", decoder.device, exc)
        return False
    for (jpeg, upright), pixels in zip(probes, decoded, strict=True):
        if pixels is None:
            logger.info("JPEG decoding stays on the CPU: %s refused a test JPEG", decoder.device)
            return False
        for key, prepare in decoder._preprocessors.items():
            got = np.asarray(pixels[key].cpu() if hasattr(pixels[key], "cpu") else pixels[key])
            expected = prepare(upright)
            difference = float(np.abs(got.astype(np.int16) - expected.astype(np.int16)).mean())
            if got.shape != expected.shape or difference > PROBE_MAX_DIFFERENCE:
                logger.warning(
                    "JPEG decoding stays on the CPU: %s decodes a test JPEG differently "
                    "(orientation %d, mean difference %.1f grey levels)",
                    decoder.device,
                    jpeg.orientation,
                    difference,
                )
                return False
    logger.info("JPEGs are decoded on %s beside the CPU decoders", decoder.device)
    return True


def _probe_jpegs() -> list[tuple[JpegFile, Any]]:
    """Test JPEGs, each with the upright picture the CPU decodes from it."""
    from PIL import Image, ImageDraw, ImageOps

    from image_search_service.images.loading import ImageMeta

    x = np.linspace(0, 255, 320)[None, :, None]
    y = np.linspace(0, 255, 240)[:, None, None]
    base = Image.fromarray(((x * [1, 0.4, 0.2] + y * [0.1, 0.8, 1]) / 1.4).astype(np.uint8))
    ImageDraw.Draw(base).ellipse([40, 30, 200, 190], fill=(240, 200, 20))
    kinds: list[tuple[Any, dict[str, Any], int]] = [
        (base, {"subsampling": 2}, 1),  # 4:2:0, what most cameras write
        (base, {"subsampling": 0}, 1),  # 4:4:4
        (base, {"progressive": True}, 1),
        (base.convert("L"), {}, 1),
        (base, {"subsampling": 2}, 6),  # a phone held upright
    ]
    probes = []
    for image, options, orientation in kinds:
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90, exif=exif, **options)
        data = buffer.getvalue()
        with Image.open(io.BytesIO(data)) as stored:
            upright = (ImageOps.exif_transpose(stored) or stored).convert("RGB")
        width, height = upright.size
        probes.append(
            (
                JpegFile(data, ImageMeta(width, height, "JPEG", None, None, None), orientation),
                upright,
            )
        )
    return probes
