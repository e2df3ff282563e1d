"""The key, credential and origin checks one by one, without a server: scopes, key
expiry and matching, signatures of sessions and photo URLs, the brute-force throttle,
which credential a request presents, and the Host and same-origin rules. The end-to-end
behaviour is in tests/integration/test_auth.py and test_scopes.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from image_search_service.api.access import Access, _Refused, authenticate
from image_search_service.api.auth import (
    SESSION_COOKIE,
    ApiKey,
    FailedKeyThrottle,
    KeyRing,
    Principal,
    Signer,
    allows,
    digest,
    exposed,
    write_keys_file,
)
from image_search_service.api.security import cross_site_reason, host_allowed, host_name
from image_search_service.core.config import Settings

ADMIN = "admin-key-0123456789abcdef"
READ = "read-key-0123456789abcdef"
SIGNER = Signer(b"secret-0123456789")
PHOTO = "/api/v1/assets/00000000-0000-0000-0000-000000000001/thumbnail"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "api_key": ADMIN,
        "read_api_key": READ,
        "signing_secret": "secret-0123456789",
        "_env_file": None,
    }
    return Settings(**{**values, **overrides})


def refusal(access: Access, scope: dict[str, Any]) -> tuple[int, str, str]:
    """How ``authenticate`` refuses the request: (status, error name, detail)."""
    with pytest.raises(_Refused) as refused:
        authenticate(access, scope)
    return refused.value.status, refused.value.name, refused.value.detail


def request(path: str = "/api/v1/search", query: str = "", **headers: str) -> dict[str, Any]:
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "path": path, "query_string": query.encode(), "headers": raw}


@pytest.mark.parametrize(
    ("have", "need", "allowed"),
    [("admin", "admin", True), ("admin", "read", True), ("read", "read", True),
     ("read", "admin", False)],
)  # fmt: skip
def test_scopes(have: Any, need: Any, allowed: bool) -> None:
    assert allows(have, need) is allowed


class TestKeys:
    def test_a_key_is_valid_until_it_expires(self) -> None:
        key = ApiKey("k", "read", digest("x"), expires_at=NOW)
        assert key.valid(NOW - timedelta(seconds=1))
        assert not key.valid(NOW)
        assert not key.valid(NOW + timedelta(seconds=1))
        assert ApiKey("k", "read", digest("x")).valid(NOW)

    def test_the_environment_keys_match_with_their_scope(self, tmp_path: Path) -> None:
        ring = KeyRing(settings(tmp_path, api_key=f"{ADMIN}, second-admin-key-0123"))
        admin, second, read = (
            ring.match(ADMIN),
            ring.match("second-admin-key-0123"),
            ring.match(READ),
        )
        assert admin is not None
        assert (admin.name, admin.scope) == ("API_KEY#1", "admin")
        assert second is not None
        assert second.name == "API_KEY#2"
        assert read is not None
        assert (read.name, read.scope) == ("READ_API_KEY#1", "read")
        assert ring.match("wrong-key-0123456789abcdef") is None
        assert ring.match(ADMIN[:-1]) is None

    def test_an_expired_file_key_no_longer_matches(self, tmp_path: Path) -> None:
        write_keys_file(
            tmp_path / "api_keys.json",
            [
                ApiKey("old", "admin", digest("old-key-0123456789"), expires_at=NOW),
                ApiKey("new", "read", digest("new-key-0123456789"), expires_at=None),
            ],
        )
        ring = KeyRing(settings(tmp_path, api_key=None, read_api_key=None))
        before = ring.match("old-key-0123456789", now=NOW - timedelta(seconds=1))
        assert before is not None
        assert before.name == "old"
        assert ring.match("old-key-0123456789", now=NOW) is None
        new = ring.match("new-key-0123456789", now=NOW)
        assert new is not None
        assert new.scope == "read"
        assert ring.by_name("old", now=NOW) is None

    def test_a_key_with_an_expiry_matches_on_the_real_clock(self, tmp_path: Path) -> None:
        later = datetime.now(UTC) + timedelta(days=1)
        key = ApiKey("soon", "read", digest("soon-key-0123456789"), expires_at=later)
        write_keys_file(tmp_path / "api_keys.json", [key])
        ring = KeyRing(settings(tmp_path, api_key=None, read_api_key=None))
        found = ring.match("soon-key-0123456789")
        assert found is not None
        assert found.name == "soon"


class TestSignatures:
    def test_a_photo_url_is_valid_only_as_signed(self) -> None:
        url = SIGNER.photo_url(PHOTO, size=256, expires=100)
        assert url == f"{PHOTO}?size=256&expires=100&sig={SIGNER.mac('url', PHOTO, '256', '100')}"
        sig = url.rsplit("sig=", 1)[1]
        assert SIGNER.photo_url_valid(PHOTO, size=256, expires=100, sig=sig)
        assert not SIGNER.photo_url_valid(PHOTO, size=512, expires=100, sig=sig)
        assert not SIGNER.photo_url_valid(PHOTO, size=256, expires=101, sig=sig)
        assert not SIGNER.photo_url_valid(PHOTO + "x", size=256, expires=100, sig=sig)
        assert not Signer(b"another").photo_url_valid(PHOTO, size=256, expires=100, sig=sig)
        full = SIGNER.photo_url(PHOTO, size=None, expires=100)
        assert "size=" not in full
        assert SIGNER.photo_url_valid(PHOTO, size=None, expires=100, sig=full.split("sig=")[1])

    def test_a_session_reads_back_only_unaltered(self) -> None:
        key = ApiKey("laptop", "admin", digest(ADMIN))
        token = SIGNER.session(key, expires=1234)
        assert SIGNER.read_session(token) == ("laptop", "admin", digest(ADMIN)[:16], 1234)
        reader = SIGNER.session(ApiKey("tv", "read", digest(READ)), expires=5)
        assert SIGNER.read_session(reader) == ("tv", "read", digest(READ)[:16], 5)
        body, sig = token.split(".")
        altered = ("B" if sig[0] == "A" else "A") + sig[1:]
        assert SIGNER.read_session(f"{body}.{altered}") is None
        assert SIGNER.read_session(f"{reader.split('.')[0]}.{sig}") is None
        assert SIGNER.read_session(body) is None
        assert SIGNER.read_session(f".{sig}") is None
        assert Signer(b"another").read_session(token) is None
        not_json = "bm90IGpzb24"  # "not json", signed: still no session
        assert SIGNER.read_session(f"{not_json}.{SIGNER.mac('session', not_json)}") is None


class TestThrottle:
    def test_the_limit_then_a_wait_until_the_oldest_failure_leaves_the_window(self) -> None:
        throttle = FailedKeyThrottle(limit=3, window_s=60)
        for t in (100.0, 110.0):
            throttle.failed("1.2.3.4", now=t)
        assert throttle.retry_after("1.2.3.4", now=120.0) is None
        throttle.failed("1.2.3.4", now=120.0)
        assert throttle.retry_after("1.2.3.4", now=120.0) == 40
        assert throttle.retry_after("1.2.3.4", now=159.5) == 1
        assert throttle.retry_after("1.2.3.4", now=160.0) is None  # the first has left
        assert throttle.retry_after("5.6.7.8", now=120.0) is None  # per client

    def test_the_clock_is_the_monotonic_one_by_default(self) -> None:
        throttle = FailedKeyThrottle(limit=1, window_s=3600)
        assert throttle.retry_after("1.2.3.4") is None
        throttle.failed("1.2.3.4")
        assert throttle.retry_after("1.2.3.4") == 3600


@pytest.mark.parametrize(
    ("host", "beyond"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("[::1]", False),
     ("LOCALHOST", False), ("0.0.0.0", True), ("192.168.1.2", True), ("::", True),
     ("photos.example", True), ("Xlocalhost", True)],
)  # fmt: skip
def test_exposed(host: str, beyond: bool) -> None:
    assert exposed(host) is beyond


class TestCredentials:
    @pytest.fixture
    def access(self, tmp_path: Path) -> Access:
        return Access.from_settings(settings(tmp_path))

    def test_a_key_in_either_header(self, access: Access) -> None:
        assert authenticate(access, request(x_api_key=READ)) == Principal(
            "READ_API_KEY#1", "read", "key"
        )
        bearer = authenticate(access, request(authorization=f"Bearer  {ADMIN} "))
        assert bearer == Principal("API_KEY#1", "admin", "key")
        lower = authenticate(access, request(authorization=f"bearer {ADMIN}"))
        assert lower is not None
        assert lower.scope == "admin"

    def test_no_credentials_is_nobody(self, access: Access) -> None:
        assert authenticate(access, request()) is None
        assert authenticate(access, request(authorization="Bearer ")) is None
        assert authenticate(access, request(authorization=f"Basic {ADMIN}")) is None

    def test_a_wrong_key_is_refused_not_ignored(self, access: Access) -> None:
        assert refusal(access, request(x_api_key="wrong-key-0123456789abcdef")) == (
            401,
            "Unauthorized",
            "wrong or expired API key",
        )

    def test_a_key_sent_twice_is_refused(self, access: Access) -> None:
        scope = request()
        scope["headers"] = [(b"x-api-key", READ.encode()), (b"x-api-key", READ.encode())]
        assert refusal(access, scope) == (
            401,
            "Unauthorized",
            "X-API-Key was sent more than once; send it once",
        )

    def test_a_session_cookie(self, access: Access) -> None:
        key = access.keys.match(ADMIN)
        assert key is not None
        token = access.signer.session(key, expires=int(time.time()) + 60)
        cookie = f"theme=dark; {SESSION_COOKIE}={token}"
        assert authenticate(access, request(cookie=cookie)) == Principal(
            "API_KEY#1", "admin", "session"
        )
        stale = access.signer.session(key, expires=int(time.time()) - 1)
        assert authenticate(access, request(cookie=f"{SESSION_COOKIE}={stale}")) is None
        other = f"x{SESSION_COOKIE}={token}"  # another cookie's name
        assert authenticate(access, request(cookie=other)) is None
        tight = f"theme=dark;{SESSION_COOKIE}={token}"  # no space after the semicolon
        assert authenticate(access, request(cookie=tight)) is not None

    def test_a_signed_photo_url(self, access: Access) -> None:
        expires = int(time.time()) + 60
        url = access.signer.photo_url(PHOTO, size=256, expires=expires)
        query = url.split("?", 1)[1]
        assert authenticate(access, request(PHOTO, query)) == Principal(
            "signed-url", "read", "signed-url"
        )
        altered = "the URL's signature does not match"
        for bad in (query.replace("size=256", "size=512"), query.replace("sig=", "sig=x")):
            assert refusal(access, request(PHOTO, bad)) == (403, "Forbidden", altered)
        malformed = (403, "Forbidden", "malformed signed URL")
        assert refusal(access, request(PHOTO, "sig=abc")) == malformed
        assert refusal(access, request(PHOTO, f"size=big&expires={expires}&sig=abc")) == malformed
        old = access.signer.photo_url(PHOTO, size=None, expires=int(time.time()) - 1)
        assert refusal(access, request(PHOTO, old.split("?", 1)[1])) == (
            403,
            "Forbidden",
            "the signed URL has expired; search again",
        )
        # A signature is for photos only: on another path it is no credential.
        assert authenticate(access, request("/api/v1/assets", query)) is None


class TestOrigin:
    @pytest.mark.parametrize(
        ("header", "name"),
        [("Photos.Example:8000", "photos.example"), ("[::1]:8000", "::1"),
         ("127.0.0.1", "127.0.0.1"), ("host:notaport", None), ("", None)],
    )  # fmt: skip
    def test_host_name(self, header: str, name: str | None) -> None:
        assert host_name(header) == name

    @pytest.mark.parametrize(
        ("header", "allowed", "ok"),
        [("localhost:8000", ["localhost"], True), ("evil.example", ["localhost"], False),
         ("anything", ["*"], True), ("a.photos.example", ["*.photos.example"], True),
         ("photos.example", ["*.photos.example"], False),
         ("evilphotos.example", ["*.photos.example"], False),
         ("host:bad", ["*"], False)],
    )  # fmt: skip
    def test_host_allowed(self, header: str, allowed: list[str], ok: bool) -> None:
        assert host_allowed(header, allowed) is ok

    @staticmethod
    def reason(method: str, trusted: tuple[str, ...] = (), **headers: str) -> str | None:
        named = Headers({k.replace("_", "-"): v for k, v in headers.items()})
        return cross_site_reason(method, named, trusted_origins=trusted)

    def test_reads_are_never_cross_site_writes(self) -> None:
        for method in ("GET", "head", "OPTIONS"):
            assert self.reason(method, host="a:1", origin="http://evil") is None

    def test_same_origin_writes_pass(self) -> None:
        assert (
            self.reason("POST", host="photos.local:8000", origin="http://photos.local:8000") is None
        )
        assert self.reason("POST", host="photos.local", origin="http://photos.local:80") is None
        assert self.reason("POST", host="photos.local", origin="https://photos.local:443") is None
        assert self.reason("POST", host="[::1]:8000", origin="http://[::1]:8000") is None
        assert self.reason("DELETE", host="x", sec_fetch_site="same-origin") is None
        assert self.reason("DELETE", host="x", sec_fetch_site="none") is None
        assert self.reason("PATCH", host="x") is None  # no browser: curl, the CLI

    def test_cross_site_writes_are_refused(self) -> None:
        assert self.reason("POST", host="photos.local", origin="http://evil.example") == (
            "Origin http://evil.example is not this server (photos.local)"
        )
        assert self.reason("POST", host="photos.local", origin="null") is not None
        assert (
            self.reason("POST", host="photos.local:8000", origin="http://photos.local") is not None
        )
        assert (
            self.reason("POST", host="photos.local", origin="http://photos.local:bad") is not None
        )
        assert self.reason("POST", host="photos.local", origin="http://") is not None
        assert (
            self.reason("put", host="x", sec_fetch_site="cross-site")
            == "Sec-Fetch-Site: cross-site"
        )
        assert (
            self.reason("PUT", host="x", sec_fetch_site="Same-Site") == "Sec-Fetch-Site: same-site"
        )

    def test_a_trusted_origin_passes(self) -> None:
        trusted = ("https://Photos.Example.BOX/",)
        for origin in ("https://photos.example.box", "https://PHOTOS.EXAMPLE.BOX/"):
            assert self.reason("POST", trusted, host="x", origin=origin) is None
        assert self.reason("POST", trusted, host="x", origin="https://photos.example.bo") == (
            "Origin https://photos.example.bo is not this server (x)"
        )

    def test_a_write_without_a_host_header_is_from_elsewhere(self) -> None:
        assert self.reason("POST", origin="http://x") == "Origin http://x is not this server ()"

    def test_long_headers_are_cut_to_100_characters_in_the_reason(self) -> None:
        origin, host = "http://" + "o" * 150, "h" * 150
        assert self.reason("POST", host=host, origin=origin) == (
            f"Origin {origin[:100]} is not this server ({host[:100]})"
        )

    def test_two_origins_are_refused(self) -> None:
        headers = Headers(raw=[(b"host", b"x"), (b"origin", b"http://x"), (b"origin", b"http://x")])
        assert cross_site_reason("POST", headers) == "more than one Origin header"


def test_processes_starting_at_once_share_one_signing_secret(tmp_path: Path) -> None:
    """Several server workers making DATA_DIR's secret at the same moment all sign with
    the one that landed: none reads it half written, none keeps its own."""
    import os
    import stat
    import threading

    from image_search_service.api.auth import SECRET_FILE

    for attempt in range(10):
        config = settings(tmp_path / str(attempt), signing_secret=None)
        barrier = threading.Barrier(8)
        found: list[bytes] = []

        threads = [
            threading.Thread(target=_start_and_sign, args=(config, barrier, found))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kept = config.data_dir / SECRET_FILE
        assert found == [bytes.fromhex(kept.read_text())] * 8
        assert len(found[0]) == 32
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
        assert sorted(p.name for p in config.data_dir.iterdir()) == [SECRET_FILE]


def _start_and_sign(config: Settings, barrier: Any, found: list[bytes]) -> None:
    from image_search_service.api.auth import signing_secret

    barrier.wait()
    found.append(signing_secret(config))
