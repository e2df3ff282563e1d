"""What a new user meets on a first run: one clear line for each mistake, the library
in a fixed per-user place, and no trap left behind by a model that failed to load
(issue 9). The CLI runs as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.core.errors import ModelLoadError, ModelMismatch
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.factories import write_jpeg


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image_search_service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_an_unwritable_data_dir_is_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    cli_env["DATA_DIR"] = str(blocker / "data")
    line = _one_error_line(cli(cli_env, "status", cwd=tmp_path))
    assert f"DATA_DIR {blocker / 'data'} is not a writable folder" in line


def test_search_before_any_index_says_what_to_do(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli_env["CLIP_MODEL_NAME"] = f"local-dir:{tmp_path / 'no-model-here'}"  # never loaded
    line = _one_error_line(cli(cli_env, "search", "a red photo", cwd=tmp_path))
    assert "Run `image-search index FOLDER` first" in line
    assert str(tmp_path / "data") in line


def test_a_missing_query_image_is_named_before_the_model_loads(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    cli_env["CLIP_MODEL_NAME"] = f"local-dir:{tmp_path / 'no-model-here'}"  # would fail to load
    line = _one_error_line(cli(cli_env, "search", "--image", "nothere.jpg", cwd=tmp_path))
    assert f"no such image file: {tmp_path / 'nothere.jpg'}" in line


def test_the_library_lives_in_the_per_user_data_folder(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    del cli_env["DATA_DIR"]
    cli_env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    write_jpeg(tmp_path / "photos" / "a.jpg", seed=1)
    first = cli(cli_env, "index", str(tmp_path / "photos"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    library = tmp_path / "xdg" / "image-search"
    assert f"library: {library}" in first.stderr
    # Searched from another folder: the same library.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = cli(cli_env, "search", "a photo", cwd=elsewhere)
    assert found.returncode == 0, found.stderr
    assert "1 results" in found.stdout
    assert not (tmp_path / "data").exists()
    assert not (elsewhere / "data").exists()


def test_data_dir_default_follows_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/users/ann/.local/share")
    assert Settings(_env_file=None).data_dir == Path("/srv/users/ann/.local/share/image-search")


class TestModelLoadTrap:
    def test_a_failed_model_load_creates_no_collection(
        self, make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
    ) -> None:
        write_jpeg(tmp_path / "photos" / "a.jpg", seed=1)
        broken = make_settings(clip_model_name=f"local-dir:{tmp_path / 'missing-model'}")
        ctx = open_context(broken, encoders=EncoderRegistry(device="cpu"))
        try:
            with pytest.raises(ModelLoadError):
                index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
            assert not ctx.has_collection("clip")
        finally:
            ctx.close()
        # Following the error's advice (another model) then simply works.
        ctx = open_context(make_settings(), encoders=encoders)
        try:
            report = index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
            assert report.indexed == 1
        finally:
            ctx.close()

    def test_an_empty_collection_of_another_model_is_remade(
        self,
        make_settings: Any,
        encoders: EncoderRegistry,
        tmp_path: Path,
        tiny_models: dict[str, Path],
    ) -> None:
        write_jpeg(tmp_path / "photos" / "a.jpg", seed=1)
        # Same weights under another name: a different stamp (docs/design.md, invariant 3).
        other = make_settings(clip_model_name=f"local-dir:{tiny_models['clip']}/../tiny-clip")
        ctx = open_context(other, encoders=encoders)
        try:
            ctx.store.ensure_collection(ctx.collection_spec("clip"))  # left empty
        finally:
            ctx.close()
        ctx = open_context(make_settings(), encoders=encoders)
        try:
            assert index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"]).indexed == 1
            ctx.forget_verified("clip")
            ctx.verify_collection("clip")  # stamped for this model
        finally:
            ctx.close()
        # Not empty any more: the other model is refused, as before.
        ctx = open_context(other, encoders=encoders)
        try:
            with pytest.raises(ModelMismatch):
                index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
        finally:
            ctx.close()
