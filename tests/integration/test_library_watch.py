"""``LIBRARY_PATHS``: the real ``image-search serve`` process indexes a real folder at
start and watches it: photos added, changed or deleted there are searchable or gone
without a restart; a burst is batched; a folder that disappears is reported."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import write_jpeg
from tests.integration.api_support import COLOURS
from tests.integration.live_server import serve_process, tiny_model_env

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 180
CHANGE_TIMEOUT_S = 90  # generous on a busy machine; no timing is asserted


@dataclass
class WatchingServer:
    client: httpx.Client
    process: subprocess.Popen[bytes]
    log: Path
    folder: Path

    def eventually(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while True:
            assert self.process.poll() is None, self.log.read_text()
            result = check()
            if result:
                return result
            assert time.monotonic() < deadline, f"never: {what}\n{self.log.read_text()[-4000:]}"
            time.sleep(0.2)

    def paths(self) -> set[str]:
        items = self.client.get("/api/v1/assets", params={"limit": 100}).json()["items"]
        return {item["path"] for item in items}

    def searchable(self) -> set[str]:
        response = self.client.get("/api/v1/search", params={"q": "photo", "limit": 100})
        if response.status_code == 409:  # no collection before the first index run
            return set()
        assert response.status_code == 200, response.text
        return {hit["path"] for hit in response.json()["results"]}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get("/api/v1/admin/index").json()
        return body


@pytest.fixture
def watching(tmp_path: Path, tiny_models: dict[str, Path]) -> Iterator[WatchingServer]:
    folder = tmp_path / "Pictures"
    for i in range(3):
        write_jpeg(folder / f"start_{i}.jpg", colour=COLOURS[i], seed=i, size=(64, 48))
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env.update({"LIBRARY_PATHS": str(folder), "LIBRARY_DEBOUNCE_MS": "300"})
    with serve_process(tmp_path, env) as served:
        yield WatchingServer(served.client, served.process, served.log, folder)


def test_a_watched_folder_stays_current(watching: WatchingServer) -> None:
    folder = watching.folder
    start = {str(folder / f"start_{i}.jpg") for i in range(3)}
    watching.eventually(lambda: watching.searchable() == start, "the folder indexed at start")
    runs_before = len(watching.status()["finished"])

    added = write_jpeg(folder / "sub" / "new.jpg", colour=(10, 10, 10), seed=50, size=(60, 40))
    watching.eventually(lambda: str(added) in watching.searchable(), "a new photo searchable")

    gone = folder / "start_0.jpg"
    gone.unlink()
    watching.eventually(lambda: str(gone) not in watching.paths(), "a deleted photo gone")
    assert str(gone) not in watching.searchable()

    # A changed photo: same name, new content; it is found by its new content.
    changed = folder / "start_1.jpg"
    write_jpeg(changed, colour=(250, 0, 250), seed=77, size=(80, 50))
    query = {"file": ("q.jpg", changed.read_bytes(), "image/jpeg")}

    def found_by_new_content() -> bool:
        body = watching.client.post("/api/v1/search/image", files=query).json()
        return bool(body["results"]) and body["results"][0]["score"] > 0.999

    watching.eventually(found_by_new_content, "a changed photo found by its new content")
    assert watching.process.poll() is None
    runs = watching.status()["finished"]
    assert all(run["phase"] == "done" for run in runs), runs
    assert len(runs) > runs_before


def test_a_burst_is_batched(watching: WatchingServer) -> None:
    folder = watching.folder
    watching.eventually(lambda: len(watching.paths()) == 3, "the folder indexed at start")
    watching.eventually(lambda: not watching.status()["running"], "the start run finished")
    runs_before = len(watching.status()["finished"])
    # Encoded outside the folder first, then renamed in: the burst's events come as fast
    # as renames do, however long each JPEG takes to write on a busy machine.
    staging = folder.parent / "staging"
    made = [
        write_jpeg(staging / f"img_{i:03d}.jpg", seed=1000 + i, size=(48, 40)) for i in range(40)
    ]
    (folder / "import").mkdir()
    burst = [path.replace(folder / "import" / path.name) for path in made]
    watching.eventually(lambda: len(watching.paths()) == 3 + len(burst), "the burst indexed")
    watching.eventually(lambda: not watching.status()["running"], "indexing finished")
    runs = watching.status()["finished"][: len(watching.status()["finished"]) - runs_before]
    assert 1 <= len(runs) <= 3, [run["report"] for run in runs]  # not one run per file


def test_a_folder_that_disappears_is_reported_not_a_crash(watching: WatchingServer) -> None:
    folder = watching.folder
    watching.eventually(
        lambda: len(watching.searchable()) == 3 and not watching.status()["running"],
        "the folder indexed at start",
    )
    moved = folder.with_name("Pictures.away")
    shutil.move(folder, moved)
    problems = watching.eventually(lambda: watching.status()["problems"], "a reported problem")
    assert str(folder) in problems[0]
    assert watching.client.get("/health").status_code == 200
    assert watching.client.get("/api/v1/search", params={"q": "x"}).status_code == 200
    # Its photos are kept while it is away (an unmounted disk is not a deleted library).
    assert len(watching.paths()) == 3

    shutil.move(moved, folder)
    write_jpeg(folder / "after.jpg", seed=404, size=(50, 50))
    watching.eventually(lambda: not watching.status()["problems"], "the problem cleared")
    watching.eventually(lambda: str(folder / "after.jpg") in watching.paths(), "watching again")
    assert watching.log.read_text().count("Traceback") == 0


def test_a_folder_deleted_and_made_again_at_once_is_watched_again(
    watching: WatchingServer,
) -> None:
    folder = watching.folder
    watching.eventually(
        lambda: len(watching.searchable()) == 3 and not watching.status()["running"],
        "the folder indexed at start",
    )
    shutil.rmtree(folder)
    folder.mkdir()  # faster than the watcher looks: it never sees the folder missing
    watching.eventually(lambda: not watching.paths(), "the deleted photos gone")
    time.sleep(2)  # well after the change: only a new watch hears what comes next
    write_jpeg(folder / "new.jpg", seed=505, size=(50, 50))
    watching.eventually(lambda: str(folder / "new.jpg") in watching.searchable(), "heard again")
    assert watching.log.read_text().count("Traceback") == 0
