"""DATA_DIR on a small tmpfs that fills up under a real ``image-search serve``: the
process stays up, writes get 507 with one clear reason, searches keep answering, the
watched folder pauses, and once space is freed the library is complete."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import jpeg_bytes, write_jpeg
from tests.integration.live_server import serve_process, tiny_model_env

TMPFS_MB = 96
RESERVE_MB = 24
DEADLINE_S = 120.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free_mb(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / 1024 / 1024


def _fill(disk: Path, leave_mb: float) -> Path:
    """A ballast file that leaves about ``leave_mb`` free (0: not a byte)."""
    ballast = disk / "ballast.bin"
    with ballast.open("ab", buffering=0) as fh:
        try:
            while _free_mb(disk) > leave_mb + 1:
                fh.write(b"\0" * (1024 * 1024))
            while leave_mb == 0:
                fh.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass
    return ballast


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _status(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/v1/admin/status").json()
    return body


def _index_idle(client: httpx.Client) -> bool:
    body = client.get("/api/v1/admin/index").json()
    return not body.get("running") and not body.get("queued")


def test_a_full_disk_refuses_writes_keeps_searching_and_loses_nothing(
    small_disk: Path, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    photos = tmp_path / "photos"
    for i in range(3):
        write_jpeg(photos / f"first-{i}.jpg", seed=i, colour=(200, 40 * i, 30))
    data_dir = small_disk / "data"
    env = tiny_model_env(tiny_models, data_dir)
    env.update(
        {
            "LIBRARY_PATHS": str(photos),
            "LIBRARY_DEBOUNCE_MS": "200",
            "MIN_FREE_DISK_MB": str(RESERVE_MB),
            "MODEL_CACHE_DIR": str(tmp_path / "models"),  # the exports are not the test
        }
    )
    with serve_process(tmp_path, env) as served:
        client = served.client
        _wait(lambda: _status(client)["assets"] == 3, "the first photos to be indexed")
        # /ready is 503 ModelsLoading until the background warm-up is done, which may be
        # after the watcher's first index run (it loads the models on its own).
        _wait(lambda: client.get("/ready").status_code == 200, "the models to be loaded")

        ballast = _fill(small_disk, leave_mb=RESERVE_MB / 2)
        ready = client.get("/ready").json()
        assert ready["disk"]["low"] is True
        assert ready["disk"]["reserve_mb"] == RESERVE_MB
        assert _status(client)["disk"]["low"] is True
        metrics = client.get("/metrics").text
        assert "image_search_data_dir_free_bytes" in metrics

        upload = client.post("/api/v1/assets", files={"file": ("new.jpg", jpeg_bytes(seed=50))})
        assert upload.status_code == 507, upload.text
        assert upload.json()["error"] == "InsufficientStorage"
        assert "MIN_FREE_DISK_MB" in upload.json()["detail"]

        for i in range(3):  # the watcher sees them, and waits
            write_jpeg(photos / f"while-full-{i}.jpg", seed=10 + i, colour=(30, 200, 40 * i))
        _wait(
            lambda: any(
                "paused" in p for p in client.get("/api/v1/admin/index").json()["problems"]
            ),
            "the watched folder to pause",
        )
        found = client.get("/api/v1/search", params={"q": "red"})
        assert found.status_code == 200
        first = found.json()["results"][0]["asset_id"]
        thumb = client.get(f"/api/v1/assets/{first}/thumbnail", params={"size": 128})
        assert thumb.status_code == 200  # made and served, not cached
        assert thumb.headers["content-type"] == "image/jpeg"

        # Not a byte left: still refused with 507, still searching, still alive.
        _fill(small_disk, leave_mb=0)
        upload = client.post("/api/v1/assets", files={"file": ("new.jpg", jpeg_bytes(seed=51))})
        assert upload.status_code == 507, upload.text
        for query in ("red", "green photo", "a blue square"):
            assert client.get("/api/v1/search", params={"q": query}).status_code == 200
        thumb = client.get(f"/api/v1/assets/{first}/thumbnail", params={"size": 512})
        assert thumb.status_code == 200
        assert served.process.poll() is None, served.log.read_text()

        ballast.unlink()
        _wait(lambda: _status(client)["assets"] == 6, "the paused folder to be indexed")
        upload = client.post("/api/v1/assets", files={"file": ("new.jpg", jpeg_bytes(seed=50))})
        assert upload.status_code == 201, upload.text
        _wait(lambda: _index_idle(client), "indexing to finish")
        status = _status(client)
        assert status["disk"]["low"] is False
        assert (status["assets"], status["indexing"], status["failed"]) == (7, 0, 0)
        assert status["models"]["clip"]["coverage"] == 1.0
        assert status["models"]["clip"]["pending"] == 0
        assert client.get("/api/v1/admin/index").json()["problems"] == []
        assert served.process.poll() is None
    log = served.log.read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
    assert "paused" in log


def test_the_cli_refuses_to_index_below_the_reserve_and_status_says_why(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    write_jpeg(tmp_path / "photos" / "a.jpg")
    env = {**cli_env, "MIN_FREE_DISK_MB": str(10**9)}  # more than any disk has free
    cli = [sys.executable, "-m", "image_search_service.cli"]
    index = subprocess.run(
        [*cli, "index", str(tmp_path / "photos")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert index.returncode != 0
    assert "Traceback" not in index.stderr
    assert "MIN_FREE_DISK_MB" in index.stderr + index.stdout
    status = subprocess.run(
        [*cli, "status"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert status.returncode == 0, status.stderr
    assert "below the 1000000000 MB kept free" in status.stdout
