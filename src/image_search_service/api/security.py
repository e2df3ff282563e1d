"""Who may reach the API from a browser: the Host check and same-origin writes.

Two attacks need no key when ``API_KEY`` is unset (the default, bound to 127.0.0.1):

- **Cross-site writes.** Any web page the user visits can POST a form or ``fetch()``
  to ``http://127.0.0.1:8000`` (multipart and DELETE included). Browsers label such
  requests: ``Sec-Fetch-Site: cross-site`` (or ``same-site``) and an ``Origin`` that
  is not this server's. A request with an unsafe method (anything but GET, HEAD,
  OPTIONS) so labelled is refused with 403 ``CrossSiteRequest``. Clients that are
  not browsers (curl, scripts, the CLI) send neither header and pass; so does the
  same-origin web page (``Sec-Fetch-Site: same-origin``, ``Origin`` = this server).
- **DNS rebinding.** A page on ``evil.example`` whose name then resolves to
  127.0.0.1 talks to the API "same-origin" but with ``Host: evil.example``. Every
  request whose Host is not in ``ALLOWED_HOSTS`` is refused with 400 ``InvalidHost``.

This is Starlette's ``TrustedHostMiddleware`` idea (same ``*.example.com`` patterns),
written out here so refusals carry the API's ``{"error", "detail"}`` body, and joined
with the origin check so one pass over the headers does both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from image_search_service.api.errors import error_content

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CROSS = frozenset({"cross-site", "same-site"})


def host_name(host_header: str) -> str | None:
    """The host part of a Host header (``[::1]:8000`` -> ``::1``), lowercased."""
    try:
        parts = urlsplit(f"//{host_header.strip()}")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts.hostname or None


def host_allowed(host_header: str, allowed: Iterable[str]) -> bool:
    name = host_name(host_header)
    if name is None:
        return False
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def cross_site_reason(
    method: str, headers: Headers, *, trusted_origins: Iterable[str] = ()
) -> str | None:
    """Why this request is a cross-site write, or None when it is not one."""
    if method.upper() in SAFE_METHODS:
        return None
    origins = headers.getlist("origin")
    if len(origins) > 1:  # no browser sends two; which one a check reads is a guess
        return "more than one Origin header"
    origin = origins[0] if origins else None
    if origin is not None:
        own = headers.get("host", "").strip().lower()
        if origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in trusted_origins}:
            return None
        if origin == "null" or _netloc(origin) != own:
            return f"Origin {origin[:100]} is not this server ({own[:100]})"
        return None  # same origin, whatever Sec-Fetch-Site says about a proxy's view
    site = headers.get("sec-fetch-site", "").lower()
    if site in _CROSS:
        return f"Sec-Fetch-Site: {site}"
    return None


def _netloc(origin: str) -> str | None:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    # Browsers omit the default port from both Origin and Host.
    return host if port is None or port == default else f"{host}:{port}"


class BrowserGuardMiddleware:
    """Refuse requests for an unknown Host (400) and cross-site writes (403)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        trusted_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        self.trusted_origins = tuple(o.strip() for o in trusted_origins if o.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not host_allowed(host, self.allowed_hosts):
            await _refuse(
                send,
                400,
                "InvalidHost",
                f"Host {host[:100]!r} is not served here; add it to ALLOWED_HOSTS",
            )
            return
        reason = cross_site_reason(
            str(scope.get("method", "GET")), headers, trusted_origins=self.trusted_origins
        )
        if reason is not None:
            await _refuse(
                send,
                403,
                "CrossSiteRequest",
                f"cross-site {scope.get('method')} refused ({reason}); add the page's origin "
                "to TRUSTED_ORIGINS if it may change this library",
            )
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, name: str, detail: str) -> None:
    body = json.dumps(error_content(name, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin, Sec-Fetch-Site"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
