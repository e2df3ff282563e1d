"""A real uvicorn server on loopback, in a thread of the test process, serving the real
app (so tests share the already-loaded tiny models and can reach the app's context)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn
from fastapi import FastAPI

from image_search_service.api.app import create_app
from image_search_service.api.deps import AppServices
from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry

START_TIMEOUT_S = 60
SERVE_START_TIMEOUT_S = 180


@dataclass
class LiveServer:
    url: str
    app: FastAPI

    @property
    def services(self) -> AppServices:
        return cast(AppServices, self.app.state.services)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def live_server(
    settings: Settings, *, encoders: EncoderRegistry, **config: Any
) -> Iterator[LiveServer]:
    """The app on a free loopback port until the ``with`` ends; ``config``: more
    ``uvicorn.Config`` options."""
    app = create_app(settings, encoders=encoders)
    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
    server_config = uvicorn.Config(app, host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(server_config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class ServeProcess:
    """``image-search serve`` in a child process, configured by environment."""

    process: subprocess.Popen[bytes]
    client: httpx.Client
    log: Path
    env: dict[str, str]


def cli_model_env(tiny_models: dict[str, Path], data_dir: Path) -> dict[str, str]:
    """The environment of a CLI process on the tiny models with its data in ``data_dir``
    (this machine's QDRANT_* and DATABASE_* variables left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "DATABASE_"))}
    env.update(
        {
            "CLIP_MODEL_NAME": f"local-dir:{tiny_models['clip']}",
            "SIGLIP_MODEL_NAME": f"local-dir:{tiny_models['siglip']}",
            "CLIP_PRETRAINED": "",
            "SIGLIP_PRETRAINED": "",
            "DATA_DIR": str(data_dir),
        }
    )
    return env


def tiny_model_env(tiny_models: dict[str, Path], data_dir: Path) -> dict[str, str]:
    """``cli_model_env`` for ``image-search serve``: no API key, on the CPU."""
    env = cli_model_env(tiny_models, data_dir)
    env.update({"API_KEY": "", "DEVICE": "cpu", "BATCH_SIZE": "8"})
    return env


def start_serve(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``image-search serve ARGS`` in a child process, its output appended to
    ``workdir/server.log``."""
    with (workdir / "server.log").open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "image_search_service.cli", "serve", *args],
            env=env,
            cwd=workdir,  # no stray .env file from the checkout
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an orchestrator stops it; SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve_process(workdir: Path, env: dict[str, str], *args: str) -> Iterator[ServeProcess]:
    """A started server (``/health`` answers), on a free port, stopped afterwards."""
    port = free_port()
    log = workdir / "server.log"
    log.unlink(missing_ok=True)
    process = start_serve(workdir, env, "--port", str(port), *args)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield ServeProcess(process, client, log, env)
    finally:
        client.close()
        stop_process(process)
