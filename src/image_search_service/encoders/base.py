"""What every encoder runtime offers, without importing any runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image

    from image_search_service.core.specs import ModelSpec

FloatArray = npt.NDArray[np.float32]
# Told after each forward pass: (model key, "text" | "image", batch size, seconds).
EncodeObserver = Callable[[str, str, int, float], None]


class Encoder(Protocol):
    """One model, loaded lazily; outputs are L2-normalised float32 rows."""

    spec: ModelSpec

    @property
    def runtime(self) -> str:
        """What makes the vectors, e.g. ``torch-fp32`` or ``onnx-int8`` (provenance)."""
        ...

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...

    @property
    def image_size(self) -> int: ...

    def preprocess(self, image: Image.Image) -> Any:
        """The model's own preprocessing of one RGB image (thread-safe)."""
        ...

    def encode_preprocessed(self, batch: Any) -> FloatArray:
        """Encode what :meth:`preprocess` made: a list of its outputs, or them stacked."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> FloatArray: ...

    def encode_text(self, texts: Sequence[str]) -> FloatArray: ...

    def calibrated_score(self, cosine: float) -> float | None: ...

    def cosine_at(self, probability: float) -> float | None: ...
