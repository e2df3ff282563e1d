"""Re-embedding with the in-process runner (no Redis): the CLI, the job body, progress,
failures and retries, convergence with new photos, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetEmbedding
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.retry import RetryPolicy
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import models_to_index
from image_search_service.services.reembed.progress import reembed_progress
from image_search_service.services.reembed.runner import RunReport, run_in_process
from image_search_service.services.reembed.submit import submit_reembed
from tests.factories import broken_files, write_jpeg
from tests.integration.reembed_support import (
    coverage_of,
    index_clip_only,
    invoke,
    progress_json,
    settings_env,
    write_photos,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, make_settings: Any) -> Settings:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return make_settings(database_url=url)  # type: ignore[no-any-return]
    return make_settings()  # type: ignore[no-any-return]


@pytest.fixture
def library_ctx(
    db_settings: Settings, encoders: EncoderRegistry, tmp_path: Path
) -> Iterator[ServiceContext]:
    """A context over 10 photos embedded by CLIP only, with the SigLIP collection made."""
    write_photos(tmp_path / "photos", 10)
    ctx = open_context(db_settings, encoders=encoders)
    index_clip_only(ctx, [tmp_path / "photos"])
    ctx.store.ensure_collection(ctx.collection_spec("siglip"))
    yield ctx
    ctx.close()


def _attempts(ctx: ServiceContext) -> list[int]:
    with ctx.session_factory() as session:
        return sorted(
            session.scalars(
                select(AssetEmbedding.attempts).where(AssetEmbedding.model_key == "siglip")
            )
        )


def test_cli_reembeds_every_asset_once_and_reruns_do_nothing(
    library_ctx: ServiceContext, db_settings: Settings
) -> None:
    library_ctx.close()  # the CLI opens the embedded store itself
    env = settings_env(db_settings)

    first = json.loads(invoke(env, "reembed", "--to", "siglip", "--json").output)
    assert first["runner"] == "in-process"
    assert (first["planned"], first["done"], first["failed"], first["aborted"]) == (10, 10, 0, None)
    again = json.loads(invoke(env, "reembed", "--to", "siglip", "--json").output)
    assert (again["planned"], again["done"]) == (0, 0)
    forced = json.loads(invoke(env, "reembed", "--to", "siglip", "--force", "--json").output)
    assert (forced["planned"], forced["done"]) == (10, 10)

    ctx = open_context(db_settings, encoders=EncoderRegistry(device="cpu"))
    try:
        assert ctx.store.count("image_assets_siglip") == 10  # one point per asset, always
        assert coverage_of(ctx, "siglip").ratio == 1.0
        assert _attempts(ctx) == [2] * 10
        progress = progress_json(ctx)
    finally:
        ctx.close()
    assert progress["target"] == "siglip"
    assert (progress["total"], progress["done"], progress["pending"]) == (10, 10, 0)
    assert progress["complete"] is True
    assert progress["queue"] is None  # no REDIS_URL: Redis is never contacted

    # Not a terminal: --watch prints a reading per refresh and stops once complete.
    watched = invoke(env, "reembed", "status", "--watch", "--json").output.splitlines()
    assert json.loads(watched[-1])["complete"] is True


def test_progress_counts_rate_and_eta_as_the_run_goes(library_ctx: ServiceContext) -> None:
    ctx = library_ctx
    before = progress_json(ctx)
    assert (before["total"], before["done"], before["pending"]) == (10, 0, 10)
    assert before["eta_seconds"] is None  # nothing has moved yet
    assert before["models"]["clip"]["done"] == 10

    with ctx.session_factory() as session:
        ids = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
    run_in_process(ctx, "siglip", ids[:6], job_size=4)

    halfway = progress_json(ctx)
    assert (halfway["done"], halfway["failed"], halfway["pending"]) == (6, 0, 4)
    assert halfway["rate"] > 0
    assert halfway["eta_seconds"] is not None
    assert halfway["eta_seconds"] > 0
    assert halfway["models"]["siglip"]["points"] == 6
    assert halfway["coverage"] == 0.6

    run_in_process(ctx, "siglip", ids[6:], job_size=4)
    done = progress_json(ctx)
    assert (done["done"], done["pending"], done["eta_seconds"], done["complete"]) == (
        10,
        0,
        0.0,
        True,
    )


def test_a_corrupt_file_among_many_fails_alone(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    settings: Settings = make_settings()
    photos = write_photos(tmp_path / "photos", 200)
    broken = broken_files(tmp_path / "photos" / "broken")
    ctx = open_context(settings, encoders=encoders)
    try:
        index_clip_only(ctx, [tmp_path / "photos"])
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
    finally:
        ctx.close()
    # Damaged after CLIP read it: only the re-embedding job meets the bad bytes.
    victim = photos[117]
    victim.write_bytes(victim.read_bytes()[:100])
    env = settings_env(settings)

    report = json.loads(invoke(env, "reembed", "--to", "siglip", "--json").output)
    assert (report["done"], report["failed"], report["aborted"]) == (199, 6, None)
    failed_paths = {f["path"] for f in report["failures"]}
    assert failed_paths == {str(victim), *(str(p) for p in broken.values())}

    status = json.loads(invoke(env, "reembed", "status", "--json").output)
    assert (status["done"], status["failed"], status["pending"]) == (199, 6, 0)
    listed = {item["path"]: item["error"] for item in status["failures"]["items"]}
    assert set(listed) == failed_paths
    assert "truncated" in listed[str(victim)]
    text = invoke(env, "reembed", "status").output
    assert str(victim) in text
    assert "retry-failed" in text

    # Still broken: retried, and recorded again, nothing else touched.
    retry = json.loads(invoke(env, "reembed", "retry-failed", "--to", "siglip", "--json").output)
    assert (retry["planned"], retry["done"], retry["failed"]) == (6, 0, 6)
    # Repaired: the retry lands it.
    write_jpeg(victim, seed=117)
    retry = json.loads(invoke(env, "reembed", "--to", "siglip", "retry-failed", "--json").output)
    assert (retry["planned"], retry["done"], retry["failed"]) == (6, 1, 5)

    ctx = open_context(settings, encoders=encoders)
    try:
        assert ctx.store.count("image_assets_siglip") == 200
        assert coverage_of(ctx, "siglip").ratio == 1.0
    finally:
        ctx.close()


def test_a_photo_deleted_since_the_index_fails_with_advice_and_the_run_completes(
    library_ctx: ServiceContext, tmp_path: Path
) -> None:
    gone = sorted((tmp_path / "photos").glob("*.jpg"))[3]
    gone.unlink()
    with library_ctx.session_factory() as session:
        ids = repo.asset_ids_to_embed(session, library_ctx.spec("siglip"))
    report = run_in_process(library_ctx, "siglip", ids, job_size=4)
    assert (report.done, report.failed) == (9, 1)
    assert report.failures[0]["path"] == str(gone)
    assert "image-search index" in report.failures[0]["error"]
    progress = reembed_progress(library_ctx, target="siglip")
    model = progress.headline
    assert (model.done, model.failed, model.pending, progress.complete) == (9, 1, 0, True)
    # Back again: retrying the failures lands it.
    write_jpeg(gone, seed=3)
    with library_ctx.session_factory() as session:
        retry = repo.asset_ids_to_embed(session, library_ctx.spec("siglip"), only_failed=True)
    assert len(retry) == 1


def test_new_photos_during_a_migration_land_in_both_collections(
    library_ctx: ServiceContext, tmp_path: Path
) -> None:
    ctx = library_ctx
    with ctx.session_factory() as session:
        planned = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
    run_in_process(ctx, "siglip", planned[:4], job_size=2)  # the migration is under way

    new = write_photos(tmp_path / "new", 5, start=100)
    keys = models_to_index(ctx, "auto")
    assert keys == ["clip", "siglip"]
    report = index_paths(ctx, [tmp_path / "new"], model_keys=keys)
    assert report.indexed == 5

    with ctx.session_factory() as session:
        remaining = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
    assert remaining == planned[4:]  # the new photos were embedded by both already
    run_in_process(ctx, "siglip", remaining)
    for key in keys:
        cov = coverage_of(ctx, key)
        assert (cov.ratio, cov.done, cov.searchable) == (1.0, 15, 15)
        assert ctx.store.count(ctx.spec(key).collection) == 15

    # Deleting photos removes them from every collection.
    new[0].unlink()
    new[1].unlink()
    assert index_paths(ctx, [tmp_path / "new"], model_keys=keys).missing == 2
    for key in keys:
        assert ctx.store.count(ctx.spec(key).collection) == 13
        assert coverage_of(ctx, key).ratio == 1.0


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")  # nothing listens
def test_transient_failures_retry_then_give_up_and_record_why(
    library_ctx: ServiceContext,
    db_settings: Settings,
    make_settings: Any,
    encoders: EncoderRegistry,
    unreachable_url: str,
) -> None:
    """A Qdrant that does not answer (nothing listens on the port): the same batch is
    tried 1 + max_retries times, then its assets are marked failed with the reason."""
    with library_ctx.session_factory() as session:
        ids = repo.asset_ids_to_embed(session, library_ctx.spec("siglip"))
    library_ctx.close()
    unreachable = make_settings(database_url=db_settings.database_url, qdrant_url=unreachable_url)
    ctx = open_context(unreachable, encoders=encoders)
    try:
        report = run_in_process(
            ctx, "siglip", ids, job_size=4, policy=RetryPolicy(max_retries=2, intervals=(0,))
        )
        assert report.retries == 2
        assert report.aborted is not None
        assert "VectorStoreUnavailable" in report.aborted
        assert report.jobs == 0  # it stopped at the first batch: the rest stay pending
        with ctx.session_factory() as session:
            rows = session.scalars(
                select(AssetEmbedding).where(AssetEmbedding.model_key == "siglip")
            ).all()
            progress = progress_json(ctx)
    finally:
        ctx.close()
    assert (progress["failed"], progress["pending"]) == (4, 6)
    assert len(rows) == 4
    assert all(r.last_error and "gave up after retries" in r.last_error for r in rows)


def test_embedded_store_in_use_elsewhere_is_reported_not_waited_on(
    library_ctx: ServiceContext, db_settings: Settings
) -> None:
    """The context stands for the API (or a running `reembed`) holding the store."""
    env = settings_env(db_settings)
    result = invoke(env, "reembed", "--to", "siglip", ok=False)
    assert result.exit_code == 1
    assert "in use by another process" in result.output
    assert "QDRANT_URL" in result.output

    status = json.loads(invoke(env, "reembed", "status", "--json").output)
    assert status["pending"] == 10  # counts come from the DB
    assert "in use by another process" in status["note"]
    assert status["models"]["siglip"]["points"] is None


def test_background_run_for_the_api(library_ctx: ServiceContext) -> None:
    ctx = library_ctx
    with ctx.session_factory() as session:
        ids = repo.asset_ids_to_embed(session, ctx.spec("siglip"))
    dispatcher = Dispatcher()
    try:
        submission = submit_reembed(ctx, "siglip", job_size=3, dispatcher=dispatcher)
        assert submission.background is not None
        assert submission.running_in_background is True
        assert dispatcher.wait_idle(300)
    finally:
        dispatcher.close()
    job = submission.background
    assert (job.kind, job.state, job.error) == ("reembed", "done", None)
    assert isinstance(job.result, RunReport)
    assert job.result.done == 10
    assert job.done == 10  # progress, counted per photo
    assert progress_json(ctx)["complete"] is True
    assert {UUID(str(i)) for i in ids} == ctx.store.point_ids("image_assets_siglip")
