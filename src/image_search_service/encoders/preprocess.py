"""open_clip's image preprocessing, made cheap: Pillow per image, numpy per batch.

open_clip's transform (torchvision ``Resize`` -> ``CenterCrop`` -> RGB -> ``ToTensor`` ->
``Normalize``) runs four per-image steps, two of them float tensor ops. Here each image is
only resized and cropped by Pillow in one call (``resize(box=...)`` resamples just the
part the crop keeps, with the same filter as resize-then-crop) into a uint8 array, and
the float conversion and normalisation run once per batch as one numpy expression.
Vectors match open_clip's own preprocessing (cosine >= 0.999, tests/integration/
test_preprocess_batch.py). A transform this module does not recognise (open_clip's
``longest`` resize mode, anything custom) is not approximated: :func:`from_transform`
returns None and the caller keeps open_clip's transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BatchPreprocess:
    """Resize (shortest side, then centre crop; or squash) and normalise like open_clip."""

    size: tuple[int, int]  # (height, width) of the model's input
    squash: bool  # resize straight to ``size`` (SigLIP) instead of shortest side + crop
    shortest: int  # the shortest side after resizing (when not squashing)
    resample: Image.Resampling
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> UInt8Array:
        """One image to a (height, width, 3) uint8 array, ready for :meth:`batch`."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        height, width = self.size
        if self.squash:
            return np.array(image.resize((width, height), self.resample))
        w, h = image.size
        new_w, new_h, top, left = self._resize_and_crop(w, h)
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
        return np.array(image.resize((width, height), self.resample, box=box))

    def resize_tensor(self, image: Any) -> Any:
        """:meth:`__call__` for a decoded (3, h, w) uint8 tensor, where it is (a GPU):
        the same sizes and crop, by torchvision's antialiased resize, to (height, width,
        3) uint8."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode[self.resample.name]
        height, width = self.size
        if self.squash:
            resized = F.resize(image, [height, width], mode, antialias=True)
        else:
            new_w, new_h, top, left = self._resize_and_crop(
                int(image.shape[-1]), int(image.shape[-2])
            )
            resized = F.resize(image, [new_h, new_w], mode, antialias=True)
            resized = resized[:, top : top + height, left : left + width]
        return resized.permute(1, 2, 0).contiguous()

    def _resize_and_crop(self, w: int, h: int) -> tuple[int, int, int, int]:
        """(width, height) after the resize, and the crop's (top, left), for a w x h
        picture: torchvision's Resize(int) makes the shorter side ``shortest`` and the
        longer int(shortest * long / short); CenterCrop then rounds its offsets."""
        if w <= h:
            new_w, new_h = self.shortest, int(self.shortest * h / w)
        else:
            new_w, new_h = int(self.shortest * w / h), self.shortest
        height, width = self.size
        return new_w, new_h, int(round((new_h - height) / 2.0)), int(round((new_w - width) / 2.0))

    def batch(self, pixels: Sequence[UInt8Array] | UInt8Array) -> Float32Array:
        """Stacked (n, height, width, 3) uint8 to normalised (n, 3, height, width) float32."""
        stacked = np.stack(pixels) if not isinstance(pixels, np.ndarray) else pixels
        scale = 1.0 / (255.0 * np.asarray(self.std, dtype=np.float32))
        offset = np.asarray(self.mean, dtype=np.float32) / np.asarray(self.std, np.float32)
        out = np.empty((len(stacked), 3, *stacked.shape[1:3]), dtype=np.float32)
        np.multiply(stacked.transpose(0, 3, 1, 2), scale[:, None, None], out=out)
        out -= offset[:, None, None]
        return out

    def batch_on(self, pixels: Any) -> Any:
        """:meth:`batch` as torch ops where the uint8 tensor already is (a GPU: a quarter
        of float32's bytes cross the bus, and the normalising runs there)."""
        import torch

        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device)
        scale = (1.0 / (255.0 * std))[:, None, None]
        offset = (mean / std)[:, None, None]
        return pixels.permute(0, 3, 1, 2).to(torch.float32) * scale - offset


def from_transform(transform: Any) -> BatchPreprocess | None:
    """The batch form of an open_clip image transform, or None when it is not one of the
    shapes open_clip builds for ``shortest``/``squash`` resizing."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    names = [type(s).__name__ for s in steps]
    tail = ["MaybeConvertMode", "MaybeToTensor", "Normalize"]
    if names == ["Resize", "CenterCrop", *tail]:
        resize, crop, normalize = steps[0], steps[1], steps[4]
    elif names == ["Resize", *tail]:
        resize, crop, normalize = steps[0], None, steps[3]
    else:
        return None
    if not isinstance(resize, T.Resize) or resize.max_size is not None or not resize.antialias:
        return None
    try:
        resample = Image.Resampling[resize.interpolation.name]
    except KeyError:
        return None
    mean, std = tuple(map(float, normalize.mean)), tuple(map(float, normalize.std))
    if len(mean) != 3 or len(std) != 3:
        return None
    size = resize.size
    if crop is None:
        if not (isinstance(size, Sequence) and len(size) == 2):
            return None
        return BatchPreprocess((int(size[0]), int(size[1])), True, 0, resample, mean, std)
    shortest = size[0] if isinstance(size, Sequence) and len(size) == 1 else size
    crop_h, crop_w = (int(v) for v in crop.size)
    if not isinstance(shortest, int) or shortest < max(crop_h, crop_w):
        return None  # a crop larger than the resize pads: keep open_clip's transform
    return BatchPreprocess((crop_h, crop_w), False, shortest, resample, mean, std)
