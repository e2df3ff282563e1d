"""The `image-search` command end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import broken_files, write_jpeg


@pytest.fixture
def cli_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The shared ``cli_env``, in batches of 4 (an index run here is several batches)."""
    return {**cli_env, "BATCH_SIZE": "4"}


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=env["DATA_DIR"].rsplit("/", 1)[0],
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_index_search_status_as_json(cli_env: dict[str, str], tmp_path: Path) -> None:
    lib = tmp_path / "photos"
    files = [write_jpeg(lib / f"p{i}.jpg", seed=i, colour=(40 * i, 90, 200)) for i in range(5)]
    broken_files(lib / "broken")

    report = json.loads(run(cli_env, "index", str(lib), "--model", "all", "--json").stdout)
    assert (report["indexed"], report["skipped"], report["failed"]) == (5, 0, 5)
    rerun = json.loads(run(cli_env, "index", str(lib), "--json").stdout)
    assert (rerun["indexed"], rerun["skipped"]) == (0, 10)

    found = json.loads(run(cli_env, "search", "a blue photo", "--limit", "3", "--json").stdout)
    assert found["model"] == "clip"
    assert found["collection"] == "image_assets"
    assert len(found["results"]) == 3
    assert {"asset_id", "path", "score"} <= set(found["results"][0])

    by_image = json.loads(
        run(cli_env, "search", "--image", str(files[2]), "--model", "siglip", "--json").stdout
    )
    assert by_image["results"][0]["path"] == str(files[2].resolve())
    assert by_image["results"][0]["calibrated_score"] is None  # image queries: cosine only
    asset_id = by_image["results"][0]["asset_id"]
    similar = json.loads(run(cli_env, "search", "--similar", asset_id, "--json").stdout)
    assert asset_id not in {r["asset_id"] for r in similar["results"]}
    assert len(similar["results"]) == 4

    status = json.loads(run(cli_env, "status", "--json").stdout)
    assert status["assets"] == 5
    for key, collection in (("clip", "image_assets"), ("siglip", "image_assets_siglip")):
        model = status["models"][key]
        assert model["collection"] == collection
        assert model["points"] == 5
        assert model["coverage"] == 1.0
        assert model["quantization"] == "int8"
        assert model["hnsw"] == {"m": 16, "ef_construct": 100}
    assert status["models"]["siglip"]["model_identity"]["dim"] == 768


def test_errors_are_one_line_not_tracebacks(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = run(cli_env, "index", str(tmp_path / "nope"), ok=False)
    assert missing.returncode == 1
    unset = run(cli_env, "index", "", ok=False)  # `image-search index "$PHOTOS"`, unset
    assert unset.returncode == 2
    assert "a path is empty" in unset.stderr
    assert "no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_id = run(cli_env, "search", "--similar", "not-a-uuid", ok=False)
    assert bad_id.returncode == 2
    assert "UUID" in bad_id.stderr
    # The server's own schema checks the options here too, worded as the server words it.
    empty_not = run(cli_env, "search", "red", "--not", "", ok=False)
    assert empty_not.returncode == 1
    assert "error: not.0: String should have at least 1 character" in empty_not.stderr
    assert "pydantic.dev" not in empty_not.stderr
    bad_env = dict(cli_env, SIGLIP_ROLLOUT_PERCENTAGE="150")
    config = run(bad_env, "status", ok=False)
    assert config.returncode == 1
    assert "SIGLIP_ROLLOUT_PERCENTAGE" in config.stderr
    assert "Traceback" not in config.stderr


def test_status_and_reembed_status_agree_on_pending(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """One definition of done / failed / pending: both views of the same library say the
    same, with unreadable files and a half-finished migration in it."""
    lib = tmp_path / "photos"
    for i in range(6):
        write_jpeg(lib / f"p{i}.jpg", seed=i, colour=(30 * i, 80, 160))
    broken_files(lib / "broken")
    run(cli_env, "index", str(lib), "--json")  # CLIP only: SigLIP has no collection yet
    run(cli_env, "create-collection", "--model", "siglip", "--json")
    status = json.loads(run(cli_env, "status", "--json").stdout)
    progress = json.loads(run(cli_env, "reembed", "status", "--json").stdout)
    for key in ("clip", "siglip"):
        model = status["models"][key]
        other = progress["models"][key]
        assert (model["embedded"], model["failed"], model["pending"]) == (
            other["done"],
            other["failed"],
            other["pending"],
        )
    assert status["models"]["siglip"]["pending"] == progress["pending"] > 0
    assert status["models"]["clip"]["pending"] == 0


def test_importing_the_cli_loads_no_model_runtime_or_store() -> None:
    code = (
        "import sys, image_search_service.cli; "
        "print(sorted(m for m in ('torch', 'open_clip', 'qdrant_edge', 'qdrant_client', "
        "'onnxruntime', 'fastapi', 'boto3', 'botocore') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
