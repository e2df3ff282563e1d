"""A real uvicorn server on loopback, in a thread of the test process, serving the real
app (so tests share the already-loaded tiny models and can reach the app's context)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import uvicorn
from fastapi import FastAPI

from image_search_service.api.app import create_app
from image_search_service.api.deps import AppServices
from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry

START_TIMEOUT_S = 60


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
def live_server(settings: Settings, *, encoders: EncoderRegistry) -> Iterator[LiveServer]:
    app = create_app(settings, encoders=encoders)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
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
