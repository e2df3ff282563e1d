"""The relevance floor (issue 20): a text search shows only close matches by default;
with none it offers the nearest few as such; an explicit min_score wins. Through the
HTTP API on a demo library indexed with the shipped demo models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.core.config import MODEL_KEYS, ModelKey
from image_search_service.core.specs import relevance_floor
from image_search_service.demo.run import DEMO_SEED
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.search.service import NEAREST_FEW
from tests.factories import demo_models_settings
from tests.integration.api_support import api_client, index

NONSENSE = "zebra on a beach"


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("floor")
    write_library(root / "photos", 80, seed=DEMO_SEED)
    settings = demo_models_settings(root / "data")
    with api_client(settings, encoders=EncoderRegistry(device="cpu")) as client:
        index(client, [root / "photos"], list(MODEL_KEYS))
        yield client


def _search(client: TestClient, q: str, model: ModelKey, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/search", params={"q": q, "model": model, **params})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.mark.parametrize("model", MODEL_KEYS)
def test_a_query_with_no_good_match_offers_the_nearest_few(
    demo_client: TestClient, model: ModelKey
) -> None:
    data = _search(demo_client, NONSENSE, model, limit=50)
    assert data["close_matches"] is False
    assert 1 <= len(data["results"]) <= NEAREST_FEW
    assert data["has_more"] is False
    floor = data["relevance_floor"]
    assert floor is not None
    scores = [hit["score"] for hit in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(score < floor for score in scores)


@pytest.mark.parametrize("model", MODEL_KEYS)
def test_a_good_query_shows_only_close_matches(demo_client: TestClient, model: ModelKey) -> None:
    data = _search(demo_client, "a red circle", model, limit=50)
    assert data["close_matches"] is True
    floor = data["relevance_floor"]
    assert floor is not None
    assert data["results"], "the demo library has red circles"
    assert all(hit["score"] >= floor for hit in data["results"])
    # The floor cut the ranking short: far fewer than the 80 pictures.
    assert len(data["results"]) < 40
    assert "red-circle" in Path(data["results"][0]["path"]).name


@pytest.mark.parametrize("model", MODEL_KEYS)
def test_an_explicit_min_score_overrides_the_floor(
    demo_client: TestClient, model: ModelKey
) -> None:
    everything = _search(demo_client, NONSENSE, model, limit=100, min_score=-1)
    assert everything["close_matches"] is True
    assert everything["relevance_floor"] is None
    assert len(everything["results"]) == 80
    assert everything["has_more"] is False
    low = _search(demo_client, NONSENSE, model, limit=100, min_score=-0.5)
    assert low["relevance_floor"] == -0.5
    assert all(hit["score"] >= -0.5 for hit in low["results"])
    assert len(low["results"]) > NEAREST_FEW


def test_a_page_of_close_matches_says_more_may_follow(demo_client: TestClient) -> None:
    page = _search(demo_client, "a red circle", "clip", limit=2)
    assert page["close_matches"] is True
    assert len(page["results"]) == 2
    assert page["has_more"] is True


def test_the_floor_setting_wins_and_minus_one_turns_it_off(tmp_path: Path) -> None:
    settings = demo_models_settings(tmp_path, clip_relevance_floor=0.3)
    assert relevance_floor(settings, "clip") is not None
    assert relevance_floor(settings, "clip").cosine == 0.3  # type: ignore[union-attr]
    assert (
        relevance_floor(demo_models_settings(tmp_path, siglip_relevance_floor=-1), "siglip") is None
    )
    # A model nobody calibrated has no floor unless one is set.
    assert relevance_floor(demo_models_settings(tmp_path, clip_model_name="RN50"), "clip") is None


def test_interleaved_searches_apply_each_models_floor(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("interleaved")
    write_library(root / "photos", 80, seed=DEMO_SEED)
    settings = demo_models_settings(root / "data", interleave_percentage=100)
    with api_client(settings, encoders=EncoderRegistry(device="cpu")) as client:
        index(client, [root / "photos"], list(MODEL_KEYS))
        nonsense = client.get("/api/v1/search", params={"q": NONSENSE, "limit": 30}).json()
        good = client.get("/api/v1/search", params={"q": "a red circle", "limit": 30}).json()
    assert nonsense["model"] == "interleaved"
    assert nonsense["close_matches"] is False
    assert 1 <= len(nonsense["results"]) <= NEAREST_FEW
    assert good["close_matches"] is True
    assert good["results"]
    assert len(good["results"]) < 20
