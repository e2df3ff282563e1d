"""Shared fixtures: tiny real open_clip models, isolated settings and stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from tests.factories import write_tiny_model

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("TEST_REDIS_URL")
# Settings reads its fields from variables of the same name, in any case.
SETTINGS_VARIABLES = frozenset(Settings.model_fields)


@pytest.fixture(autouse=True)
def no_exported_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported DATA_DIR, API_KEY, QDRANT_URL ... never reach a test (nor the
    processes it starts with this environment); a test sets what it needs."""
    for name in list(os.environ):
        if name.lower() in SETTINGS_VARIABLES:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "clip": write_tiny_model(root / "tiny-clip", embed_dim=512, sigmoid=False),
        "siglip": write_tiny_model(root / "tiny-sigmoid", embed_dim=768, sigmoid=True, seed=1),
    }


@pytest.fixture(scope="session")
def encoders() -> EncoderRegistry:
    """Shared across tests: one encoder per spec per process, as in production."""
    return EncoderRegistry(device="cpu")


@pytest.fixture
def make_settings(tmp_path: Path, tiny_models: dict[str, Path]) -> Any:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "clip_model_name": f"local-dir:{tiny_models['clip']}",
            "clip_pretrained": "",
            "siglip_model_name": f"local-dir:{tiny_models['siglip']}",
            "siglip_pretrained": "",
            "batch_size": 4,
            "decode_workers": 2,
            "embedded_lock_timeout_s": 0.5,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    result: Settings = make_settings()
    return result


@pytest.fixture
def ctx(settings: Settings, encoders: EncoderRegistry) -> Iterator[ServiceContext]:
    context = open_context(settings, encoders=encoders)
    yield context
    context.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("TEST_POSTGRES_URL not set")
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database flushed before and after the test."""
    if not REDIS_URL:
        pytest.skip("TEST_REDIS_URL not set")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()
