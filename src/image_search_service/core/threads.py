"""One thread budget for the model and the JPEG decoders, chosen together for the cores.

The model runtime (ONNX Runtime or PyTorch) gets one intra-op thread per core; the
decoders get one thread per core too. They overlap on purpose: the decoders feed the
next batch while the model runs the current one, and neither spin-waits (ONNX Runtime's
intra-op spinning is off, PyTorch's OpenMP is told ``OMP_WAIT_POLICY=PASSIVE`` before it
loads, see the package ``__init__``), so idle threads give their core to the other side.
Measured figures are in docs/performance.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from image_search_service.core.config import Settings


@dataclass(frozen=True)
class ThreadPlan:
    cores: int
    model_threads: int
    decode_workers: int


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, as a container sees it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_threads(settings: Settings, cores: int | None = None) -> ThreadPlan:
    """Explicit settings win; 0 means "chosen for the core count"."""
    cores = cores or available_cores()
    model = settings.model_threads or settings.torch_threads or cores
    decode = settings.decode_workers or max(1, min(cores, 16))
    return ThreadPlan(cores=cores, model_threads=model, decode_workers=decode)
