"""`image-search create-collection`: dry run, create, check, drop - embedded and Qdrant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.core.specs import ModelIdentity
from image_search_service.db import repository as repo
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.vector.schema import CollectionSpec
from tests.integration.reembed_support import (
    index_clip_only,
    invoke,
    settings_env,
    subprocess_env,
    write_photos,
)

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(params=["embedded", "qdrant"])
def store_settings(request: pytest.FixtureRequest, make_settings: Any, tmp_path: Path) -> Settings:
    """The embedded Edge store, or the Qdrant adapter over qdrant-client's on-disk local
    mode (``path:``), which, unlike ``:memory:``, outlives one CLI invocation."""
    if request.param == "qdrant":
        return make_settings(qdrant_url=f"path:{tmp_path / 'qdrant-local'}")  # type: ignore[no-any-return]
    return make_settings()  # type: ignore[no-any-return]


def test_dry_run_prints_the_plan_and_touches_nothing(store_settings: Settings) -> None:
    env = settings_env(store_settings)
    result = invoke(env, "create-collection", "--model", "siglip", "--dry-run", "--json")
    plan = json.loads(result.output)
    assert plan["dry_run"] is True
    assert plan["collection"] == "image_assets_siglip"
    assert plan["dim"] == 768
    assert plan["distance"] == "cosine"
    assert plan["quantization"]["type"] == "int8"
    assert plan["hnsw"] == {"m": 16, "ef_construct": 100}
    assert plan["model_identity"]["model_name"] == store_settings.siglip_model_name
    assert not store_settings.data_dir.exists()  # no DB, no store, no lock file

    text = invoke(env, "create-collection", "--model", "siglip", "--dry-run").output
    assert "768-d" in text
    assert "nothing was changed" in text
    assert not store_settings.data_dir.exists()


def test_create_is_idempotent_and_check_reports_coverage(
    store_settings: Settings, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    photos = write_photos(tmp_path / "photos", 3)
    with_local_qdrant = store_settings.qdrant_url is not None
    ctx = open_context(store_settings, encoders=encoders)
    try:
        index_clip_only(ctx, [photos[0].parent])
    finally:
        ctx.close()
    env = settings_env(store_settings)

    missing = invoke(env, "create-collection", "--model", "siglip", "--check", "--json", ok=False)
    assert missing.exit_code == 1
    assert json.loads(missing.output)["exists"] is False

    first = json.loads(invoke(env, "create-collection", "--model", "siglip", "--json").output)
    second = json.loads(invoke(env, "create-collection", "--model", "siglip", "--json").output)
    assert (first["created"], second["created"]) == (True, False)
    assert second["ok"] is True
    assert second["problems"] == []

    check = json.loads(
        invoke(env, "create-collection", "--model", "siglip", "--check", "--json").output
    )
    assert check["ok"] is True
    assert check["points"] == 0
    assert check["dim"] == 768
    assert check["distance"] == "cosine"
    # qdrant-client's local mode ignores quantization; a server and Edge apply it.
    assert check["quantization"] == (None if with_local_qdrant else "int8")
    assert check["model_identity"]["model_name"] == store_settings.siglip_model_name
    assert (check["coverage"], check["embedded"], check["assets"]) == (0.0, 0, 3)
    assert check["vector_store"] == ("qdrant" if with_local_qdrant else "embedded")

    clip = json.loads(
        invoke(env, "create-collection", "--model", "clip", "--check", "--json").output
    )
    assert (clip["coverage"], clip["points"]) == (1.0, 3)


def test_check_fails_on_a_collection_that_differs_from_the_settings(
    make_settings: Any, encoders: EncoderRegistry
) -> None:
    settings: Settings = make_settings()
    ctx = open_context(settings, encoders=encoders)
    try:  # made by an operator with other settings: 512-d under the SigLIP name
        wrong = ModelIdentity(settings.siglip_model_name, settings.siglip_pretrained, 512)
        ctx.store.ensure_collection(CollectionSpec(name=settings.siglip_collection, identity=wrong))
    finally:
        ctx.close()
    env = settings_env(settings)

    result = invoke(env, "create-collection", "--model", "siglip", "--check", "--json", ok=False)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["exists"] is True
    assert data["ok"] is False
    assert any("dimension 512, configured 768" in p for p in data["problems"])

    # Creating over it refuses too: it never mixes models.
    create = invoke(env, "create-collection", "--model", "siglip", ok=False)
    assert create.exit_code == 1
    assert "768-d" in create.output


def test_check_fails_on_other_hnsw_settings(make_settings: Any) -> None:
    settings: Settings = make_settings()
    invoke(settings_env(settings), "create-collection", "--model", "siglip")
    other = settings_env(make_settings(hnsw_m=32))
    result = invoke(other, "create-collection", "--model", "siglip", "--check", ok=False)
    assert result.exit_code == 1
    assert "MISMATCH" in result.output
    assert "m=16" in result.output
    assert "m=32" in result.output


def test_drop_asks_first_and_keeps_the_other_collection(
    store_settings: Settings, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    photos = write_photos(tmp_path / "photos", 4)
    ctx = open_context(store_settings, encoders=encoders)
    try:
        index_clip_only(ctx, [photos[0].parent])
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
    finally:
        ctx.close()
    env = settings_env(store_settings)
    invoke(env, "reembed", "--to", "siglip", "--in-process")

    declined = invoke(
        env, "create-collection", "--model", "siglip", "--drop", input="n\n", ok=False
    )
    assert declined.exit_code == 1  # click's Abort
    still = json.loads(
        invoke(env, "create-collection", "--model", "siglip", "--check", "--json").output
    )
    assert (still["points"], still["coverage"]) == (4, 1.0)

    dropped = json.loads(
        invoke(env, "create-collection", "--model", "siglip", "--drop", "--yes", "--json").output
    )
    assert dropped == {
        "model": "siglip",
        "collection": "image_assets_siglip",
        "dropped": True,
        "points_removed": 4,
        "states_cleared": 4,
    }
    ctx = open_context(store_settings, encoders=encoders)
    try:
        assert not ctx.has_collection("siglip")
        assert ctx.store.count("image_assets") == 4  # the baseline is untouched
        with ctx.session_factory() as session:
            # Nothing claims to be embedded by a collection that is gone.
            assert len(repo.asset_ids_to_embed(session, ctx.spec("siglip"))) == 4
            assert repo.asset_ids_to_embed(session, ctx.spec("clip")) == []
    finally:
        ctx.close()


def test_the_operator_scripts_run_as_programs(make_settings: Any, tmp_path: Path) -> None:
    env = subprocess_env(settings_env(make_settings()))

    def run(script: str, *args: str) -> Any:
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / script), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    plan = run("create_siglip_collection.py", "--dry-run", "--json")
    assert (plan["model"], plan["dim"]) == ("siglip", 768)
    status = run("reembed_siglip.py", "status", "--json")
    assert (status["target"], status["total"], status["complete"]) == ("siglip", 0, True)


def test_a_local_qdrant_folder_in_use_is_a_clear_error(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    """``QDRANT_URL=path:...`` locks its folder like the embedded store: the second
    process waits EMBEDDED_LOCK_TIMEOUT_S, then says why, never corrupting anything."""
    settings: Settings = make_settings(qdrant_url=f"path:{tmp_path / 'qdrant-local'}")
    ctx = open_context(settings, encoders=encoders)
    try:
        result = invoke(settings_env(settings), "create-collection", "--model", "siglip", ok=False)
        assert result.exit_code == 1
        assert "in use by another process" in result.output
        assert "QDRANT_URL" in result.output
    finally:
        ctx.close()
    invoke(settings_env(settings), "create-collection", "--model", "siglip")  # free again
