"""Folder indexing through the real pipeline: files -> DB -> Qdrant (Edge / in-process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.errors import ModelMismatch
from image_search_service.db import repository as repo
from image_search_service.db.models import Asset, AssetStatus
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import models_to_index
from image_search_service.services.library.schemas import LibraryStatusOut
from image_search_service.services.library.status import library_status
from image_search_service.services.search.service import SearchOptions, SearchService
from tests.factories import broken_files, write_jpeg

COLOURS = [(220, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 30), (250, 250, 250)]


def make_library(root: Path, n: int = 10) -> list[Path]:
    return [
        write_jpeg(
            root / f"sub{i % 2}" / f"photo_{i:02d}.jpg",
            colour=COLOURS[i % 5],
            seed=i,
            size=(64 + i, 48),
        )
        for i in range(n)
    ]


def _assets(ctx: ServiceContext) -> dict[str, Asset]:
    with ctx.session_factory() as s:
        return {a.path: a for a in s.query(Asset).all()}


def test_index_then_search(ctx: ServiceContext, tmp_path: Path) -> None:
    files = make_library(tmp_path / "lib")
    report = index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
    assert (report.indexed, report.failed, report.skipped) == (10, 0, 0)
    assert ctx.store.count(ctx.spec("clip").collection) == 10
    # Point id = asset UUID, and the example image finds itself first.
    outcome = SearchService(ctx).search_image(
        files[3], model="clip", options=SearchOptions(limit=3)
    )
    assert outcome.results[0].path == str(files[3].resolve())
    assert outcome.results[0].score == pytest.approx(1.0, abs=1e-3)
    text = SearchService(ctx).search_text("a red photo", model="clip", options=SearchOptions())
    assert len(text.results) == 10
    assert text.collection == "image_assets"


def test_rerun_skips_unchanged_and_dedupes(ctx: ServiceContext, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    files = make_library(lib, 6)
    shutil.copy(files[0], lib / "copy_of_first.jpg")
    first = index_paths(ctx, [lib], model_keys=["clip"])
    assert (first.indexed, first.duplicates) == (6, 1)
    second = index_paths(ctx, [lib], model_keys=["clip"])
    assert (second.indexed, second.skipped, second.failed) == (0, 7, 0)
    assert len(_assets(ctx)) == 6


def test_changed_moved_and_deleted_files(ctx: ServiceContext, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    files = make_library(lib, 6)
    index_paths(ctx, [lib], model_keys=["clip"])
    before = _assets(ctx)
    moved_id = before[str(files[1].resolve())].id
    changed_id = before[str(files[2].resolve())].id

    files[0].unlink()  # deleted
    files[1].rename(lib / "renamed.jpg")  # moved: same content, new path
    write_jpeg(files[2], colour=(5, 5, 5), seed=1234)  # same path, new content
    os.utime(files[2], ns=(1, 1))
    report = index_paths(ctx, [lib], model_keys=["clip"])
    assert report.missing == 1
    assert report.indexed == 1  # only the changed file is re-embedded

    after = _assets(ctx)
    assert after[str(files[0].resolve())].status == AssetStatus.MISSING
    assert after[str((lib / "renamed.jpg").resolve())].id == moved_id
    assert after[str(files[2].resolve())].id == changed_id
    points = ctx.store.point_ids(ctx.spec("clip").collection)
    assert before[str(files[0].resolve())].id not in points
    assert moved_id in points
    assert len(points) == 5
    status = LibraryStatusOut.model_validate(library_status(ctx)).model_dump()
    assert status["assets"] == 5
    assert status["missing"] == 1
    assert status["models"]["clip"]["coverage"] == 1.0


def test_a_path_turned_into_a_link_out_hands_its_asset_to_an_identical_copy(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    original = write_jpeg(lib / "a.jpg", seed=11)
    copy = lib / "b.jpg"
    shutil.copyfile(original, copy)
    outside = write_jpeg(tmp_path / "elsewhere" / "x.jpg", seed=12)
    index_paths(ctx, [lib], model_keys=["clip"])
    asset_id = _assets(ctx)[str(original.resolve())].id
    original.unlink()
    original.symlink_to(outside)  # now a link out of the library: refused
    report = index_paths(ctx, [lib], model_keys=["clip"])
    assert report.failed == 1
    assert "outside the indexed folder" in report.failures[0]["error"]
    after = _assets(ctx)
    assert after[str(copy.resolve())].id == asset_id  # the same asset, at the copy's path
    assert str(original) not in after
    assert ctx.store.point_ids(ctx.spec("clip").collection) == {asset_id}


def test_every_kind_of_broken_file_fails_alone(ctx: ServiceContext, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    make_library(lib, 4)
    bad = broken_files(lib / "bad")
    report = index_paths(ctx, [lib], model_keys=["clip", "siglip"])
    assert report.indexed == 4
    assert report.failed == len(bad)
    reasons = {Path(f["path"]).name: f["error"] for f in report.failures}
    assert "empty" in reasons["empty.jpg"]
    assert "not a supported image file" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "decompression bomb" in reasons["bomb.png"] or "exceeds" in reasons["bomb.png"]
    assert ctx.store.count("image_assets") == ctx.store.count("image_assets_siglip") == 4
    with ctx.session_factory() as s:
        failed = s.query(Asset).filter(Asset.status == AssetStatus.FAILED).all()
        assert {a.error is not None for a in failed} == {True}
        assert len(failed) == len(bad)
        counts = repo.coverage(s, ctx.spec("siglip"))
        assert (counts.done, counts.failed) == (4, len(bad))
    # Unchanged broken files are not retried on every run.
    again = index_paths(ctx, [lib], model_keys=["clip"])
    assert (again.indexed, again.failed) == (0, 0)


def test_a_named_pipe_is_refused_without_being_opened(ctx: ServiceContext, tmp_path: Path) -> None:
    """Opening a FIFO blocks until a writer comes: the run would hang forever."""
    lib = tmp_path / "lib"
    make_library(lib, 2)
    os.mkfifo(lib / "pipe.jpg")
    report = index_paths(ctx, [lib], model_keys=["clip"])  # returns: nothing opened it
    assert (report.indexed, report.failed) == (2, 1)
    assert "not a regular file" in report.failures[0]["error"]


def test_a_data_dir_inside_the_library_is_not_indexed(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    make_library(lib, 2)
    ctx = open_context(make_settings(data_dir=lib / "service-data"), encoders=encoders)
    try:
        write_jpeg(lib / "service-data" / "thumbnails" / "t.jpg", seed=9)
        report = index_paths(ctx, [lib], model_keys=["clip"])
        assert (report.scanned, report.indexed) == (2, 2)
    finally:
        ctx.close()


def test_changing_the_model_under_a_collection_is_refused(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    make_library(tmp_path / "lib", 2)
    first = open_context(make_settings(), encoders=encoders)
    index_paths(first, [tmp_path / "lib"], model_keys=["clip"])
    first.close()
    # Same collection name, another model (same dimension): must not mix vectors.
    other = make_settings(clip_model_name=f"local-dir:{tiny_models['clip']}/../tiny-clip")
    second = open_context(other, encoders=encoders)
    try:
        with pytest.raises(ModelMismatch, match="image_assets"):
            index_paths(second, [tmp_path / "lib"], model_keys=["clip"])
        with pytest.raises(ModelMismatch):
            SearchService(second).search_text("x", model="clip", options=SearchOptions())
    finally:
        second.close()


def test_auto_models_follow_existing_collections(ctx: ServiceContext, tmp_path: Path) -> None:
    assert models_to_index(ctx, "auto") == ["clip"]
    ctx.store.ensure_collection(ctx.collection_spec("siglip"))
    assert models_to_index(ctx, "auto") == ["clip", "siglip"]
    assert models_to_index(ctx, "siglip") == ["siglip"]


def test_results_do_not_depend_on_batching_or_threads(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    files = make_library(tmp_path / "lib", 7)
    rankings = []
    for batch_size, workers in [(1, 1), (3, 2), (16, 4)]:
        data_dir = tmp_path / f"data-{batch_size}-{workers}"
        ctx = open_context(
            make_settings(data_dir=data_dir, batch_size=batch_size, decode_workers=workers),
            encoders=encoders,
        )
        try:
            index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
            outcome = SearchService(ctx).search_image(
                files[2], model="clip", options=SearchOptions(limit=7)
            )
            rankings.append([(Path(h.path).name, round(h.score, 4)) for h in outcome.results])
        finally:
            ctx.close()
    assert len(rankings[0]) == 7
    assert rankings[0] == rankings[1] == rankings[2]


@pytest.mark.postgres
def test_postgres_and_qdrant_client_adapter(
    make_settings: Any, encoders: EncoderRegistry, postgres_url: str, tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    files = make_library(lib, 5)
    shutil.copy(files[0], lib / "dup.jpg")
    broken_files(lib / "bad")
    ctx = open_context(
        make_settings(database_url=postgres_url, qdrant_url=":memory:"), encoders=encoders
    )
    try:
        report = index_paths(ctx, [lib], model_keys=["clip", "siglip"])
        assert (report.indexed, report.duplicates, report.failed) == (5, 1, 5)
        files[4].unlink()
        again = index_paths(ctx, [lib], model_keys=["clip", "siglip"])
        assert (again.indexed, again.missing) == (0, 1)
        assert ctx.store.count("image_assets_siglip") == 4
        status = LibraryStatusOut.model_validate(library_status(ctx)).model_dump()
        assert status["database"] == "postgresql"
        assert status["vector_store"] == "qdrant"
        assert status["models"]["siglip"]["coverage"] == 1.0
        hit = SearchService(ctx).search_image(files[1], model="siglip", options=SearchOptions())
        assert hit.results[0].path == str(files[1].resolve())
    finally:
        ctx.close()


def test_a_file_gone_before_it_is_read_stays_pending_not_failed(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    """A watched folder changes under a run: a file deleted (or a disk unmounted) between
    the scan and the decode is not recorded as unreadable, which would stick."""
    from image_search_service.services.library.decoding import AssetRef
    from image_search_service.services.library.pipeline import embed_assets

    kept = write_jpeg(tmp_path / "lib" / "kept.jpg", seed=1)
    gone = write_jpeg(tmp_path / "lib" / "gone.jpg", seed=2)
    index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
    with ctx.transaction() as session:
        refs = [AssetRef(repo.asset_by_path(session, str(p)).id, p) for p in (kept, gone)]  # type: ignore[union-attr]
        repo.clear_embeddings(session, refs[1].id)
    gone.unlink()
    result = embed_assets(
        refs,
        encoders=[ctx.encoder("clip")],
        store=ctx.store,
        session_factory=ctx.session_factory,
        batch_size=4,
        decode_workers=1,
        max_pixels=ctx.settings.max_image_pixels,
    )
    assert (result.done, result.failed, result.vanished) == (1, 0, [refs[1].id])
    with ctx.transaction() as session:
        asset = repo.asset_by_path(session, str(gone))
        assert asset is not None
        assert asset.status == AssetStatus.ACTIVE
        assert asset.error is None
        assert repo.embedded_keys(session, asset.id) == {}
    # Back again: the next run embeds it.
    write_jpeg(gone, seed=2)
    assert index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"]).indexed == 1


def test_a_run_stopped_by_an_error_stops_its_decoders_at_once(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    """A batch refused before it is stored (the disk's reserve) ends the run: its decode
    threads stop while the caller still holds the error, and what was stored stays."""
    import threading

    from image_search_service.core.errors import InsufficientStorage
    from image_search_service.services.library.decoding import AssetRef
    from image_search_service.services.library.pipeline import embed_assets

    files = [write_jpeg(tmp_path / "lib" / f"p{i}.jpg", seed=i) for i in range(12)]
    index_paths(ctx, [tmp_path / "lib"], model_keys=["clip"])
    with ctx.transaction() as session:
        refs = [AssetRef(repo.asset_by_path(session, str(p)).id, p) for p in files]  # type: ignore[union-attr]
        for ref in refs:
            repo.clear_embeddings(session, ref.id)  # to be embedded again
    writes = []

    def reserve() -> None:
        writes.append(1)
        if len(writes) == 2:
            raise InsufficientStorage("the disk's reserve is reached (as ctx.disk.check says)")

    with pytest.raises(InsufficientStorage) as stopped:
        embed_assets(
            refs,
            encoders=[ctx.encoder("clip")],
            store=ctx.store,
            session_factory=ctx.session_factory,
            batch_size=2,
            decode_workers=2,
            max_pixels=ctx.settings.max_image_pixels,
            before_write=reserve,
        )
    assert stopped.value is not None  # the error (and its traceback) is still held here
    decoders = [t.name for t in threading.enumerate() if t.name.startswith("decode-")]
    assert decoders == []
    with ctx.transaction() as session:
        embedded = repo.done_asset_ids(session, ctx.spec("clip"), [r.id for r in refs])
    assert embedded == {refs[0].id, refs[1].id}  # the first batch, stored before the reserve
