"""Helpers for the re-embedding, collection and worker tests: libraries of real JPEGs,
the environment a CLI process reads its settings from, and a private redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from image_search_service.cli import main
from image_search_service.context import ServiceContext
from image_search_service.core.config import ModelKey, Settings
from image_search_service.db import repository as repo
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import IndexReport
from image_search_service.services.reembed.progress import reembed_progress
from image_search_service.services.reembed.schemas import ReembedProgressOut
from tests.factories import write_jpeg

_SETTINGS_ENV = (
    "data_dir",
    "database_url",
    "qdrant_url",
    "redis_url",
    "clip_model_name",
    "clip_pretrained",
    "siglip_model_name",
    "siglip_pretrained",
    "clip_embedding_dim",
    "siglip_embedding_dim",
    "qdrant_collection",
    "siglip_collection",
    "batch_size",
    "decode_workers",
    "embedded_lock_timeout_s",
    "hnsw_m",
    "hnsw_ef_construct",
)


def write_photos(directory: Path, count: int, *, start: int = 0) -> list[Path]:
    """``count`` small, distinct JPEGs."""
    return [
        write_jpeg(
            directory / f"p{i:04d}.jpg",
            seed=i,
            colour=((i * 37) % 256, (i * 91) % 256, (i * 13) % 256),
        )
        for i in range(start, start + count)
    ]


def index_clip_only(ctx: ServiceContext, roots: Sequence[Path]) -> IndexReport:
    """The library as it stands before a migration: embedded by the baseline only."""
    return index_paths(ctx, list(roots), model_keys=["clip"])


def settings_env(settings: Settings) -> dict[str, str | None]:
    """The environment that makes ``load_settings()`` equal ``settings`` (None = unset)."""
    env: dict[str, str | None] = {}
    for name in _SETTINGS_ENV:
        value: Any = getattr(settings, name)
        env[name.upper()] = None if value is None else str(value)
    return env


def invoke(
    env: dict[str, str | None], *args: str, ok: bool = True, input: str | None = None
) -> Result:
    """Run the CLI in this process (fast: models and libraries are already imported)."""
    result = CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def subprocess_env(env: dict[str, str | None]) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QDRANT_", "DATABASE_", "REDIS_", "DATA_DIR"))
    }
    base.update({k: v for k, v in env.items() if v is not None})
    base["LOG_LEVEL"] = "INFO"
    return base


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "image_search_service.cli", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own, so it can be killed and restarted."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", ""]
        # appendfsync always: what was acknowledged survives even a SIGKILL of Redis.
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else [
                "--appendonly",
                "no",
            ]
        )
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def progress_json(ctx: ServiceContext) -> dict[str, Any]:
    """Re-embedding progress in its public shape, as ``reembed status --json`` prints it."""
    data: dict[str, Any] = ReembedProgressOut.model_validate(reembed_progress(ctx)).model_dump(
        mode="json"
    )
    return data


def coverage_of(ctx: ServiceContext, key: ModelKey) -> repo.Coverage:
    with ctx.transaction() as session:
        return repo.coverage(session, ctx.spec(key))
