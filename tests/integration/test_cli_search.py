"""`image-search search --json` prints one shape, `SearchResponse`, whether it searches
in its own process or hands the search to a running `image-search serve` (real
processes, one library)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api_support import write_library
from tests.integration.live_server import serve_process, tiny_model_env
from tests.xmp_factories import write_jpeg_with_xmp, xmp_packet

pytestmark = pytest.mark.slow


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def key_paths(value: Any, at: str = "") -> set[str]:
    """Every key at every level, as paths (``results[0].people[1].box.x``); list items
    by position, so an item that lacks a key its counterpart has is caught too."""
    if isinstance(value, dict):
        paths: set[str] = set()
        for key, item in value.items():
            paths |= {f"{at}.{key}"} | key_paths(item, f"{at}.{key}")
        return paths
    if isinstance(value, list):
        return set().union(*(key_paths(item, f"{at}[{i}]") for i, item in enumerate(value)))
    return set()


def test_search_json_has_one_shape_with_and_without_a_server(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    library = write_library(tmp_path / "photos")
    # People with and without a face region, tags and a caption: every nested level.
    labelled = write_jpeg_with_xmp(
        tmp_path / "photos" / "pat.jpg",
        xmp_packet(
            people=["Pat", ("Jack", None)], tags=["beach"], caption="a photo of Pat and Jack"
        ),
        seed=7,
    )
    env = tiny_model_env(tiny_models, tmp_path / "data")
    _cli(env, tmp_path, "index", "photos")
    query = ("search", "a photo", "--limit", "10", "--json")

    here = json.loads(_cli(env, tmp_path, *query).stdout)
    with serve_process(tmp_path, env) as served:
        served_before = served.client.get("/metrics").text
        remote = json.loads(_cli(env, tmp_path, *query).stdout)
        served_after = served.client.get("/metrics").text
    counter = 'image_search_searches_total{kind="combined",model="clip"}'
    assert counter not in served_before
    assert f"{counter} 1.0" in served_after  # the server, not this process, answered

    assert key_paths(here) == key_paths(remote)
    # The keys that used to exist only with a server, and the people as objects in both.
    for answer in (here, remote):
        assert answer["search_id"] is None  # a search that names its model is not recorded
        assert answer["fallback_reason"] is None
        assert len(answer["results"]) == len(library) + 1
        hit = next(h for h in answer["results"] if h["path"] == str(labelled.resolve()))
        assert hit["people"] == [
            {"name": "Jack", "box": None},
            {"name": "Pat", "box": {"x": 0.4, "y": 0.4, "w": 0.2, "h": 0.2}},
        ]
        assert hit["tags"] == ["beach"]
    assert [h["path"] for h in here["results"]] == [h["path"] for h in remote["results"]]
