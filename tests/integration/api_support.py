"""Shared set-up for the HTTP API tests: a small real photo library, a running app, and
what the tests read back from it. The fixtures over these helpers are in conftest.py."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from image_search_service.api.app import create_app
from image_search_service.api.deps import AppServices
from image_search_service.context import ServiceContext
from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings
from image_search_service.db.models import Asset
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import IndexReport
from tests.factories import png_bytes, write_jpeg

IDLE_TIMEOUT_S = 120
COLOURS = [(220, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30), (250, 250, 250)]
# Capture dates written into EXIF (None: no date), one per JPEG.
TAKEN = [
    datetime(2019, 5, 1, 10, 0),
    datetime(2020, 7, 14, 18, 30),
    datetime(2021, 12, 24, 20, 0),
    None,
    datetime(2023, 3, 3, 9, 15),
]


def exif_taken(when: datetime | None) -> Image.Exif:
    exif = Image.Exif()
    if when is not None:
        exif[0x0132] = when.strftime("%Y:%m:%d %H:%M:%S")  # DateTime
    return exif


def tiny_model_settings(tiny_models: dict[str, Path], data_dir: Path, **overrides: Any) -> Settings:
    """Settings on the tiny models with their data in ``data_dir`` and no ``.env`` file: for
    fixtures wider than one test, which cannot use the per-test ``make_settings``."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "clip_model_name": f"local-dir:{tiny_models['clip']}",
        "clip_pretrained": "",
        "siglip_model_name": f"local-dir:{tiny_models['siglip']}",
        "siglip_pretrained": "",
        "_env_file": None,
        **overrides,
    }
    return Settings(**values)


def write_library(root: Path, *, seed: int = 0) -> list[Path]:
    """Five JPEGs (distinct colours, sizes and capture dates) and one PNG; libraries
    written with different ``seed`` values share no content."""
    files = [
        write_jpeg(
            root / f"photo_{i}.jpg",
            colour=COLOURS[i],
            seed=seed * 100 + i,
            size=(64 + 8 * i, 48),
            exif=exif_taken(when),
        )
        for i, when in enumerate(TAKEN)
    ]
    png = root / "drawing.png"
    png.write_bytes(png_bytes((50 + seed, 40), mode="RGB"))
    return [*files, png]


@contextmanager
def api_client(
    settings: Settings, *, encoders: EncoderRegistry | None = None, **kwargs: Any
) -> Iterator[TestClient]:
    """A TestClient whose ``with`` runs the app's lifespan (stores opened and closed).
    Its requests say ``Host: localhost`` (one of the default ALLOWED_HOSTS)."""
    kwargs.setdefault("base_url", "http://localhost")
    with TestClient(create_app(settings, encoders=encoders), **kwargs) as client:
        yield client


class ClientFactory(Protocol):
    """The ``make_client`` fixture: a TestClient over a fresh app on the test's settings
    with ``overrides`` (or on ``settings`` as given), open for the ``with`` block."""

    def __call__(
        self, settings: Settings | None = None, /, *, base_url: str | None = None, **overrides: Any
    ) -> AbstractContextManager[TestClient]: ...


def services(client: TestClient) -> AppServices:
    app = cast(FastAPI, client.app)
    result: AppServices = app.state.services
    return result


def app_ctx(client: TestClient) -> ServiceContext:
    return services(client).ctx


def wait_idle(client: TestClient, timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Wait until the app's background work (index runs, ingests) is done."""
    assert services(client).dispatcher.wait_idle(timeout_s), "background work never finished"


def metric(client: TestClient, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when the series does not exist yet)."""
    text = client.get("/metrics").text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def index(
    client: TestClient, roots: Sequence[Path | str], models: Sequence[ModelKey]
) -> IndexReport:
    """Index through the app's own context (the embedded store allows one opener)."""
    report = index_paths(app_ctx(client), list(roots), model_keys=list(models))
    assert report.failed == 0, report.failures
    return report


def stored_state(ctx: ServiceContext) -> dict[str, Any]:
    """What a rejected request must leave untouched: rows, points, uploaded files."""
    with ctx.session_factory() as session:
        assets = session.scalar(select(func.count()).select_from(Asset))
    points = {
        key: ctx.store.count(ctx.spec(key).collection) if ctx.has_collection(key) else None
        for key in MODEL_KEYS
    }
    uploads = ctx.settings.uploads_dir
    files = sorted(str(p) for p in uploads.rglob("*")) if uploads.exists() else []
    return {"assets": assets, "points": points, "uploads": files}


def assert_error(response: Any, status: int | tuple[int, ...], name: str | None = None) -> None:
    """The API's error shape: exactly ``{"error": "<ClassName>", "detail": "..."}``."""
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    if name is not None:
        assert body["error"] == name, body
