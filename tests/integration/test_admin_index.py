"""``POST /api/v1/admin/index``: a folder indexed by the running app on its background
thread, one run at a time, with progress at ``GET /api/v1/admin/index``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.integration.api_support import ClientFactory, assert_error, wait_idle, write_library


def test_indexes_a_folder_in_the_background_and_reports_it(
    client: TestClient, tmp_path: Path
) -> None:
    library = write_library(tmp_path / "photos")
    response = client.post("/api/v1/admin/index", json={"path": str(tmp_path / "photos")})
    assert response.status_code == 202, response.text
    assert response.json()["run"]["path"] == str((tmp_path / "photos").resolve())
    wait_idle(client)

    status = client.get("/api/v1/admin/index").json()
    assert status["running"] is False
    assert status["current"] is None
    [run] = status["finished"]
    assert run["phase"] == "done", run
    assert run["reason"] == "api"
    assert run["total"] == run["done"] == len(library)
    assert run["report"]["indexed"] == len(library)
    assert client.get("/api/v1/assets").json()["total"] == len(library)
    hits = client.get("/api/v1/search", params={"q": "a photo"}).json()["results"]
    assert {hit["path"] for hit in hits} == {str(p) for p in library}

    # Again: incremental, nothing new to embed.
    client.post("/api/v1/admin/index", json={"path": str(tmp_path / "photos")})
    wait_idle(client)
    again = client.get("/api/v1/admin/index").json()["finished"][0]
    assert again["report"]["indexed"] == 0
    assert again["report"]["skipped"] == len(library)


@pytest.mark.parametrize("path", ["/no/such/folder", "relative/nowhere", "  ", "a\x00b"])
def test_a_missing_folder_is_a_clear_4xx(client: TestClient, path: str) -> None:
    response = client.post("/api/v1/admin/index", json={"path": path})
    assert_error(response, 422)
    assert response.json()["error"] in ("FolderNotFound", "InvalidRequest")
    assert client.get("/api/v1/admin/index").json()["finished"] == []


def test_a_bad_body_is_422(client: TestClient) -> None:
    assert_error(client.post("/api/v1/admin/index", json={}), 422, "InvalidRequest")
    assert_error(client.post("/api/v1/admin/index", json={"path": 3}), 422, "InvalidRequest")


def reads_every_folder() -> bool:
    """Whether this process may read any folder whatever its mode (root keeps
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, as CI runs)."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    for line in lines:
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & 0b110)  # capability bits 1 and 2
    return False


def test_an_unreadable_folder_is_a_clear_4xx(client: TestClient, tmp_path: Path) -> None:
    if reads_every_folder():
        # This very test again, in a process without those two capabilities.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("this process reads every folder, and setpriv is not installed")
        this = f"{__file__}::{test_an_unreadable_folder_is_a_clear_4xx.__name__}"
        command = [
            setpriv, "--bounding-set=-dac_override,-dac_read_search",
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--basetemp", str(tmp_path / "inner"), this,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        response = client.post("/api/v1/admin/index", json={"path": str(locked)})
        assert_error(response, 422, "FolderUnreadable")
    finally:
        locked.chmod(0o755)


def test_needs_the_key_when_one_is_set(make_client: ClientFactory, tmp_path: Path) -> None:
    with make_client(api_key="k3y") as keyed:
        body = {"path": str(tmp_path)}
        assert_error(keyed.post("/api/v1/admin/index", json=body), 401, "Unauthorized")
        assert_error(keyed.get("/api/v1/admin/index"), 401, "Unauthorized")
        ok = keyed.post("/api/v1/admin/index", json=body, headers={"X-API-Key": "k3y"})
        assert ok.status_code == 202
