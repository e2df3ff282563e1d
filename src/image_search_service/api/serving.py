"""How ``image-search serve`` runs uvicorn: the settings it serves with, the limits it
puts on clients (header size, connections, idle keep-alive), and ``--workers N``: the
check that the stores can be shared and the app each worker process builds.

Kept out of the CLI module so that the command stays a thin wrapper.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ConfigError
from image_search_service.core.logging import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

# What ``uvicorn`` imports in each worker process of ``serve --workers N``.
WORKER_APP = "image_search_service.api.serving:worker_app"

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def settings_for_host(settings: Settings, host: str) -> Settings:
    """The bound address is always an allowed Host (``--host 192.168.1.5`` answers
    ``http://192.168.1.5:8000``); a wildcard bind adds nothing."""
    if host in _WILDCARDS or host.lower() in settings.allowed_host_list:
        return settings
    return settings.model_copy(update={"allowed_hosts": f"{settings.allowed_hosts},{host}"})


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``.

    h11 rather than httptools: uvicorn enforces a header-size limit only with h11
    (``h11_max_incomplete_event_size``; a request line plus headers past it is
    refused). ``limit_concurrency`` answers 503 past that many connections and
    tasks, so slow clients cannot hold every slot; ``timeout_keep_alive`` closes
    idle connections. The model's forward pass, not HTTP parsing, is this
    service's cost, so h11's slower parser does not show.
    """
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }


def embedded_parts(settings: Settings) -> list[str]:
    """What in ``settings`` opens in one process only, each as "VARIABLE=what to set
    (what is used now)"; empty when several processes can share the stores."""
    parts: list[str] = []
    if not settings.resolved_database_url.startswith("postgresql"):
        where = "SQLite" if settings.database_url else "SQLite in DATA_DIR"
        parts.append(f"DATABASE_URL=postgresql+psycopg://... (now {where})")
    url = settings.qdrant_url
    if not url:
        parts.append("QDRANT_URL=http://HOST:6333 (now Qdrant Edge in DATA_DIR)")
    elif url == ":memory:" or url.startswith("path:"):
        parts.append(f"QDRANT_URL=http://HOST:6333 (now {url}, in-process)")
    return parts


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse ``--workers`` above 1 on a store that opens in one process only."""
    parts = embedded_parts(settings)
    if workers > 1 and parts:
        raise ConfigError(
            f"--workers {workers} needs stores that several processes share, and the "
            "embedded ones open in one process only: set "
            + ", ".join(parts)
            + " and REDIS_URL=redis://HOST:6379/0 (for `image-search worker`), or serve "
            "with one worker"
        )


def worker_environment(settings: Settings) -> dict[str, str]:
    """What each worker process must see that ``serve`` decided beyond the environment:
    the allowed hosts (with the bound address), model preloading and the log level.
    Workers read their settings from the environment (uvicorn imports the app anew in
    each), so these go there."""
    level = logging.getLogger("image_search_service").getEffectiveLevel()
    return {
        "ALLOWED_HOSTS": settings.allowed_hosts,
        "PRELOAD_MODELS": "true" if settings.preload_models else "false",
        "LOG_LEVEL": logging.getLevelName(level),
    }


def worker_app() -> FastAPI:
    """The app of one ``serve --workers N`` process (settings from the environment)."""
    from image_search_service.api.app import create_app

    configure_logging(os.environ.get("LOG_LEVEL"))
    return create_app(load_settings(), warm_models=True)
