"""The same routes on the other stores: PostgreSQL, qdrant-client's in-process Qdrant,
and what clients see when the DB or the vector store stops answering (503)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL
from tests.factories import jpeg_bytes
from tests.integration.api_support import ClientFactory, assert_error


def _exercise(client: TestClient, library: list[Path]) -> None:
    """Search by text, image and similarity, upload and delete: the whole surface."""
    text_hits = client.get("/api/v1/search", params={"q": "red"}).json()["results"]
    assert len(text_hits) == len(library)
    image = client.post(
        "/api/v1/search/image",
        files={"file": ("q.jpg", library[1].read_bytes(), "image/jpeg")},
    ).json()
    assert image["results"][0]["path"] == str(library[1].resolve())
    similar = client.get(f"/api/v1/search/similar/{image['results'][0]['asset_id']}").json()
    assert len(similar["results"]) == len(library) - 1
    upload = client.post(
        "/api/v1/assets", files={"file": ("n.jpg", jpeg_bytes(seed=11), "image/jpeg")}
    )
    assert upload.status_code == 201, upload.text
    assert client.get("/api/v1/assets").json()["total"] == len(library) + 1
    assert client.delete(f"/api/v1/assets/{upload.json()['id']}").status_code == 204
    assert client.get("/api/v1/assets").json()["total"] == len(library)


@pytest.mark.postgres
def test_routes_on_postgresql(
    make_indexed_client: ClientFactory, photo_library: list[Path], postgres_url: str
) -> None:
    with make_indexed_client(database_url=postgres_url) as client:
        assert client.get("/ready").json()["database"] == "postgresql"
        _exercise(client, photo_library)


def test_routes_with_the_in_process_qdrant_client(
    make_indexed_client: ClientFactory, photo_library: list[Path]
) -> None:
    with make_indexed_client(qdrant_url=":memory:") as client:
        assert client.get("/ready").json()["vector_store"] == "qdrant"
        _exercise(client, photo_library)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_unreachable_vector_store_is_503(make_client: ClientFactory, unreachable_url: str) -> None:
    with make_client(qdrant_url=unreachable_url) as client:
        assert client.get("/health").status_code == 200  # alive, just not ready
        assert_error(client.get("/ready"), 503, "VectorStoreUnavailable")
        assert_error(
            client.get("/api/v1/search", params={"q": "red"}), 503, "VectorStoreUnavailable"
        )
        upload = client.post(
            "/api/v1/assets", files={"file": ("n.jpg", jpeg_bytes(seed=3), "image/jpeg")}
        )
        assert_error(upload, 503, "VectorStoreUnavailable")


@pytest.mark.postgres
def test_lost_database_is_503(make_indexed_client: ClientFactory, postgres_url: str) -> None:
    with make_indexed_client(database_url=postgres_url) as client:
        asset_id = client.get("/api/v1/assets").json()["items"][0]["id"]
        # The database disappears under the running server (connections terminated).
        assert POSTGRES_URL is not None
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = make_url(postgres_url).database
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        assert client.get("/health").status_code == 200
        assert_error(client.get("/ready"), 503, "DatabaseUnavailable")
        assert_error(client.get("/api/v1/assets"), 503, "DatabaseUnavailable")
        assert_error(client.get(f"/api/v1/assets/{asset_id}"), 503, "DatabaseUnavailable")
        assert_error(client.get("/api/v1/search", params={"q": "red"}), 503, "DatabaseUnavailable")
