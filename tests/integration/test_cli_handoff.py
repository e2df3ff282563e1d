"""While `image-search serve` holds the embedded store, `index`, `search`, `status` and
`reembed` hand their work to it over HTTP (found through DATA_DIR/server.json). Real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.api_support import write_library
from tests.integration.live_server import ServeProcess, serve_process, tiny_model_env

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


@dataclass
class HandOff:
    """A server on ``data_dir`` and the environment of CLI processes beside it."""

    served: ServeProcess
    env: dict[str, str]
    library: list[Path]
    data_dir: Path
    workdir: Path

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _cli(env or self.env, self.workdir, *args)

    def log_tail(self) -> str:
        return self.served.log.read_text()[-3000:]


@pytest.fixture
def hand_off(tmp_path: Path, tiny_models: dict[str, Path]) -> Iterator[HandOff]:
    """``image-search serve`` on a fresh DATA_DIR, with ``tmp_path/photos`` not indexed."""
    library = write_library(tmp_path / "photos")
    data_dir = tmp_path / "data"
    env = tiny_model_env(tiny_models, data_dir)
    env["EMBEDDED_LOCK_TIMEOUT_S"] = "0.5"
    with serve_process(tmp_path, env) as served:
        yield HandOff(served, env, library, data_dir, tmp_path)
        assert served.process.poll() is None  # nothing the CLI did stopped it
    assert not (data_dir / "server.json").exists()  # removed on a clean stop


def indexed(hand_off: HandOff) -> None:
    done = hand_off.cli("index", "photos", "--json")
    assert done.returncode == 0, done.stderr + hand_off.log_tail()


def test_index_and_status_are_handed_to_the_server(hand_off: HandOff) -> None:
    served = hand_off.served
    recorded = json.loads((hand_off.data_dir / "server.json").read_text())
    assert recorded["pid"] == served.process.pid

    # A relative path, as a person types it: resolved here, not in the server's cwd.
    done = hand_off.cli("index", "photos", "--json")
    assert done.returncode == 0, done.stderr + hand_off.log_tail()
    assert "a server is running" not in done.stdout  # the JSON stays parseable
    report = json.loads(done.stdout)
    assert report["indexed"] == len(hand_off.library)
    assert report["models"] == ["clip"]
    found = served.client.get("/api/v1/search", params={"q": "photo", "limit": 50}).json()
    assert {hit["path"] for hit in found["results"]} == {str(p) for p in hand_off.library}

    status = hand_off.cli("status")
    assert status.returncode == 0, status.stderr
    assert "a server is running on this DATA_DIR" in status.stderr
    assert f"assets: {len(hand_off.library)} searchable" in status.stdout

    missing = hand_off.cli("index", str(hand_off.workdir / "nowhere"))
    assert missing.returncode == 1
    assert "no such file or folder" in missing.stderr


def test_searches_are_answered_by_the_server(hand_off: HandOff) -> None:
    """Text, an example file and filters, answered by the server with the model the CLI
    names; a search that named its model is no rollout evidence."""
    indexed(hand_off)
    served, library, tmp_path = hand_off.served, hand_off.library, hand_off.workdir
    recorded_before = served.client.get("/api/v1/admin/experiment").json()["arms"]
    searched = hand_off.cli("search", "photo", "--limit", "3", "--json")
    assert searched.returncode == 0, searched.stderr + hand_off.log_tail()
    answer = json.loads(searched.stdout)
    assert (answer["model"], len(answer["results"])) == ("clip", 3)
    assert all(isinstance(hit["people"], list) for hit in answer["results"])
    example = library[0]
    by_file = hand_off.cli("search", "--image", str(example), "--format", "JPEG")
    assert by_file.returncode == 0, by_file.stderr
    assert "a server is running on this DATA_DIR" in by_file.stderr
    first = by_file.stdout.splitlines()[1]
    assert first.startswith("  1. ")
    assert str(example) in first  # the example itself ranks first
    filtered = hand_off.cli("search", "photo", "--format", "WEBP", "--json")
    assert json.loads(filtered.stdout)["results"] == []
    png_only = hand_off.cli("search", "photo", "--format", "PNG", "--json")
    assert [hit["format"] for hit in json.loads(png_only.stdout)["results"]] == ["PNG"]
    missing_file = hand_off.cli("search", "--image", "nope.jpg")
    assert missing_file.returncode == 1
    assert f"no such image file: {tmp_path / 'nope.jpg'}" in missing_file.stderr
    not_ready = hand_off.cli("search", "photo", "--model", "siglip")
    assert not_ready.returncode == 1  # no SigLIP collection yet: the server's reason
    assert "image-search reembed --to siglip" in not_ready.stderr, not_ready.stderr
    # One routed search after them: the log is written in order by a background
    # thread, so when this one is counted every search before it has been.
    served.client.get("/api/v1/search", params={"q": "photo"})
    recorded_after = served.client.get("/api/v1/admin/experiment").json()["arms"]
    assert recorded_after["clip"]["searches"] == recorded_before["clip"]["searches"] + 1
    for arm in ("siglip", "interleaved"):
        assert recorded_after[arm]["searches"] == recorded_before[arm]["searches"] == 0


def test_an_upload_over_the_limit_is_refused_with_the_limit(hand_off: HandOff) -> None:
    """Refused here when this process's limit says so, and by the server (413, or its
    connection cut mid-upload) when only its limit does."""
    indexed(hand_off)
    big = hand_off.workdir / "big.jpg"
    big.write_bytes(hand_off.library[0].read_bytes() + b"\0" * (21 * 2**20))
    small_limit = {**hand_off.env, "MAX_UPLOAD_BYTES": str(2**20)}
    too_big = hand_off.cli("search", "--image", str(big), env=small_limit)
    assert too_big.returncode == 1
    assert "over the upload limit" in too_big.stderr
    assert "MAX_UPLOAD_BYTES, 1.0 MiB" in too_big.stderr
    big_limit = {**hand_off.env, "MAX_UPLOAD_BYTES": str(64 * 2**20)}
    cut = hand_off.cli("search", "--image", str(big), env=big_limit)
    assert cut.returncode == 1
    assert "does not answer" not in cut.stderr
    assert "limit" in cut.stderr.lower(), cut.stderr


def test_reembed_is_handed_over_and_create_collection_says_what_to_do(
    hand_off: HandOff,
) -> None:
    indexed(hand_off)
    # create-collection cannot be handed over: it says what to do instead of waiting for
    # the store's lock (a dry run touches nothing, so it still works).
    created = hand_off.cli("create-collection", "--model", "siglip")
    assert created.returncode == 1
    assert "image-search reembed --to siglip" in created.stderr, created.stderr
    planned = hand_off.cli("create-collection", "--model", "siglip", "--dry-run")
    assert planned.returncode == 0, planned.stderr

    reembedded = hand_off.cli("reembed", "--to", "siglip", "--json")
    assert reembedded.returncode == 0, reembedded.stderr + hand_off.log_tail()
    progress = json.loads(reembedded.stdout)["progress"]
    assert (progress["done"], progress["complete"]) == (len(hand_off.library), True)
    client = hand_off.served.client
    routed = client.get("/api/v1/admin/rollout", params={"user_id": "alice"}).json()
    assert routed["models"]["siglip"]["ready"] is True


def test_a_stale_server_record_is_ignored(
    cli_env: dict[str, str], tmp_path: Path, unreachable_url: str
) -> None:
    """A record whose process is gone: the CLI opens the store itself."""
    library = write_library(tmp_path / "photos")
    assert _cli(cli_env, tmp_path, "index", "photos").returncode == 0
    data_dir = Path(cli_env["DATA_DIR"])
    (data_dir / "server.json").write_text(json.dumps({"url": unreachable_url, "pid": 2**22}))
    alone = _cli(cli_env, tmp_path, "status", "--json")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout)["models"]["clip"]["points"] == len(library)
    assert "a server is running" not in alone.stderr


def test_the_hand_off_presents_the_key_of_the_cli_s_environment(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """With API_KEY set (a server that needs a key), the CLI's commands reach it with the
    key from their own environment; a read key searches but may not index; no key, or
    another key, is refused with the server's reason."""
    library = write_library(tmp_path / "photos")
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env.update({"API_KEY": "admin-key-0123456789abcdef", "READ_API_KEY": "read-key-0123456789"})
    with serve_process(tmp_path, env) as served:
        indexed = _cli(env, tmp_path, "index", "photos", "--json")
        assert indexed.returncode == 0, indexed.stderr + served.log.read_text()[-3000:]
        assert json.loads(indexed.stdout)["indexed"] == len(library)
        status = _cli(env, tmp_path, "status")
        assert status.returncode == 0, status.stderr
        assert f"assets: {len(library)} searchable" in status.stdout

        reader = {**env, "API_KEY": ""}  # READ_API_KEY alone
        searched = _cli(reader, tmp_path, "search", "photo", "--limit", "2", "--json")
        assert searched.returncode == 0, searched.stderr
        assert len(json.loads(searched.stdout)["results"]) == 2
        refused = _cli(reader, tmp_path, "index", "photos")
        assert refused.returncode == 1
        assert "refused" in refused.stderr
        assert "admin key" in refused.stderr

        for other in ({**env, "API_KEY": "", "READ_API_KEY": ""}, {**env, "API_KEY": "nope"}):
            denied = _cli(other, tmp_path, "search", "photo")
            assert denied.returncode == 1
            assert "refused" in denied.stderr
            assert "admin-key-0123456789abcdef" not in denied.stderr + denied.stdout
        assert served.process.poll() is None
