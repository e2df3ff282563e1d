"""While `image-search serve` holds the embedded store, `index`, `search`, `status` and
`reembed` hand their work to it over HTTP (found through DATA_DIR/server.json). Real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.api_support import write_library
from tests.integration.live_server import serve_process, tiny_model_env

pytestmark = pytest.mark.slow


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_commands_work_while_the_server_runs(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    library = write_library(tmp_path / "photos")
    data_dir = tmp_path / "data"
    env = tiny_model_env(tiny_models, data_dir)
    env["EMBEDDED_LOCK_TIMEOUT_S"] = "0.5"
    with serve_process(tmp_path, env) as served:
        recorded = json.loads((data_dir / "server.json").read_text())
        assert recorded["pid"] == served.process.pid

        # A relative path, as a person types it: resolved here, not in the server's cwd.
        indexed = _cli(env, tmp_path, "index", "photos", "--json")
        assert indexed.returncode == 0, indexed.stderr + served.log.read_text()[-3000:]
        assert "a server is running" not in indexed.stdout  # the JSON stays parseable
        report = json.loads(indexed.stdout)
        assert report["indexed"] == len(library)
        assert report["models"] == ["clip"]
        found = served.client.get("/api/v1/search", params={"q": "photo", "limit": 50}).json()
        assert {hit["path"] for hit in found["results"]} == {str(p) for p in library}

        # Search: text, an example file and filters, answered by the server with the
        # model the CLI names; a search that named its model is no rollout evidence.
        recorded_before = served.client.get("/api/v1/admin/experiment").json()["arms"]
        searched = _cli(env, tmp_path, "search", "photo", "--limit", "3", "--json")
        assert searched.returncode == 0, searched.stderr + served.log.read_text()[-3000:]
        answer = json.loads(searched.stdout)
        assert (answer["model"], len(answer["results"])) == ("clip", 3)
        assert all(isinstance(hit["people"], list) for hit in answer["results"])
        example = library[0]
        by_file = _cli(env, tmp_path, "search", "--image", str(example), "--format", "JPEG")
        assert by_file.returncode == 0, by_file.stderr
        assert "a server is running on this DATA_DIR" in by_file.stderr
        first = by_file.stdout.splitlines()[1]
        assert first.startswith("  1. ")
        assert str(example) in first  # the example itself ranks first
        filtered = _cli(env, tmp_path, "search", "photo", "--format", "WEBP", "--json")
        assert json.loads(filtered.stdout)["results"] == []
        png_only = _cli(env, tmp_path, "search", "photo", "--format", "PNG", "--json")
        assert [hit["format"] for hit in json.loads(png_only.stdout)["results"]] == ["PNG"]
        missing_file = _cli(env, tmp_path, "search", "--image", "nope.jpg")
        assert missing_file.returncode == 1
        assert f"no such image file: {tmp_path / 'nope.jpg'}" in missing_file.stderr
        # A file over the upload limit: refused here when this process's limit says so,
        # and by the server (413, or its connection cut mid-upload) when only its does.
        big = tmp_path / "big.jpg"
        big.write_bytes(library[0].read_bytes() + b"\0" * (21 * 2**20))
        small_limit = {**env, "MAX_UPLOAD_BYTES": str(2**20)}
        too_big = _cli(small_limit, tmp_path, "search", "--image", str(big))
        assert too_big.returncode == 1
        assert "over the upload limit" in too_big.stderr
        assert "MAX_UPLOAD_BYTES, 1.0 MiB" in too_big.stderr
        big_limit = {**env, "MAX_UPLOAD_BYTES": str(64 * 2**20)}
        cut = _cli(big_limit, tmp_path, "search", "--image", str(big))
        assert cut.returncode == 1
        assert "does not answer" not in cut.stderr
        assert "limit" in cut.stderr.lower(), cut.stderr
        not_ready = _cli(env, tmp_path, "search", "photo", "--model", "siglip")
        assert not_ready.returncode == 1  # no SigLIP collection yet: the server's reason
        assert "image-search reembed --to siglip" in not_ready.stderr, not_ready.stderr
        # One routed search after them: the log is written in order by a background
        # thread, so when this one is counted every search before it has been.
        served.client.get("/api/v1/search", params={"q": "photo"})
        recorded_after = served.client.get("/api/v1/admin/experiment").json()["arms"]
        assert recorded_after["clip"]["searches"] == recorded_before["clip"]["searches"] + 1
        for arm in ("siglip", "interleaved"):
            assert recorded_after[arm]["searches"] == recorded_before[arm]["searches"] == 0

        # create-collection cannot be handed over: it says what to do instead of waiting
        # for the store's lock (a dry run touches nothing, so it still works).
        created = _cli(env, tmp_path, "create-collection", "--model", "siglip")
        assert created.returncode == 1
        assert "image-search reembed --to siglip" in created.stderr, created.stderr
        planned = _cli(env, tmp_path, "create-collection", "--model", "siglip", "--dry-run")
        assert planned.returncode == 0, planned.stderr

        status = _cli(env, tmp_path, "status")
        assert status.returncode == 0, status.stderr
        assert "a server is running on this DATA_DIR" in status.stderr
        assert f"assets: {len(library)} searchable" in status.stdout

        reembedded = _cli(env, tmp_path, "reembed", "--to", "siglip", "--json")
        assert reembedded.returncode == 0, reembedded.stderr + served.log.read_text()[-3000:]
        progress = json.loads(reembedded.stdout)["progress"]
        assert (progress["done"], progress["complete"]) == (len(library), True)
        routed = served.client.get("/api/v1/admin/rollout", params={"user_id": "alice"}).json()
        assert routed["models"]["siglip"]["ready"] is True

        missing = _cli(env, tmp_path, "index", str(tmp_path / "nowhere"))
        assert missing.returncode == 1
        assert "no such file or folder" in missing.stderr
        assert served.process.poll() is None
    assert not (data_dir / "server.json").exists()  # removed on a clean stop

    # A stale record (its process is gone) is ignored: the CLI opens the store itself.
    (data_dir / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": 2**22}))
    alone = _cli(env, tmp_path, "status", "--json")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["models"]["siglip"]["points"] == len(library)
