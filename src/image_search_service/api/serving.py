"""How ``image-search serve`` runs uvicorn: the settings it serves with and the
limits it puts on clients (header size, connections, idle keep-alive).

Kept out of the CLI module so that the command stays a thin wrapper.
"""

from __future__ import annotations

from typing import Any

from image_search_service.core.config import Settings

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
