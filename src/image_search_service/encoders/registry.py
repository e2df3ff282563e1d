"""One encoder per model spec per process, created at start-up and handed down."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from image_search_service.encoders.base import EncodeObserver

if TYPE_CHECKING:
    from image_search_service.core.specs import ModelSpec
    from image_search_service.encoders.openclip import OpenClipEncoder


class EncoderRegistry:
    """Encoders are made on first use, so a process that never encodes (``status``,
    ``reembed status``) never imports torch."""

    def __init__(
        self,
        *,
        device: str = "auto",
        cache_dir: Path | None = None,
        observer: EncodeObserver | None = None,
    ) -> None:
        self._device = device
        self._cache_dir = cache_dir
        self._observer = observer
        self._encoders: dict[ModelSpec, OpenClipEncoder] = {}
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec) -> OpenClipEncoder:
        with self._lock:
            encoder = self._encoders.get(spec)
            if encoder is None:
                from image_search_service.encoders.openclip import OpenClipEncoder

                encoder = OpenClipEncoder(
                    spec, device=self._device, cache_dir=self._cache_dir, observer=self._observer
                )
                self._encoders[spec] = encoder
            return encoder
