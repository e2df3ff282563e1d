"""Index, re-embed and search end to end with the ONNX runtime chosen by the settings:
real JPEG files, Qdrant Edge on disk, SQLite, the real FastAPI app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.api.app import create_app
from image_search_service.context import open_context
from image_search_service.encoders.onnx import OnnxEncoder
from image_search_service.encoders.openclip import OpenClipEncoder
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.schemas import LibraryStatusOut
from image_search_service.services.library.status import library_status
from image_search_service.services.search.service import SearchOptions, SearchService
from tests.factories import write_jpeg

COLOURS = [(220, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30), (250, 250, 250)]


def _library(root: Path, n: int, start: int = 0) -> list[Path]:
    return [
        write_jpeg(
            root / f"photo_{i:02d}.jpg", colour=COLOURS[i % 5], seed=i, size=(300 + 9 * i, 240)
        )
        for i in range(start, start + n)
    ]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_index_and_search_with_onnx(make_settings: Any, tmp_path: Path, precision: str) -> None:
    settings = make_settings(
        encoder_runtime="onnx", encoder_precision=precision, data_dir=tmp_path / "data"
    )
    files = _library(tmp_path / "lib", 8)
    ctx = open_context(settings)
    try:
        encoder = ctx.encoder("siglip")
        assert isinstance(encoder, OnnxEncoder)
        report = index_paths(ctx, [tmp_path / "lib"], model_keys=["clip", "siglip"])
        assert (report.indexed, report.failed) == (8, 0)
        runtime = encoder.runtime
        assert runtime.startswith("onnx-")
        # Exports live next to the model cache (DATA_DIR/models when MODEL_CACHE_DIR is unset).
        assert list((tmp_path / "data" / "models" / "onnx").glob("*/manifest.json"))
        service = SearchService(ctx)
        for key in ("clip", "siglip"):
            found = service.search_image(files[2], model=key, options=SearchOptions(limit=3))
            assert found.results[0].path == str(files[2].resolve())
            assert found.results[0].score == pytest.approx(1.0, abs=1e-3)
            text = service.search_text("a red photo", model=key, options=SearchOptions())
            assert len(text.results) == 8
        status = LibraryStatusOut.model_validate(library_status(ctx)).model_dump()
        assert status["models"]["siglip"]["runtimes"] == [runtime]
        assert status["models"]["siglip"]["configured_runtime"] == f"onnx-{precision}"
    finally:
        ctx.close()


def test_switching_runtime_is_provenance_not_a_model_mismatch(
    make_settings: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = _library(tmp_path / "lib", 4)
    ctx = open_context(make_settings(encoder_runtime="torch", data_dir=data))
    try:
        index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
    finally:
        ctx.close()
    _library(tmp_path / "lib", 2, start=4)
    onnx_settings = make_settings(encoder_runtime="onnx", encoder_precision="fp32", data_dir=data)
    ctx = open_context(onnx_settings)
    try:
        report = index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
        assert (report.indexed, report.skipped) == (2, 4)
        info = ctx.store.collection_info(ctx.spec("clip").collection)
        assert info is not None
        assert info.runtimes == ("torch-fp32", "onnx-fp32")
        assert (
            LibraryStatusOut.model_validate(library_status(ctx)).model_dump()["models"]["clip"][
                "identity_matches"
            ]
            is True
        )
        assert isinstance(ctx.encoder("clip"), OnnxEncoder)
        # fp32 ONNX reproduces the stored PyTorch vectors: a switch needs no re-embedding.
        for path in first:
            hits = SearchService(ctx).search_image(
                path, model="clip", options=SearchOptions(limit=1)
            )
            assert hits.results[0].path == str(path.resolve())
            assert hits.results[0].score == pytest.approx(1.0, abs=1e-4)
    finally:
        ctx.close()


def test_reembed_job_uses_the_configured_runtime(make_settings: Any, tmp_path: Path) -> None:
    from image_search_service.db import repository as repo
    from image_search_service.services.reembed.runner import run_in_process

    settings = make_settings(
        encoder_runtime="onnx", encoder_precision="int8", data_dir=tmp_path / "data"
    )
    _library(tmp_path / "lib", 6)
    ctx = open_context(settings)
    try:
        index_paths(ctx, [tmp_path / "lib"], model_keys=[])
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
        with ctx.session_factory() as session:
            ids = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
        assert len(ids) == 6
        run_in_process(ctx, "siglip", ids, job_size=4)
        assert ctx.store.count(ctx.spec("siglip").collection) == 6
        info = ctx.store.collection_info(ctx.spec("siglip").collection)
        assert info is not None
        assert info.runtimes == (ctx.encoder("siglip").runtime,)
        assert info.runtimes[0].startswith("onnx-")
    finally:
        ctx.close()


def test_api_serves_text_queries_with_onnx(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(
        encoder_runtime="onnx", encoder_precision="fp32", data_dir=tmp_path / "data"
    )
    _library(tmp_path / "lib", 5)
    ctx = open_context(settings)
    try:
        index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
        reference = OpenClipEncoder(ctx.spec("clip"), device="cpu").encode_text(["a red photo"])
        expected = ctx.store.search(ctx.spec("clip").collection, reference[0], limit=5)
    finally:
        ctx.close()
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert services.ctx.encoder("clip").runtime == "onnx-fp32"
        response = client.get("/api/v1/search", params={"q": "a red photo", "limit": 5})
        assert response.status_code == 200
        got = [hit["asset_id"] for hit in response.json()["results"]]
    # fp32 ONNX ranks exactly as PyTorch does.
    assert got == [str(hit.id) for hit in expected]
