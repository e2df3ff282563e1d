"""Who may call the API: keys with a scope, the page's session cookie, signed photo URLs.

- **Keys.** ``API_KEY`` (admin: everything) and ``READ_API_KEY`` (search and reads only),
  each one key or a comma-separated list, plus the keys made with ``image-search keys``
  (``DATA_DIR/api_keys.json``: names, scopes, SHA-256 digests, optional expiry), re-read
  when that file changes, so keys rotate without a restart. A key is sent as
  ``X-API-Key`` or ``Authorization: Bearer``; it is compared by digest, in constant time.
- **Sessions.** The page exchanges a key for a cookie (``POST /api/v1/auth/session``):
  HttpOnly, SameSite=Strict, Secure over HTTPS, with an expiry; it names the key, so a
  revoked or expired key ends its sessions too. Nothing secret is left where a script
  on the page could read it.
- **Signed URLs.** Search answers and asset lists carry thumbnail and file URLs signed
  with HMAC over the asset id, the kind (and size) and an expiry, so ``<img>`` tags work
  without a key in the URL. An altered or expired signature is 403.
- **Brute force.** A client that sends wrong credentials too often is answered 429 with
  ``Retry-After`` until its window has passed.

The rule: with no key configured, the API is open, and ``image-search serve`` then
listens on loopback only (or beyond it with ``--allow-unauthenticated``, said loudly).
With any key configured, every route needs credentials except ``/health``, the sign-in
endpoint and the page shells (HTML, CSS and JavaScript, which hold no data).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from image_search_service.core.config import Settings
from image_search_service.core.errors import ConfigError

logger = logging.getLogger(__name__)

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
KEYS_FILE = "api_keys.json"
SECRET_FILE = "signing.key"
SESSION_COOKIE = "image_search_session"
KEY_RELOAD_S = 1.0  # how often the keys file's mtime is looked at


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def allows(have: Scope, need: Scope) -> bool:
    return have == "admin" or need == "read"


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    sha256: str
    expires_at: datetime | None = None

    def valid(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and scope, and how the credential came."""

    name: str
    scope: Scope
    via: Literal["key", "session", "signed-url", "open"]


OPEN = Principal(name="anyone", scope="admin", via="open")


# -- keys ---------------------------------------------------------------------------------
def _env_keys(settings: Settings) -> list[ApiKey]:
    keys = []
    for scope, raw in (("admin", settings.api_key), ("read", settings.read_api_key)):
        for i, key in enumerate(_split(raw)):
            name = "API_KEY" if scope == "admin" else "READ_API_KEY"
            keys.append(ApiKey(f"{name}#{i + 1}", scope, digest(key)))  # type: ignore[arg-type]
    return keys


def _split(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def read_keys_file(path: Path) -> list[ApiKey]:
    """The keys of ``image-search keys``; a missing file holds none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the API keys in {path}: {exc}") from None
    keys = []
    for entry in data.get("keys", []):
        expires = entry.get("expires_at")
        keys.append(
            ApiKey(
                name=str(entry["name"]),
                scope="admin" if entry.get("scope") == "admin" else "read",
                sha256=str(entry["sha256"]),
                expires_at=datetime.fromisoformat(expires) if expires else None,
            )
        )
    return keys


def write_keys_file(path: Path, keys: Sequence[ApiKey]) -> None:
    entries = [
        {
            "name": k.name,
            "scope": k.scope,
            "sha256": k.sha256,
            "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        }
        for k in keys
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": entries}, fh, indent=2)
    os.replace(temp, path)


class KeyRing:
    """Every valid key: the environment's and the keys file's (re-read when it changes)."""

    def __init__(self, settings: Settings) -> None:
        self._env = _env_keys(settings)
        self._path = settings.data_dir / KEYS_FILE
        self._lock = threading.Lock()
        self._file_keys: list[ApiKey] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < KEY_RELOAD_S:
            return
        self._checked = now
        try:
            info = self._path.stat()
            stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and not force:
            return
        try:
            self._file_keys = read_keys_file(self._path) if stamp is not None else []
            self._stamp = stamp
        except ConfigError as exc:  # keep the last good keys; say why once per change
            logger.error("%s", exc.detail)
            self._stamp = stamp

    def keys(self) -> list[ApiKey]:
        with self._lock:
            self._reload()
            return [*self._env, *self._file_keys]

    def configured(self) -> bool:
        return bool(self.keys())

    def match(self, presented: str, *, now: datetime | None = None) -> ApiKey | None:
        """The valid key ``presented`` is, compared by digest in constant time (every key
        is compared, so the time says nothing about which one came close)."""
        now = now or datetime.now(UTC)
        wanted = digest(presented).encode()
        found = None
        for key in self.keys():
            if hmac.compare_digest(wanted, key.sha256.encode()) and key.valid(now):
                found = key
        return found

    def by_name(self, name: str, *, now: datetime | None = None) -> ApiKey | None:
        now = now or datetime.now(UTC)
        return next((k for k in self.keys() if k.name == name and k.valid(now)), None)


# -- the signing secret -------------------------------------------------------------------
def signing_secret(settings: Settings) -> bytes:
    """``SIGNING_SECRET``, or a random secret kept in ``DATA_DIR`` (made once, 0600), so
    sessions and signed URLs survive a restart and agree across processes sharing it."""
    if settings.signing_secret:
        return settings.signing_secret.encode()
    path = settings.data_dir / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    # Written whole under a private name, then linked into place: a process reading the
    # file (several server workers starting at once) never sees it half written, and
    # link() fails when another process made it first.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_FILE}.")
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp makes it 0600
            fh.write(secret.hex())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process made it first: use theirs
            return bytes.fromhex(path.read_text().strip())
    finally:
        os.unlink(temporary)
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 tokens for sessions and photo URLs, with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def mac(self, purpose: str, *parts: str) -> str:
        message = "\n".join((purpose, *parts)).encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def check(self, signature: str, purpose: str, *parts: str) -> bool:
        return hmac.compare_digest(signature.encode(), self.mac(purpose, *parts).encode())

    # -- photo URLs ------------------------------------------------------------------------
    def photo_url(self, path: str, *, size: int | None, expires: int) -> str:
        sig = self.mac("url", path, str(size or ""), str(expires))
        query = f"size={size}&" if size is not None else ""
        return f"{path}?{query}expires={expires}&sig={sig}"

    def photo_url_valid(self, path: str, *, size: int | None, expires: int, sig: str) -> bool:
        return self.check(sig, "url", path, str(size or ""), str(expires))

    # -- sessions --------------------------------------------------------------------------
    def session(self, key: ApiKey, *, expires: int) -> str:
        # The key's name, scope and a digest prefix (never the key): a session lives only
        # as long as that very key does.
        data = {"k": key.name, "s": key.scope, "d": key.sha256[:16], "e": expires}
        body = _b64(json.dumps(data).encode())
        return f"{body}.{self.mac('session', body)}"

    def read_session(self, token: str) -> tuple[str, Scope, str, int] | None:
        """(key name, scope, digest prefix, expiry) of a session this server signed."""
        body, _, sig = token.partition(".")
        if not body or not sig or not self.check(sig, "session", body):
            return None
        try:
            data = json.loads(_unb64(body))
            scope: Scope = "admin" if data["s"] == "admin" else "read"
            return str(data["k"]), scope, str(data["d"]), int(data["e"])
        except (ValueError, KeyError, TypeError):
            return None


# -- brute force ----------------------------------------------------------------------------
class FailedKeyThrottle:
    """At most ``limit`` wrong credentials per client in ``window_s``; then 429 until the
    oldest of them leaves the window."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, client: str, *, now: float | None = None) -> int | None:
        """Seconds the client must wait, or None when it may try."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) < self.limit:
                if not failures:
                    self._failures.pop(client, None)
                return None
            return max(1, int(self.window_s - (now - failures[0]) + 0.999))

    def failed(self, client: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # a flood of addresses: forget the oldest
                self._failures.pop(next(iter(self._failures)))


def exposed(host: str) -> bool:
    """Whether listening on ``host`` reaches beyond this machine (``0.0.0.0`` does)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True


def names(keys: Iterable[ApiKey]) -> list[str]:
    return [k.name for k in keys]
