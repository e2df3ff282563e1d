"""Which key may call which route, walked over the whole OpenAPI document in process
(fast, so a new route is checked the moment it exists): no credentials is 401 on every
route but the public ones, and a read key is 403 on every write but the few that
docs/security.md gives it (searching by POST, reporting clicks, signing in and out)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient

from tests.integration.api_support import ClientFactory, index

ADMIN = "admin-key-0123456789abcdef"
READ = "read-key-0123456789abcdef"
# Reachable without credentials by design: liveness, signing in and out.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/api/v1/auth/session"),
    ("POST", "/api/v1/auth/session"),
    ("DELETE", "/api/v1/auth/session"),
}
# The writes a read key may make (docs/security.md, "Keys and scopes").
READ_WRITES = PUBLIC | {
    ("POST", "/api/v1/search"),
    ("POST", "/api/v1/search/image"),
    ("POST", "/api/v1/search/combined"),
    ("POST", "/api/v1/events"),
}
# Vectors for other services: computed, nothing stored.
READ_PREFIXES = ("/api/v1/embed/",)
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def routes(client: TestClient) -> list[tuple[str, str]]:
    openapi: dict[str, Any] = client.get("/openapi.json", headers={"X-API-Key": READ}).json()
    found = [
        (method.upper(), path)
        for path, methods in openapi["paths"].items()
        for method in methods
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(found) > 25  # the whole API, not an empty document
    return found


def concrete(path: str) -> str:
    # Path parameters filled with a well-formed id: the check must come before the lookup.
    return re.sub(r"\{[^}]+\}", str(UUID(int=1)), path)


def test_every_route_refuses_a_missing_key(make_client: ClientFactory) -> None:
    with make_client(api_key=ADMIN, read_api_key=READ) as client:
        for method, path in routes(client):
            answer = client.request(method, concrete(path))
            if (method, path) in PUBLIC:
                assert answer.status_code != 401, (method, path)
            else:
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert answer.json()["error"] == "Unauthorized"


def test_every_write_refuses_a_read_key(make_client: ClientFactory) -> None:
    with make_client(api_key=ADMIN, read_api_key=READ) as client:
        writes = [(m, p) for m, p in routes(client) if m in WRITES]
        assert ("PATCH", "/api/v1/assets/{asset_id}") in writes
        assert ("PATCH", "/api/v1/people/{person_id}") in writes
        for method, path in writes:
            answer = client.request(method, concrete(path), headers={"X-API-Key": READ})
            if (method, path) in READ_WRITES or path.startswith(READ_PREFIXES):
                assert answer.status_code not in (401, 403), (method, path, answer.text)
            else:
                assert answer.status_code == 403, (method, path, answer.status_code)
                assert "admin key" in answer.json()["detail"]


def test_metadata_edits_need_the_admin_key(
    make_client: ClientFactory, photo_library: list[Path]
) -> None:
    with make_client(api_key=ADMIN, read_api_key=READ) as client:
        admin, read = {"X-API-Key": ADMIN}, {"X-API-Key": READ}
        client.headers.update(admin)
        index(client, [photo_library[0].parent], ["clip"])
        asset = client.get("/api/v1/assets", params={"limit": 1}).json()["items"][0]
        edit = {"people": ["Pat"]}
        url = f"/api/v1/assets/{asset['id']}"
        assert client.patch(url, json=edit, headers=read).status_code == 403
        assert client.get(url).json()["people"] == []
        edited = client.patch(url, json=edit, headers=admin)
        assert edited.status_code == 200, edited.text
        person = client.get("/api/v1/people").json()["items"][0]
        rename = {"name": "Patricia"}
        person_url = f"/api/v1/people/{person['id']}"
        assert client.patch(person_url, json=rename, headers=read).status_code == 403
        assert client.get("/api/v1/people").json()["items"][0]["name"] == "Pat"
        assert client.patch(person_url, json=rename, headers=admin).status_code == 200
        assert client.get("/api/v1/people").json()["items"][0]["name"] == "Patricia"
