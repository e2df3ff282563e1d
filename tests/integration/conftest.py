"""Fixtures shared by the integration tests: the app behind a TestClient, the photo
library it serves, the environment of a CLI process, and a real S3 server. Each test
gets its own data dir (``make_settings``); the helpers behind these live in the
``*_support.py`` modules and ``live_server.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from tests.integration.api_support import ClientFactory, api_client, index, write_library
from tests.integration.browser_support import CHROMIUM, CHROMIUM_ARGS, BrowserTab
from tests.integration.live_server import cli_model_env, refused_url
from tests.integration.s3_support import S3Server, moto_s3_server


@pytest.fixture
def make_client(make_settings: Callable[..., Settings], encoders: EncoderRegistry) -> ClientFactory:
    """``with make_client(api_key="k") as client:`` a TestClient over a fresh app (its
    lifespan runs in the ``with``) on this test's settings with those overrides, or
    ``make_client(settings)`` on settings made elsewhere."""

    @contextmanager
    def factory(
        settings: Settings | None = None, /, *, base_url: str | None = None, **overrides: Any
    ) -> Iterator[TestClient]:
        if settings is None:
            settings = make_settings(**overrides)
        elif overrides:
            raise TypeError("pass either settings or overrides of the test's settings")
        kwargs: dict[str, Any] = {} if base_url is None else {"base_url": base_url}
        with api_client(settings, encoders=encoders, **kwargs) as client:
            yield client

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    """The app on the test's default settings, nothing indexed."""
    with make_client() as test_client:
        yield test_client


@pytest.fixture
def photo_library(tmp_path: Path) -> list[Path]:
    """``write_library`` in ``tmp_path/photos``: five JPEGs and a PNG, not indexed."""
    return write_library(tmp_path / "photos")


@pytest.fixture
def make_indexed_client(make_client: ClientFactory, photo_library: list[Path]) -> ClientFactory:
    """``make_client``, with ``photo_library`` indexed by CLIP through the app's context
    before the client is handed over."""

    @contextmanager
    def factory(
        settings: Settings | None = None, /, *, base_url: str | None = None, **overrides: Any
    ) -> Iterator[TestClient]:
        with make_client(settings, base_url=base_url, **overrides) as client:
            index(client, [photo_library[0].parent], ["clip"])
            yield client

    return factory


@pytest.fixture
def unreachable_url() -> Iterator[str]:
    """A loopback URL where nothing listens for the whole test (a Qdrant that is down)."""
    with refused_url() as url:
        yield url


@pytest.fixture
def cli_env(tmp_path: Path, tiny_models: dict[str, Path]) -> dict[str, str]:
    """The environment of an ``image-search`` subprocess on the tiny models, its data in
    ``tmp_path/data``."""
    return cli_model_env(tiny_models, tmp_path / "data")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server on loopback for the session (every test makes its own bucket)."""
    with moto_s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The standard AWS variables pointing at the loopback server (and no config files
    of this machine)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, one per page test module (tests/integration/browser_support.py)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[BrowserTab]:
    """A fresh browser context and page; no JavaScript error or dialog allowed."""
    opened = BrowserTab(browser)
    yield opened
    opened.close()
