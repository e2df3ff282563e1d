"""Bodies that belong to the HTTP API alone (health, readiness)."""

from __future__ import annotations

from typing import Literal

from image_search_service.core.schemas import OutputModel
from image_search_service.services.library.schemas import DiskStatusOut


class HealthOut(OutputModel):
    status: Literal["ok"] = "ok"


class ReadyOut(OutputModel):
    status: Literal["ready"] = "ready"
    database: str
    vector_store: str
    # Ready to search either way: a full disk refuses writes, never reads.
    disk: DiskStatusOut
