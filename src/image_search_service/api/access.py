"""The access check in front of every route (see ``auth.py`` for the rules).

:class:`Access` holds the key ring, the signer and the brute-force throttle of one app;
:class:`AccessMiddleware` finds who is calling before any route runs, refuses what needs
credentials and has none (401), and records admin actions once they are answered.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from uuid import UUID

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from image_search_service.api.auth import (
    OPEN,
    SESSION_COOKIE,
    FailedKeyThrottle,
    KeyRing,
    Principal,
    Signer,
    signing_secret,
)
from image_search_service.api.errors import error_content
from image_search_service.api.routes import API_PREFIX
from image_search_service.api.security import SAFE_METHODS
from image_search_service.core.config import Settings
from image_search_service.core.disk import is_disk_full
from image_search_service.core.schemas import PhotoUrls

if TYPE_CHECKING:
    from image_search_service.api.deps import AppServices

logger = logging.getLogger(__name__)

# Reachable without credentials: liveness, the sign-in itself, and the page shells
# (HTML, CSS, JavaScript: no data; what they show comes from the API, signed in).
PUBLIC_PATHS = frozenset({"/health", f"{API_PREFIX}/auth/session", "/", "/admin"})
PUBLIC_PREFIXES = ("/static/",)
PHOTO_PATH = re.compile(rf"^{API_PREFIX}/assets/[0-9a-fA-F-]{{36}}/(thumbnail|file)$")


@dataclass
class Access:
    """One app's credentials: keys, the signing secret, the throttle, the URL lifetime."""

    keys: KeyRing
    signer: Signer
    throttle: FailedKeyThrottle
    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(
            keys=KeyRing(settings),
            signer=Signer(signing_secret(settings)),
            throttle=FailedKeyThrottle(
                limit=settings.auth_max_failures, window_s=settings.auth_failure_window_s
            ),
            settings=settings,
        )

    def __post_init__(self) -> None:
        self._ever_keyed = False

    def required(self) -> bool:
        """Credentials are needed once any key exists (environment or keys file), and stay
        needed after the last key is revoked: that fails closed (nothing but /health
        answers) instead of opening a server that may listen beyond this machine."""
        if not self._ever_keyed and self.keys.configured():
            self._ever_keyed = True
        return self._ever_keyed

    def photo_url(self, path: str, *, size: int | None = None) -> str:
        """``path`` as ``<img>`` may load it: signed, while credentials are required."""
        if not self.required():
            return f"{path}?size={size}" if size is not None else path
        expires = int(time.time()) + self.settings.signed_url_ttl_s
        return self.signer.photo_url(path, size=size, expires=expires)

    def urls(self, asset_id: UUID) -> PhotoUrls:
        base = f"{API_PREFIX}/assets/{asset_id}"
        return PhotoUrls(
            thumbnail=self.photo_url(f"{base}/thumbnail", size=256),
            preview=self.photo_url(f"{base}/thumbnail", size=512),
            file=self.photo_url(f"{base}/file"),
        )

    def session_principal(self, token: str) -> Principal | None:
        read = self.signer.read_session(token)
        if read is None:
            return None
        name, scope, fingerprint, expires = read
        key = self.keys.by_name(name)
        # The very key that signed in must still be valid: revoking, expiring or replacing
        # it (a new key under the same name) ends its sessions too.
        if (
            expires < time.time()
            or key is None
            or key.scope != scope
            or not hmac.compare_digest(key.sha256[: len(fingerprint)], fingerprint)
        ):
            return None
        return Principal(name=name, scope=scope, via="session")


class _Refused(Exception):
    def __init__(self, status: int, name: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.name, self.detail, self.headers = status, name, detail, headers or {}


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _presented_key(headers: Headers) -> str | None:
    values = headers.getlist("x-api-key")
    if len(values) > 1:
        # Which copy counts would depend on the parser (and a proxy may add one).
        raise _Refused(401, "Unauthorized", "X-API-Key was sent more than once; send it once")
    if values:
        return values[0]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _cookie(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def authenticate(access: Access, scope: Scope) -> Principal | None:
    """Who the request is from, or None (no credentials). Wrong credentials raise."""
    headers = Headers(scope=scope)
    presented = _presented_key(headers)
    if presented is not None:
        key = access.keys.match(presented)
        if key is None:
            raise _Refused(401, "Unauthorized", "wrong or expired API key")
        return Principal(name=key.name, scope=key.scope, via="key")
    token = _cookie(headers, SESSION_COOKIE)
    # A stale cookie (signed out elsewhere, key rotated) is no credential, not an attack.
    principal = access.session_principal(token) if token else None
    if principal is not None:
        return principal  # a signed-in page may still hold an expired photo URL
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "sig" in query and PHOTO_PATH.match(path):
        return _signed_url(access, path, query)
    return None


def _signed_url(access: Access, path: str, query: dict[str, list[str]]) -> Principal:
    try:
        expires = int(query["expires"][0])
        sig = query["sig"][0]
        size = int(query["size"][0]) if "size" in query else None
    except (KeyError, ValueError, IndexError):
        raise _Refused(403, "Forbidden", "malformed signed URL") from None
    if not access.signer.photo_url_valid(path, size=size, expires=expires, sig=sig):
        raise _Refused(403, "Forbidden", "the URL's signature does not match")
    if expires < time.time():
        raise _Refused(403, "Forbidden", "the signed URL has expired; search again")
    return Principal(name="signed-url", scope="read", via="signed-url")


class AccessMiddleware:
    """Every request: who is calling (``scope["state"]["principal"]``), 401 for what needs
    credentials and has none, 429 for a client past its wrong tries, and an audit record
    for each admin action (``scope["state"]["audit"]``, set by the admin dependency)."""

    def __init__(self, app: ASGIApp, *, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        try:
            state["principal"] = self._principal(scope)
        except _Refused as refused:
            await _refuse(send, refused)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if state.get("audit"):
                await _audit(scope, state["principal"], status)

    def _principal(self, scope: Scope) -> Principal | None:
        if not self.access.required():
            return OPEN
        path = scope["path"]
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        client = _client(scope)
        signing_in = path == f"{API_PREFIX}/auth/session" and scope.get("method") == "POST"
        # Throttled: what checks credentials. Never sign-out, nor the page shells.
        if not public or signing_in:
            wait = self.access.throttle.retry_after(client)
            if wait is not None:
                raise _Refused(
                    429,
                    "TooManyFailedAttempts",
                    f"too many wrong credentials from this address; try again in {wait} s",
                    {"retry-after": str(wait)},
                )
        try:
            principal = authenticate(self.access, scope)
        except _Refused as refused:
            if refused.status == 401:
                self.access.throttle.failed(client)
            if public:
                return None  # the page shell loads anyway; its API calls will say why
            raise
        if principal is None and not public:
            raise _Refused(
                401,
                "Unauthorized",
                "credentials required: an API key (X-API-Key or Authorization: Bearer) "
                "or a signed-in session",
            )
        return principal


async def _refuse(send: Send, refused: _Refused) -> None:
    body = json.dumps(error_content(refused.name, refused.detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if refused.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="image-search"'))
    headers += [(k.encode(), v.encode()) for k, v in refused.headers.items()]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _audit(scope: Scope, principal: Principal | None, status: int) -> None:
    services: AppServices | None = getattr(scope["app"].state, "services", None)
    if services is None:
        return
    record: dict[str, Any] = {
        "at": datetime.now(UTC),
        "client": _client(scope),
        "principal": principal.name if principal else "none",
        "scope": principal.scope if principal else "none",
        "method": str(scope.get("method", "")),
        "path": scope["path"][:500],
        "status": status,
    }
    logger.info(
        "audit: %(method)s %(path)s -> %(status)d by %(principal)s (%(scope)s) from %(client)s",
        record,
    )
    try:
        await anyio.to_thread.run_sync(lambda: services.record_audit(record))
    except Exception as exc:  # the action happened; a lost audit row must not make a 500
        if is_disk_full(exc):  # expected while the disk is full: one line, not a trace
            logger.error(
                "could not store the audit record of %(method)s %(path)s: the disk is full",
                record,
            )
        else:
            logger.exception("could not store the audit record of %(method)s %(path)s", record)


def needs_audit(method: str) -> bool:
    return method.upper() not in SAFE_METHODS
