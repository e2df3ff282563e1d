"""``image-search demo --serve`` (issue 20): the demo indexed once and served on the page
with the demo models, no variables set by hand; ``/api/v1/about`` says it is the demo
and how the warm-up goes; a second server on the same DATA_DIR is one line. Real
subprocesses and a real HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from image_search_service.demo import DEMO_NOTE
from tests.integration.live_server import SERVE_START_TIMEOUT_S, free_port, stop_process

DEMO_COUNT = "24"


def _env(data_dir: Path) -> dict[str, str]:
    # Only DATA_DIR: whatever the model settings say, the demo uses its own models.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QDRANT_", "DATABASE_", "CLIP_", "SIGLIP_", "API_KEY"))
    }
    env.update({"DATA_DIR": str(data_dir), "CLIP_MODEL_NAME": "ViT-B-32", "API_KEY": ""})
    return env


@contextmanager
def demo_server(workdir: Path, env: dict[str, str]) -> Iterator[tuple[httpx.Client, Path]]:
    port = free_port()
    log = workdir / "demo-serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "image_search_service.cli", "demo", "--serve"]
            + ["--count", DEMO_COUNT, "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield client, log
    finally:
        client.close()
        stop_process(process)


def _about_when_warm(client: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while True:
        ready = client.get("/ready")
        about: dict[str, Any] = client.get("/api/v1/about").json()
        if ready.status_code == 200:  # never before the warm-up has loaded the model
            assert {m["key"]: m["state"] for m in about["models"]}["clip"] != "loading"
        else:
            assert ready.json()["error"] == "ModelsLoading", ready.text
        states = {m["key"]: m["state"] for m in about["models"]}
        if states["clip"] not in ("idle", "loading"):
            return about
        assert time.monotonic() < deadline, about
        time.sleep(0.2)


def test_demo_serve_indexes_once_and_serves_the_demo(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    with demo_server(tmp_path, env) as (client, log):
        about = _about_when_warm(client)
        assert about["demo"] is True
        assert about["demo_note"] == DEMO_NOTE
        clip = next(m for m in about["models"] if m["key"] == "clip")
        assert clip == {"key": "clip", "name": "demo-clip", "state": "ready", "error": None}
        good = client.get("/api/v1/search", params={"q": "a red circle"}).json()
        assert good["close_matches"] is True
        assert good["results"]
        nonsense = client.get("/api/v1/search", params={"q": "zebra on a beach"}).json()
        assert nonsense["close_matches"] is False
        assert len(nonsense["results"]) <= 6
        assert f"{DEMO_COUNT} new pictures indexed" in log.read_text()
        _check_every_filter_has_something_to_show(client)

        # A second server on the same DATA_DIR: one line naming the first, no traceback.
        second = subprocess.run(
            [sys.executable, "-m", "image_search_service.cli", "demo", "--serve"]
            + ["--port", str(free_port())],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        assert (
            f"a server already runs on this DATA_DIR ({tmp_path / 'data' / 'demo'}) at http://127.0.0.1:"
            in second.stderr
        )
        assert str(client.base_url).rstrip("/") in second.stderr
    # Started again: nothing new to index.
    with demo_server(tmp_path, env) as (client, log):
        assert "0 new pictures indexed" in log.read_text()
        assert client.get("/api/v1/about").json()["demo"] is True


def test_the_demo_says_how_to_browse_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", "demo", "--count", "20"],
        env=_env(tmp_path / "data"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "image-search demo --serve" in done.stdout


def _all(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    params = {"q": "a shape", "min_score": -1, "limit": 100, **filters}
    response = client.get("/api/v1/search", params=params)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def _check_every_filter_has_something_to_show(client: httpx.Client) -> None:
    """The demo library carries dates over several years, people, tags, captions and
    more than one format, so that each filter of the page narrows it."""
    everything = _all(client)
    assert len(everything) == int(DEMO_COUNT)
    years = {hit["taken_at"][:4] for hit in everything if hit["taken_at"]}
    assert len(years) >= 4, years
    assert all(hit["caption"] for hit in everything)
    assert {hit["format"] for hit in everything} >= {"JPEG", "PNG"}
    people = {p["name"] for hit in everything for p in hit["people"]}
    tags = {t for hit in everything for t in hit["tags"]}
    assert len(people) >= 3, people
    assert len(tags) >= 3, tags
    name = sorted(people)[0]
    with_name = _all(client, people=name)
    assert 0 < len(with_name) < len(everything)
    assert all(name in {p["name"] for p in hit["people"]} for hit in with_name)
    tag = sorted(tags)[0]
    tagged = _all(client, tags=tag)
    assert 0 < len(tagged) < len(everything)
    assert all(tag in hit["tags"] for hit in tagged)
    early = _all(client, taken_before="2021-01-01")
    assert 0 < len(early) < len(everything)
    assert all(hit["taken_at"] < "2021-01-01" for hit in early)
    pngs = _all(client, format="PNG")
    assert 0 < len(pngs) < len(everything)
