"""Bodies that belong to the HTTP API alone (health, readiness)."""

from __future__ import annotations

from typing import Literal

from image_search_service.core.schemas import OutputModel


class HealthOut(OutputModel):
    status: Literal["ok"] = "ok"


class ReadyOut(OutputModel):
    status: Literal["ready"] = "ready"
    database: str
    vector_store: str
