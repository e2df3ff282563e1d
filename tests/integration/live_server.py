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
    """A port free a moment ago, for a child process that must be told its port
    (``serve --port`` takes no 0). Another process may take it before the child binds:
    :func:`serve_process` then starts again on another; in this process, bind a socket
    to port 0 and hand it over instead (:func:`live_server`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def refused_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where nothing listens while the ``with`` lasts: the port is
    held by a bound socket that never listens, so a connection is refused (no guess that
    some well-known port is unused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def live_server(
    settings: Settings, *, encoders: EncoderRegistry, **config: Any
) -> Iterator[LiveServer]:
    """The app on a free loopback port until the ``with`` ends; ``config``: more
    ``uvicorn.Config`` options."""
    app = create_app(settings, encoders=encoders)
    # Bound here, on port 0, and handed to uvicorn: no window in which another process
    # could take the port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
    server_config = uvicorn.Config(app, host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(server_config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
    )
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
        sock.close()


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


PORT_TAKEN = "address already in use"
RUNNING = "Uvicorn running on"
PORT_ATTEMPTS = 3


@contextmanager
def serve_process(workdir: Path, env: dict[str, str], *args: str) -> Iterator[ServeProcess]:
    """A started server (``/health`` answers), on a free port, stopped afterwards. A port
    taken between :func:`free_port` and the child's bind is tried again on another."""
    log = workdir / "server.log"
    for _ in range(PORT_ATTEMPTS):
        log.unlink(missing_ok=True)
        port = free_port()
        process = start_serve(workdir, env, "--port", str(port), *args)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            if _wait_healthy(process, client, log):
                yield ServeProcess(process, client, log, env)
                return
        finally:
            client.close()
            stop_process(process)
    raise AssertionError(f"no free port in {PORT_ATTEMPTS} tries:\n{log.read_text()}")


def _wait_healthy(process: subprocess.Popen[bytes], client: httpx.Client, log: Path) -> bool:
    """True once the child answers /health; False when it stopped because its port was
    taken; fails the test on any other stop or after the deadline."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            said = log.read_text()
            assert PORT_TAKEN in said.lower(), said
            return False
        try:
            # Ours answers once it says it bound the port (another process's server on
            # that port would answer /health too).
            if client.get("/health").status_code == 200 and RUNNING in log.read_text():
                return True
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
        time.sleep(0.2)
