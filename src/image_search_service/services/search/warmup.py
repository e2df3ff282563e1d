"""Models loaded in the background right after the server starts, and where each one
stands: the first search need not pay for the load, and the page can say it waits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.errors import ServiceError
from image_search_service.core.specs import DEMO_MODEL_NAMES
from image_search_service.demo import DEMO_NOTE

logger = logging.getLogger(__name__)

ModelState = Literal["idle", "loading", "ready", "failed"]


@dataclass(frozen=True)
class ModelStatus:
    key: ModelKey
    name: str
    state: ModelState
    error: str | None = None


@dataclass(frozen=True)
class About:
    """What ``GET /api/v1/about`` tells the page: the demo or not, and the models."""

    demo: bool
    demo_note: str | None
    models: list[ModelStatus]


class ModelWarmup:
    """Loads ``keys`` one after another in a daemon thread, encoding one text so that
    the tokenizer is ready too. Searches never wait for it beyond the model's own load
    lock: a search that arrives first simply loads the model itself."""

    def __init__(self, ctx: ServiceContext, keys: Sequence[ModelKey]) -> None:
        self._ctx = ctx
        self._keys = list(keys)
        self._states: dict[ModelKey, tuple[ModelState, str | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            for key in self._keys:
                self._states[key] = ("loading", None)
        self._thread = threading.Thread(target=self._run, name="model-warmup", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the warm-up to finish (tests); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        for key in self._keys:
            try:
                encoder = self._ctx.encoder(key)
                encoder.load()
                encoder.encode_text(["a photo"])
            except ServiceError as exc:
                logger.error("warm-up: the %s model did not load: %s", key, exc.detail)
                self._set(key, "failed", exc.detail)
            except Exception as exc:  # a failed warm-up must not end the server
                logger.exception("warm-up: the %s model did not load", key)
                self._set(key, "failed", f"{type(exc).__name__}: {exc}")
            else:
                logger.info("warm-up: the %s model is ready", key)
                self._set(key, "ready", None)

    def _set(self, key: ModelKey, state: ModelState, error: str | None) -> None:
        with self._lock:
            self._states[key] = (state, error)

    def state(self, key: ModelKey) -> tuple[ModelState, str | None] | None:
        with self._lock:
            return self._states.get(key)

    def loading(self) -> list[ModelKey]:
        """The models still being loaded (a failed one is not: searches try again)."""
        with self._lock:
            return [key for key, (state, _) in self._states.items() if state == "loading"]


def about(ctx: ServiceContext, warmup: ModelWarmup | None) -> About:
    """The demo flag (the shipped demo models serve) and each model's state: the
    warm-up's where it ran, else ready once something loaded the model, else idle."""
    models = []
    for key in MODEL_KEYS:
        spec = ctx.spec(key)
        found = warmup.state(key) if warmup is not None else None
        state: ModelState
        error: str | None = None
        if found is not None:
            state, error = found
        else:
            encoder = ctx.encoders.peek(spec)
            state = "ready" if encoder is not None and encoder.loaded else "idle"
        models.append(ModelStatus(key=key, name=spec.model_name, state=state, error=error))
    demo = ctx.spec(MODEL_KEYS[0]).model_name in DEMO_MODEL_NAMES
    return About(demo=demo, demo_note=DEMO_NOTE if demo else None, models=models)
