"""Private by default: a real `image-search serve` on every interface, with keys.

Every route the OpenAPI document lists needs credentials (so a new route cannot slip
through), the read key searches but cannot administer, photo URLs are signed, wrong
keys are throttled, keys rotate without a restart, admin actions are audited, and no
secret reaches the logs or any answer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from image_search_service.api.auth import Signer
from image_search_service.context import open_context
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import tiny_model_settings, write_library
from tests.integration.live_server import (
    free_port,
    serve_process,
    start_serve,
    stop_process,
    tiny_model_env,
)

pytestmark = pytest.mark.slow

ADMIN = "admin-key-0123456789abcdef"
READ = "read-key-0123456789abcdef"
SIGNING = "signing-secret-0123456789abcdef"
S3_SECRET = "s3-secret-0123456789abcdef"
SECRETS = (ADMIN, READ, SIGNING, S3_SECRET)
# Reachable without credentials by design: liveness, the sign-in, the page shells.
PUBLIC = {("GET", "/health"), ("GET", "/api/v1/auth/session"), ("POST", "/api/v1/auth/session")}
PUBLIC |= {("DELETE", "/api/v1/auth/session")}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    env: dict[str, str]
    data_dir: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


@pytest.fixture
def keyed_server(
    tmp_path: Path, tiny_models: dict[str, Path], encoders: EncoderRegistry
) -> Iterator[Served]:
    data_dir = tmp_path / "data"
    write_library(tmp_path / "photos")
    ctx = open_context(tiny_model_settings(tiny_models, data_dir), encoders=encoders)
    try:
        index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
    finally:
        ctx.close()  # the server needs the embedded store to itself
    env = tiny_model_env(tiny_models, data_dir)
    env.update(
        {
            "API_KEY": ADMIN,
            "READ_API_KEY": READ,
            "SIGNING_SECRET": SIGNING,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AUTH_MAX_FAILURES": "5",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
    )
    with serve_process(tmp_path, env, "--host", "0.0.0.0") as served:
        url = str(served.client.base_url).rstrip("/")
        yield Served(served.process, url, served.log, env, data_dir)


def _routes(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for path, methods in openapi["paths"].items():
        for method in methods:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path))
    return found


def _concrete(path: str) -> str:
    # Path parameters filled with a well-formed id: the check must come before the lookup.
    return re.sub(r"\{[^}]+\}", str(UUID(int=1)), path)


def test_serve_beyond_loopback_without_a_key_refuses_to_start(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    env = tiny_model_env(tiny_models, tmp_path / "data")
    process = start_serve(tmp_path, env, "--host", "0.0.0.0", "--port", str(free_port()))
    try:
        assert process.wait(timeout=120) != 0
    finally:
        stop_process(process)
    said = (tmp_path / "server.log").read_text()
    assert "API_KEY" in said
    assert "--allow-unauthenticated" in said
    assert "Uvicorn running" not in said


def test_every_route_needs_credentials_and_scopes_hold(keyed_server: Served) -> None:
    with keyed_server.client(READ) as reader:
        openapi = reader.get("/openapi.json").json()
    routes = _routes(openapi)
    assert len(routes) > 25  # the whole API, not an empty document
    with keyed_server.client() as anonymous:
        for method, path in routes:
            answer = anonymous.request(method, _concrete(path))
            if (method, path) in PUBLIC:
                assert answer.status_code != 401, (method, path)
                continue
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
            # No detail about what exists: the same body for every route.
            assert answer.json()["error"] == "Unauthorized"
            assert str(UUID(int=1)) not in answer.text
        for path in ("/docs", "/openapi.json", "/metrics", "/ready"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/").status_code == 200  # the page shell, to sign in from

    with keyed_server.client(READ) as reader:
        found = reader.get("/api/v1/search", params={"q": "a red photo", "limit": 3})
        assert found.status_code == 200, found.text
        hits = found.json()["results"]
        assert len(hits) == 3
        assert reader.get("/api/v1/assets").status_code == 200
        admin_routes = [(m, p) for m, p in routes if p.startswith("/api/v1/admin")]
        admin_routes += [("POST", "/api/v1/assets"), ("POST", "/api/v1/ingest")]
        for method, path in admin_routes:
            answer = reader.request(method, _concrete(path))
            assert answer.status_code == 403, (method, path, answer.status_code)
    with keyed_server.client(ADMIN) as admin:
        assert admin.get("/api/v1/admin/status").status_code == 200
        bearer = httpx.get(
            f"{keyed_server.url}/api/v1/admin/status",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert bearer.status_code == 200

    # Signed photo URLs: they work without a key, altered or expired ones do not.
    with keyed_server.client() as anonymous:
        urls = hits[0]["urls"]
        thumbnail = anonymous.get(urls["thumbnail"])
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert anonymous.get(urls["file"]).status_code == 200
        assert "sig=" in urls["file"]
        assert ADMIN not in urls["file"]
        assert READ not in urls["file"]
        tampered = urls["thumbnail"].replace("size=256", "size=512")
        assert anonymous.get(tampered).status_code == 403
        other = urls["thumbnail"].replace(hits[0]["asset_id"], hits[1]["asset_id"])
        assert anonymous.get(other).status_code == 403
        path = f"/api/v1/assets/{hits[0]['asset_id']}/thumbnail"
        expired = Signer(SIGNING.encode()).photo_url(path, size=256, expires=int(time.time()) - 1)
        refused = anonymous.get(expired)
        assert refused.status_code == 403
        assert "expired" in refused.json()["detail"]


def test_wrong_keys_are_throttled(keyed_server: Served) -> None:
    with keyed_server.client("not-the-key") as wrong:
        answers = [wrong.get("/api/v1/assets").status_code for _ in range(5)]
        assert answers == [401] * 5
        throttled = wrong.get("/api/v1/assets")
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    # The right key from the same address waits too: guessing cannot go on in between.
    with keyed_server.client(READ) as reader:
        assert reader.get("/api/v1/assets").status_code == 429


def test_keys_rotate_without_a_restart_and_admin_actions_are_audited(
    keyed_server: Served,
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", "keys", "create", "laptop"],
        env=keyed_server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    new_key = made.stdout.strip()
    assert len(new_key) >= 32
    assert new_key not in (keyed_server.data_dir / "api_keys.json").read_text()
    with keyed_server.client(new_key) as laptop:
        deadline = time.monotonic() + 10
        while laptop.get("/api/v1/assets").status_code != 200:
            assert time.monotonic() < deadline, "the new key was never accepted"
            time.sleep(0.2)
        subprocess.run(
            [sys.executable, "-m", "image_search_service.cli", "keys", "revoke", "laptop"],
            env=keyed_server.env,
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while laptop.get("/api/v1/assets").status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.2)

    with keyed_server.client(ADMIN) as admin:
        changed = admin.put(
            "/api/v1/admin/rollout",
            json={"use_siglip": True, "siglip_rollout_percentage": 10},
        )
        assert changed.status_code == 200, changed.text
        # Recorded once answered, so the record may land just after the answer.
        deadline = time.monotonic() + 10
        while True:
            events = admin.get("/api/v1/admin/audit").json()["events"]
            if events and events[0]["path"] == "/api/v1/admin/rollout":
                break
            assert time.monotonic() < deadline, f"the change was never audited: {events}"
            time.sleep(0.2)
    latest = events[0]
    assert (latest["method"], latest["path"], latest["status"]) == (
        "PUT",
        "/api/v1/admin/rollout",
        200,
    )
    assert (latest["principal"], latest["scope"], latest["client"]) == (
        "API_KEY#1",
        "admin",
        "127.0.0.1",
    )


def test_no_secret_in_logs_or_answers(keyed_server: Served) -> None:
    seen: list[str] = []
    with keyed_server.client(ADMIN) as admin:
        for path in ("/openapi.json", "/metrics", "/api/v1/admin/status", "/api/v1/admin/audit"):
            answer = admin.get(path)
            assert answer.status_code == 200, path
            seen.append(answer.text)
        seen.append(admin.get("/api/v1/assets/not-an-id").text)  # an error body
        seen.append(admin.post("/api/v1/search", content=b"{").text)
    with keyed_server.client("wrong") as wrong:
        seen.append(wrong.get("/api/v1/assets").text)
    status = subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", "status", "--json"],
        env=keyed_server.env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["assets"] > 0
    seen += [status.stdout, status.stderr]
    stop_process(keyed_server.process)
    seen.append(keyed_server.log.read_text())
    for text in seen:
        for secret in SECRETS:
            assert secret not in text
