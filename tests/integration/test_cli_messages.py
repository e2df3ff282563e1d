"""Command-line rough edges (issues 20 and 26): one line where there was a traceback or
"Aborted!", and the commands that hand their work to a running server. Real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from image_search_service.demo.synthetic import write_library as write_shapes
from tests.integration.api_support import write_library
from tests.integration.live_server import serve_process, tiny_model_env

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "image_search_service.cli"]


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_ctrl_c_during_index_says_how_far_it_got_and_resumes(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    photos = [path for path, _ in write_shapes(tmp_path / "photos", 300, seed=7)]
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env.update({"BATCH_SIZE": "2", "ENCODER_RUNTIME": "torch"})
    process = subprocess.Popen(
        [*CLI, "index", str(tmp_path / "photos")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal: a suite started in the background (`cmd &` in a
        # script) hands its children SIGINT ignored, and Python then never raises
        # KeyboardInterrupt (the index would just finish).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in process.stderr:  # the context is open once the library is named
        seen.append(line)
        if "library:" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    process.send_signal(signal.SIGINT)
    _out, rest = process.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Aborted!" not in stderr
    assert "run the same command again to resume" in stderr
    assert f"of {len(photos)} photos indexed so far are kept" in stderr or "of ? photos" in stderr

    again = _cli(env, tmp_path, "index", str(tmp_path / "photos"), "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["indexed"] + report["skipped"] == len(photos)
    assert report["failed"] == 0


def test_serve_on_an_unwritable_data_dir_is_one_line(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    env = tiny_model_env(tiny_models, blocker / "data")
    line = _one_error_line(_cli(env, tmp_path, "serve", "--port", "1"))
    assert f"DATA_DIR {blocker / 'data'} is not a writable folder" in line


def test_serve_on_a_full_disk_is_one_line(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        data_dir = disk / "data"
        data_dir.mkdir()
        try:  # fill it to the last page
            with (disk / "filler").open("wb", buffering=0) as filler:
                while True:
                    filler.write(b"\0" * 4096)
        except OSError:
            pass
        env = tiny_model_env(tiny_models, data_dir)
        line = _one_error_line(_cli(env, tmp_path, "serve", "--port", "1"))
        assert f"writing {data_dir / 'server.json'} failed (No space left on device)" in line
        assert not (data_dir / "server.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_second_serve_names_the_first(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    data_dir = tmp_path / "data"
    env = tiny_model_env(tiny_models, data_dir)
    with serve_process(tmp_path, env) as served:
        line = _one_error_line(_cli(env, tmp_path, "serve", "--port", "1"))
        url = str(served.client.base_url).rstrip("/")
        assert line == (
            f"error: a server already runs on this DATA_DIR ({data_dir}) at {url}; "
            "stop it first, or use that one"
        )


def test_reembed_status_and_duplicates_ask_the_running_server(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    library = write_library(tmp_path / "photos")
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env["EMBEDDED_LOCK_TIMEOUT_S"] = "0.5"
    with serve_process(tmp_path, env) as served:
        indexed = _cli(env, tmp_path, "index", "photos")
        assert indexed.returncode == 0, indexed.stderr
        status = _cli(env, tmp_path, "reembed", "status", "--model", "clip", "--json")
        assert status.returncode == 0, status.stderr + served.log.read_text()[-3000:]
        assert "a server is running on this DATA_DIR" not in status.stderr  # --json: quiet
        progress = json.loads(status.stdout)
        # Read through the server, which holds the store: the points are counted.
        assert progress["models"]["clip"]["points"] == len(library)
        assert progress["note"] is None
        shown = _cli(env, tmp_path, "reembed", "status", "--model", "clip")
        assert shown.returncode == 0, shown.stderr
        assert f"a server is running on this DATA_DIR ({served.client.base_url}" in shown.stderr
        assert f"{len(library)}/{len(library)} done" in shown.stdout

        duplicates = _cli(env, tmp_path, "duplicates", "--json")
        assert duplicates.returncode == 0, duplicates.stderr + served.log.read_text()[-3000:]
        found = json.loads(duplicates.stdout)
        assert (found["model"], found["scanned"]) == ("clip", len(library))
        printed = _cli(env, tmp_path, "duplicates")
        assert printed.returncode == 0, printed.stderr
        assert "a server is running on this DATA_DIR" in printed.stderr
        assert f"among {len(library)} photos (clip" in printed.stdout


def test_weights_that_need_a_download_fail_fast_offline(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    write_library(tmp_path / "photos")
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env.update(
        {
            "CLIP_MODEL_NAME": "ViT-B-32",
            "CLIP_PRETRAINED": "openai",
            "HF_HUB_OFFLINE": "1",  # no network call from the test
            "HF_HOME": str(tmp_path / "hf"),  # an empty cache
            "MODEL_CACHE_DIR": str(tmp_path / "models"),
        }
    )
    line = _one_error_line(_cli(env, tmp_path, "index", "photos"))
    assert "the clip weights (ViT-B-32 / openai) are not in" in line
    assert "HF_HUB_OFFLINE is set" in line


def test_search_says_when_nothing_is_a_close_match(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    write_shapes(tmp_path / "photos", 30, seed=11)
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env.update({"CLIP_MODEL_NAME": "demo-clip", "CLIP_PRETRAINED": "", "ENCODER_RUNTIME": "torch"})
    assert _cli(env, tmp_path, "index", "photos").returncode == 0
    nearest = _cli(env, tmp_path, "search", "zebra on a beach")
    assert nearest.returncode == 0, nearest.stderr
    lines = nearest.stdout.splitlines()
    assert lines[0] == "No close matches for 'zebra on a beach'; the nearest few:"
    assert lines[1].startswith(
        ("1 results", "2 results", "3 results", "4 results", "5 results", "6 results")
    )
    everything = _cli(
        env, tmp_path, "search", "zebra on a beach", "--all", "--limit", "50", "--json"
    )
    assert everything.returncode == 0, everything.stderr
    answer = json.loads(everything.stdout)
    assert (answer["close_matches"], answer["relevance_floor"]) == (True, None)
    assert len(answer["results"]) == 30
    both = _cli(env, tmp_path, "search", "zebra", "--all", "--min-score", "0.2")
    assert both.returncode == 2
    assert "give --all or --min-score, not both" in both.stderr


def test_serve_warms_the_models_and_reports_a_failed_one(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    env = tiny_model_env(tiny_models, tmp_path / "data")
    env["CLIP_MODEL_NAME"] = f"local-dir:{tmp_path / 'no-model-here'}"
    with serve_process(tmp_path, env) as served:
        deadline = time.monotonic() + 120
        while True:  # the warm-up runs in the background: /health answered meanwhile
            about = served.client.get("/api/v1/about").json()
            clip = next(m for m in about["models"] if m["key"] == "clip")
            if clip["state"] != "loading":
                break
            assert time.monotonic() < deadline, about
            time.sleep(0.2)
        assert clip["state"] == "failed"
        assert "no-model-here" in clip["error"]
        assert about["demo"] is False
        assert about["demo_note"] is None
        # SigLIP is not in use (no rollout): not warmed, not loaded.
        assert next(m for m in about["models"] if m["key"] == "siglip")["state"] == "idle"
        assert served.client.get("/health").status_code == 200
        assert "warm-up: the clip model did not load" in served.log.read_text()
