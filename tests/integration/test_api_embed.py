"""``/api/v1/embed/*``: vectors for other services, through the real app and models."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.factories import jpeg_bytes, photo_bytes
from tests.integration.api_support import ClientFactory, app_ctx, assert_error, stored_state

KEY = {"X-API-Key": "secret"}


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(
        api_key="secret", embed_max_batch_files=4, embed_max_batch_bytes=200_000
    ) as test_client:
        yield test_client


def _unit(vector: list[float]) -> float:
    return float(np.linalg.norm(np.asarray(vector, dtype=np.float32)))


def test_embed_image_is_a_unit_vector_of_the_baseline(client: TestClient) -> None:
    data = jpeg_bytes((60, 40), seed=3)
    response = client.post(
        "/api/v1/embed/image", files={"file": ("a.jpg", data, "image/jpeg")}, headers=KEY
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "clip"
    assert body["dim"] == 512
    assert len(body["embedding"]) == 512
    assert body["model_identity"]["dim"] == 512
    assert body["model_identity"]["model_name"].startswith("local-dir:")
    assert _unit(body["embedding"]) == pytest.approx(1.0, abs=1e-5)
    again = client.post(
        "/api/v1/embed/image", files={"file": ("b.jpg", data, "image/jpeg")}, headers=KEY
    ).json()
    assert again["embedding"] == body["embedding"]  # identical input, identical vector
    # Same vector as the one indexing stores: what the model makes of these bytes.
    image = Image.open(io.BytesIO(data)).convert("RGB")
    stored = app_ctx(client).encoder("clip").encode_images([image])[0]
    assert float(np.dot(stored, np.asarray(body["embedding"]))) == pytest.approx(1.0, abs=1e-4)


def test_model_parameter_picks_the_candidate(client: TestClient) -> None:
    response = client.post(
        "/api/v1/embed/image?model=siglip",
        files={"file": ("a.heic", photo_bytes("HEIF"), "image/heic")},
        headers=KEY,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["model"], len(response.json()["embedding"])) == ("siglip", 768)


def test_batch_keeps_input_order_and_fails_the_corrupt_file_alone(client: TestClient) -> None:
    before = stored_state(app_ctx(client))
    good = [jpeg_bytes((50, 40), colour=(10 * i, 100, 200), seed=i) for i in range(3)]
    files = [
        ("files", ("0.jpg", good[0], "image/jpeg")),
        ("files", ("broken.jpg", good[1][: len(good[1]) // 3], "image/jpeg")),
        ("files", ("2.jpg", good[2], "image/jpeg")),
        ("files", ("3.mpo", photo_bytes("MPO", seed=7), "image/jpeg")),
    ]
    response = client.post("/api/v1/embed/batch", files=files, headers=KEY)
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = body["embeddings"]
    assert len(vectors) == 4
    assert vectors[1] is None
    assert [e["index"] for e in body["errors"]] == [1]
    assert body["errors"][0]["filename"] == "broken.jpg"
    assert body["errors"][0]["error"] == "UnsupportedImage"
    single = client.post(
        "/api/v1/embed/image", files={"file": ("2.jpg", good[2], "image/jpeg")}, headers=KEY
    ).json()["embedding"]
    assert float(np.dot(vectors[2], single)) == pytest.approx(1.0, abs=1e-4)
    assert float(np.dot(vectors[0], single)) < 0.9999
    assert all(_unit(v) == pytest.approx(1.0, abs=1e-5) for v in vectors if v is not None)
    assert stored_state(app_ctx(client)) == before  # nothing is stored


def test_batch_limits(client: TestClient) -> None:
    data = jpeg_bytes(seed=1)
    too_many = [("files", (f"{i}.jpg", data, "image/jpeg")) for i in range(5)]
    assert_error(client.post("/api/v1/embed/batch", files=too_many, headers=KEY), 422)
    big = bytes(90_000)
    too_big = [("files", (f"{i}.jpg", big, "image/jpeg")) for i in range(3)]
    assert_error(client.post("/api/v1/embed/batch", files=too_big, headers=KEY), 413)


def test_embed_text(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="image_search_service.services.search.embed")
    response = client.post(
        "/api/v1/embed/text", json={"texts": ["a red photo", "a dog", "a red photo"]}, headers=KEY
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "clip"
    vectors = body["embeddings"]
    assert len(vectors) == 3
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert _unit(vectors[1]) == pytest.approx(1.0, abs=1e-5)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embed text")]
    assert len(logged) == 1
    assert "model=clip items=3 failed=0 bytes=" in logged[0]
    assert "took_ms=" in logged[0]
    siglip = client.post(
        "/api/v1/embed/text", json={"texts": ["x"], "model": "siglip"}, headers=KEY
    ).json()
    assert len(siglip["embeddings"][0]) == 768


@pytest.mark.parametrize(
    "body",
    [{"texts": []}, {"texts": ["  "]}, {"texts": ["x"], "model": "nope"}, {"text": ["x"]}],
)
def test_embed_text_rejects_bad_bodies(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/api/v1/embed/text", json=body, headers=KEY), 422)


def test_key_rules_and_bad_files(client: TestClient) -> None:
    files = {"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    assert_error(client.post("/api/v1/embed/image", files=files), 401, "Unauthorized")
    assert_error(client.post("/api/v1/embed/text", json={"texts": ["x"]}), 401)
    notes = {"file": ("a.jpg", b"not an image at all", "image/jpeg")}
    assert_error(client.post("/api/v1/embed/image", files=notes, headers=KEY), 415)


def test_embeds_are_counted_apart_from_searches(client: TestClient) -> None:
    client.post("/api/v1/embed/text", json={"texts": ["a", "b"]}, headers=KEY)
    files = [
        ("files", ("a.jpg", jpeg_bytes(), "image/jpeg")),
        ("files", ("b.jpg", b"junk", "image/jpeg")),
    ]
    client.post("/api/v1/embed/batch", files=files, headers=KEY)
    metrics = client.get("/metrics", headers=KEY).text
    assert 'image_search_embed_requests_total{kind="text",model="clip"} 1.0' in metrics
    assert 'image_search_embed_items_total{kind="batch",model="clip",result="ok"} 1.0' in metrics
    assert (
        'image_search_embed_items_total{kind="batch",model="clip",result="failed"} 1.0' in metrics
    )
    assert "image_search_searches_total{" not in metrics
    assert "secret" not in metrics
