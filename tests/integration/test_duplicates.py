"""Near-duplicate groups from stored vectors: service, CLI and HTTP, with the shipped
demo CLIP model (random weights do not separate photos from their copies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from image_search_service.cli import main
from image_search_service.context import ServiceContext, open_context
from image_search_service.core.errors import InvalidRequest
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.duplicates import find_duplicates
from image_search_service.services.library.index import index_paths
from tests.factories import near_duplicates, textured_photo
from tests.integration.api_support import api_client

THRESHOLD = 0.86  # demo-clip's, measured in docs/sources.md


def _write_library(root: Path) -> dict[str, set[str]]:
    """Six unrelated photos; the first two with a re-save, a half-size copy and a crop."""
    root.mkdir(parents=True)
    expected: dict[str, set[str]] = {}
    for seed in range(6):
        image = textured_photo(seed)
        name = f"photo_{seed}.jpg"
        image.save(root / name, "JPEG", quality=90)
        if seed < 2:
            expected[name] = {name}
            for kind, copy in near_duplicates(image).items():
                copy.save(root / f"photo_{seed}_{kind}.jpg", "JPEG", quality=88)
                expected[name].add(f"photo_{seed}_{kind}.jpg")
    return expected


@pytest.fixture
def demo_settings(make_settings: Any) -> Any:
    return make_settings(clip_model_name="demo-clip", clip_pretrained="")


@pytest.fixture
def library(demo_settings: Any, encoders: EncoderRegistry, tmp_path: Path) -> Any:
    expected = _write_library(tmp_path / "lib")
    ctx = open_context(demo_settings, encoders=encoders)
    try:
        report = index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
        assert report.indexed == 12
    finally:
        ctx.close()
    return expected


def _names(group: list[str]) -> set[str]:
    return {Path(p).name for p in group}


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("page_size", [256, 2])
def test_groups_copies_and_nothing_else(
    demo_settings: Any, encoders: EncoderRegistry, library: Any, page_size: int
) -> None:
    ctx: ServiceContext = open_context(demo_settings, encoders=encoders)
    try:
        report = find_duplicates(ctx, model="clip", threshold=THRESHOLD, page_size=page_size)
    finally:
        ctx.close()
    assert report.scanned == 12
    groups = sorted((_names([m.path for m in g.members]) for g in report.groups), key=sorted)
    assert groups == sorted(library.values(), key=sorted)
    assert all(g.min_score >= THRESHOLD for g in report.groups)
    assert report.duplicates == 6


@pytest.mark.usefixtures("library")
def test_a_threshold_of_one_finds_no_group_and_bad_ones_are_refused(
    demo_settings: Any, encoders: EncoderRegistry
) -> None:
    ctx = open_context(demo_settings, encoders=encoders)
    try:
        assert find_duplicates(ctx, model="clip", threshold=0.9999).groups == []
        with pytest.raises(InvalidRequest):
            find_duplicates(ctx, model="clip", threshold=1.5)
    finally:
        ctx.close()


def test_cli_and_http(
    demo_settings: Any, encoders: EncoderRegistry, library: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(demo_settings.data_dir))
    monkeypatch.setenv("CLIP_MODEL_NAME", "demo-clip")
    monkeypatch.setenv("CLIP_PRETRAINED", "")
    monkeypatch.setenv("CLIP_DUPLICATE_THRESHOLD", str(THRESHOLD))
    result = CliRunner().invoke(main, ["duplicates", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["threshold"] == THRESHOLD
    assert body["total_groups"] == 2
    text = CliRunner().invoke(main, ["duplicates", "--threshold", "0.86"])
    assert "2 groups of near-duplicates among 12 photos" in text.output

    with api_client(demo_settings, encoders=encoders) as client:
        response = client.get("/api/v1/duplicates", params={"threshold": THRESHOLD})
        assert response.status_code == 200, response.text
        groups = response.json()["groups"]
        assert sorted(g["size"] for g in groups) == [4, 4]
        for group in groups:
            assert _names([a["path"] for a in group["assets"]]) in list(library.values())
        assert client.get("/api/v1/duplicates", params={"threshold": 2}).status_code == 422
        assert client.get("/api/v1/duplicates", params={"model": "nope"}).status_code == 422
