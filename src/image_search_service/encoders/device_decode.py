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

# Files per nvJPEG call: measured 618 images/s at 64 on an H200 (docs/performance.md);
# 64 full-size 12-MP pictures take ~2.3 GB of GPU memory at once.
DEVICE_DECODE_BATCH = 64

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec; the call is
# the one documented for nvJPEG and is kept until TorchCodec ships it in the same wheel.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)


class DeviceJpegDecoder:
    """Decodes runs of JPEGs on ``device`` to every model's uint8 input."""

    def __init__(
        self,
        device: torch.device,
        preprocessors: Mapping[ModelKey, BatchPreprocess],
        *,
        batch_size: int = DEVICE_DECODE_BATCH,
    ):
        self.device = device
        self.batch_size = batch_size
        self._preprocessors = dict(preprocessors)
        self._stream: Any = None  # the CUDA stream decoding runs on, made on first use

    def decode(self, files: Sequence[JpegFile]) -> list[dict[ModelKey, Any] | None]:
        """Each file as ``{model key: (height, width, 3) uint8}`` - a tensor on the GPU,
        a numpy array on the CPU - or None where the device could not decode that file
        (the caller decodes it on the CPU, which also gives the reason if it is broken)."""
        import torch

        if not files:
            return []
        if self.device.type != "cuda":
            return self._decode(files)
        # A stream of its own, so decoding overlaps the model's work on the default
        # stream; waited for here (this thread only) before the pixels are handed over.
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(self._stream):
            out = self._decode(files)
        self._stream.synchronize()
        return out

    def _decode(self, files: Sequence[JpegFile]) -> list[dict[ModelKey, Any] | None]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        datas = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) for f in files]
        decoded: list[Any]
        try:
            # One call for the run: nvJPEG's batched decode. It returns all or nothing.
            decoded = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            decoded = []
            for data in datas:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
        out: list[dict[ModelKey, Any] | None] = []
        for file, image in zip(files, decoded, strict=True):
            if image is None:
                out.append(None)
                continue
            upright = orient(image, file.orientation)
            pixels = {k: p.resize_tensor(upright) for k, p in self._preprocessors.items()}
            if self.device.type == "cpu":
                pixels = {k: v.numpy() for k, v in pixels.items()}
            out.append(pixels)
        return out


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
    with _checked_lock:
        if str(device) not in _checked:
            _checked[str(device)] = _can_decode(decoder)
    return decoder if _checked[str(device)] else None


# Whether each device decoded the test JPEG: checked (and said in the log) once per process.
_checked: dict[str, bool] = {}
_checked_lock = threading.Lock()


def _can_decode(decoder: DeviceJpegDecoder) -> bool:
    try:
        works = decoder.decode([_probe_jpeg()])[0] is not None
    except Exception as exc:  # a driver without nvJPEG, a torchvision built without it
        logger.info("JPEG decoding stays on the CPU: %s cannot decode (%s)", decoder.device, exc)
        return False
    if not works:
        logger.info("JPEG decoding stays on the CPU: %s cannot decode a test JPEG", decoder.device)
        return False
    logger.info("JPEGs are decoded on %s beside the CPU decoders", decoder.device)
    return True


def _probe_jpeg() -> JpegFile:
    from PIL import Image

    from image_search_service.images.loading import ImageMeta

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    meta = ImageMeta(64, 48, "JPEG", None, None, None)
    return JpegFile(buffer.getvalue(), meta, 1)
