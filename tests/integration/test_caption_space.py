"""The caption space end to end: real JPEGs with real XMP captions indexed through the
real pipeline into Qdrant Edge and SQLite, searched through the real app; Ollama is the
stand-in (demo/ollama_standin.py) speaking its JSON, with its failures reproduced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from image_search_service.captions.ollama import (
    DOCUMENT_PREFIX,
    QUERY_PREFIX,
    CaptionEmbeddingFailed,
    OllamaEmbedder,
)
from image_search_service.demo.ollama_standin import OllamaStandIn
from image_search_service.services.library.indexing import IndexReport
from tests.integration.api_support import ClientFactory, index
from tests.xmp_factories import write_jpeg_with_xmp, xmp_packet

CAPTIONS = {
    "cabin": ("Christmas morning at the cabin", ["Pat"]),
    "seaside": ("A long walk by the seaside", ["Jack"]),
    "garden": ("Roses in the garden", []),
}


def write_captioned_library(root: Path) -> Path:
    for seed, (name, (caption, people)) in enumerate(CAPTIONS.items(), start=1):
        write_jpeg_with_xmp(
            root / f"{name}.jpg",
            xmp_packet(caption=caption, people=people),
            colour=(40 * seed, 200 - 50 * seed, 90),
            seed=seed,
        )
    write_jpeg_with_xmp(root / "nothing.jpg", None, colour=(10, 10, 200), seed=9)
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return write_captioned_library(tmp_path / "photos")


@pytest.fixture
def ollama() -> Iterator[OllamaStandIn]:
    with OllamaStandIn.running() as standin:
        yield standin


def caption_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {"caption_embedder": "ollama", "ollama_url": url, **overrides}


def search(client: TestClient, q: str, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/search", params={"q": q, "limit": 10, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [Path(r["path"]).stem for r in body["results"]]


def caption_status(client: TestClient) -> dict[str, Any]:
    response = client.get("/api/v1/admin/status")
    assert response.status_code == 200, response.text
    captions: dict[str, Any] = response.json()["captions"]
    return captions


def test_a_synonym_finds_the_caption_through_the_caption_space(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn
) -> None:
    with make_client(**caption_settings(ollama.url)) as client:
        report = index(client, [photos], ["clip"])
        assert (report.indexed, report.captions_embedded, report.captions_pending) == (4, 3, 0)
        # Documents went with nomic's document prefix, in one batch.
        assert [len(r["input"]) for r in ollama.requests] == [3]
        assert all(t.startswith(DOCUMENT_PREFIX) for t in ollama.requests[0]["input"])
        assert caption_status(client) | {"last_error": None} == {
            "embedder": "nomic-embed-text (ollama), 768-d",
            "collection": "image_captions",
            "with_text": 3,
            "embedded": 3,
            "pending": 0,
            "last_error": None,
            "points": 3,
        }
        body = search(client, "xmas")
        assert ollama.requests[-1]["input"] == [QUERY_PREFIX + "xmas"]
        first = body["results"][0]
        assert Path(first["path"]).stem == "cabin"
        assert "caption" in first["spaces"]
        assert "text" not in first["spaces"]
        assert first["matched_by"] in {"text", "both"}
        assert body["understood"]["caption_space"] is True
        assert body["understood"]["full_text"] is False  # no caption has the word "xmas"
        assert names(search(client, "shore"))[0] == "seaside"


def test_off_by_default_no_request_reaches_ollama(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn
) -> None:
    with make_client(ollama_url=ollama.url) as client:
        report = index(client, [photos], ["clip"])
        body = search(client, "xmas")
        status = client.get("/api/v1/admin/status").json()
    assert report.captions_embedded == 0
    assert ollama.requests == []
    assert body["understood"]["caption_space"] is False
    assert all("caption" not in r["spaces"] for r in body["results"])
    assert status["captions"] is None


def test_people_stay_exact_filters(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn
) -> None:
    with make_client(**caption_settings(ollama.url)) as client:
        index(client, [photos], ["clip"])
        body = search(client, "xmas", people=["Jack"])
    # The cabin's caption matches, but Jack is not in it: only Jack's photo is left.
    assert names(body) == ["seaside"]
    assert "caption" not in body["results"][0]["spaces"]


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
def test_both_fusions_rank_the_caption_match_first(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn, fusion: str
) -> None:
    with make_client(**caption_settings(ollama.url, caption_fusion=fusion)) as client:
        index(client, [photos], ["clip"])
        body = search(client, "garden roses")
    assert names(body)[0] == "garden"
    assert body["results"][0]["fused_score"] is not None


@pytest.mark.parametrize("full_text", [False, True])
def test_full_text_joins_only_when_asked(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn, full_text: bool
) -> None:
    settings = caption_settings(ollama.url, caption_full_text=full_text)
    with make_client(**settings) as client:
        index(client, [photos], ["clip"])
        body = search(client, "christmas")
    assert body["understood"]["caption_space"] is True
    assert body["understood"]["full_text"] is full_text
    assert ("text" in body["results"][0]["spaces"]) is full_text
    assert "caption" in body["results"][0]["spaces"]


def index_and_status(client: TestClient, photos: Path) -> tuple[IndexReport, dict[str, Any]]:
    return index(client, [photos], ["clip"]), caption_status(client)


def test_ollama_down_keeps_every_photo_and_the_next_run_catches_up(
    make_client: ClientFactory, photos: Path, unreachable_url: str, ollama: OllamaStandIn
) -> None:
    with make_client(**caption_settings(unreachable_url)) as client:
        report, status = index_and_status(client, photos)
        assert (report.indexed, report.failed) == (4, 0)  # every photo, by its image
        assert report.captions_pending == 3
        assert "unreachable" in (report.captions_error or "")
        assert (status["embedded"], status["pending"]) == (0, 3)
        assert "OLLAMA_URL" in status["last_error"]
        # Searching still works while Ollama is down: the image space and full text.
        body = search(client, "christmas")
        assert names(body)[0] == "cabin"
        assert body["understood"]["caption_space"] is False
    with make_client(**caption_settings(ollama.url)) as client:
        report, status = index_and_status(client, photos)
    assert (report.indexed, report.captions_embedded, report.captions_pending) == (0, 3, 0)
    assert (status["embedded"], status["pending"], status["last_error"]) == (3, 0, None)


def test_a_model_not_pulled_says_how_to_pull_it(make_client: ClientFactory, photos: Path) -> None:
    with (
        OllamaStandIn.running(models={"llama3": 4096}) as ollama,
        make_client(**caption_settings(ollama.url)) as client,
    ):
        report, status = index_and_status(client, photos)
    assert report.indexed == 4
    assert 'model "nomic-embed-text" not found, try pulling it first' in status["last_error"]
    assert "ollama pull nomic-embed-text" in status["last_error"]


def test_a_wrong_dimension_is_pending_not_stored(make_client: ClientFactory, photos: Path) -> None:
    with (
        OllamaStandIn.running(models={"nomic-embed-text": 384}) as ollama,
        make_client(**caption_settings(ollama.url)) as client,
    ):
        report, status = index_and_status(client, photos)
    assert (report.indexed, report.captions_pending) == (4, 3)
    assert "returned 384-d vectors, OLLAMA_EMBED_DIM is 768" in status["last_error"]
    assert status["points"] == 0


def test_a_slow_first_call_times_out_and_the_next_run_embeds(
    make_client: ClientFactory, photos: Path
) -> None:
    with OllamaStandIn.running(slow_first_call=True) as ollama:
        settings = caption_settings(ollama.url, ollama_timeout_s=0.2)
        with make_client(**settings) as client:
            report, status = index_and_status(client, photos)
            assert (report.indexed, report.captions_pending) == (4, 3)
            assert "did not answer within 0.2s" in status["last_error"]
            ollama.finish_loading()  # the model is loaded now
            report, status = index_and_status(client, photos)
    assert (report.captions_embedded, status["pending"]) == (3, 0)


def test_an_edited_caption_is_embedded_again(
    make_client: ClientFactory, photos: Path, ollama: OllamaStandIn
) -> None:
    with make_client(**caption_settings(ollama.url)) as client:
        index(client, [photos], ["clip"])
        asset = next(
            a
            for a in client.get("/api/v1/assets", params={"limit": 50}).json()["items"]
            if Path(a["path"]).stem == "garden"
        )
        response = client.patch(
            f"/api/v1/assets/{asset['id']}", json={"caption": "A dog on the beach"}
        )
        assert response.status_code == 200, response.text
        assert caption_status(client)["pending"] == 1
        report = index(client, [photos], ["clip"])
        assert report.captions_embedded == 1
        assert names(search(client, "puppy"))[0] == "garden"


def test_another_text_model_in_the_collection_is_a_clear_mismatch(
    make_client: ClientFactory, photos: Path
) -> None:
    models = {"nomic-embed-text": 768, "mxbai-embed-large": 768}
    with OllamaStandIn.running(models=models) as ollama:
        with make_client(**caption_settings(ollama.url)) as client:
            index(client, [photos], ["clip"])
        other = caption_settings(ollama.url, ollama_embed_model="mxbai-embed-large")
        with make_client(**other) as client:
            response = client.get("/api/v1/search", params={"q": "xmas"})
            report, status = index_and_status(client, photos)
    assert response.status_code == 409
    assert response.json()["error"] == "ModelMismatch"
    assert "nomic-embed-text (ollama), 768-d" in response.json()["detail"]
    # Indexing goes on by image; the captions wait, saying why.
    assert report.captions_pending == 3
    assert "mxbai-embed-large" in status["last_error"]


def test_the_client_speaks_ollamas_errors(ollama: OllamaStandIn) -> None:
    embedder = OllamaEmbedder(
        url=ollama.url, model="nomic-embed-text", dim=768, timeout_s=5, batch_size=2
    )
    vectors = embedder.embed_documents(["one", "two", "three"])
    assert vectors.shape == (3, 768)
    assert [len(r["input"]) for r in ollama.requests] == [2, 1]  # OLLAMA_BATCH_SIZE
    ollama.failing = 500
    with pytest.raises(CaptionEmbeddingFailed, match="Ollama answered 500"):
        embedder.embed_query("x")
    embedder.close()


def test_the_standin_speaks_the_rest_of_ollamas_api(ollama: OllamaStandIn) -> None:
    tags = httpx.get(f"{ollama.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["nomic-embed-text:latest"]
    old = httpx.post(
        f"{ollama.url}/api/embeddings", json={"model": "nomic-embed-text", "prompt": "xmas"}
    ).json()
    new = httpx.post(
        f"{ollama.url}/api/embed", json={"model": "nomic-embed-text", "input": "christmas"}
    ).json()
    assert old["embedding"] == new["embeddings"][0]  # a synonym: the same word vector
