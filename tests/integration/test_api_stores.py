"""The same routes on the other stores: PostgreSQL, qdrant-client's in-process Qdrant,
and what clients see when the DB or the vector store stops answering (503)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from tests.conftest import POSTGRES_URL
from tests.factories import jpeg_bytes
from tests.integration.api_support import api_client, assert_error, index, write_library


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
    make_settings: Callable[..., Settings],
    encoders: EncoderRegistry,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    library = write_library(tmp_path / "photos")
    with api_client(make_settings(database_url=postgres_url), encoders=encoders) as client:
        index(client, [tmp_path / "photos"], ["clip"])
        assert client.get("/ready").json()["database"] == "postgresql"
        _exercise(client, library)


def test_routes_with_the_in_process_qdrant_client(
    make_settings: Callable[..., Settings], encoders: EncoderRegistry, tmp_path: Path
) -> None:
    library = write_library(tmp_path / "photos")
    with api_client(make_settings(qdrant_url=":memory:"), encoders=encoders) as client:
        index(client, [tmp_path / "photos"], ["clip"])
        assert client.get("/ready").json()["vector_store"] == "qdrant"
        _exercise(client, library)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_unreachable_vector_store_is_503(
    make_settings: Callable[..., Settings], encoders: EncoderRegistry
) -> None:
    settings = make_settings(qdrant_url=f"http://127.0.0.1:{_closed_port()}")
    with api_client(settings, encoders=encoders) as client:
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
def test_lost_database_is_503(
    make_settings: Callable[..., Settings],
    encoders: EncoderRegistry,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    write_library(tmp_path / "photos")
    with api_client(make_settings(database_url=postgres_url), encoders=encoders) as client:
        index(client, [tmp_path / "photos"], ["clip"])
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
