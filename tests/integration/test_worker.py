"""RQ re-embedding against a real Redis: in-process SimpleWorkers, real
`image-search worker --burst` subprocesses, retries, a SIGKILLed worker and a Redis
restart in the middle of a migration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from sqlalchemy import select

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetEmbedding, EmbeddingState
from image_search_service.db.session import make_engine, make_session_factory
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.jobs.process import bind_context
from image_search_service.jobs.queue import work_queue
from image_search_service.jobs.retry import RetryPolicy
from image_search_service.jobs.worker import run_worker
from image_search_service.services.reembed.progress import model_progress
from image_search_service.services.reembed.schemas import ModelProgressOut
from image_search_service.services.reembed.submit import enqueue_reembed
from tests.integration.reembed_support import (
    RedisServer,
    cli_command,
    coverage_of,
    index_clip_only,
    invoke,
    progress_json,
    settings_env,
    subprocess_env,
    write_photos,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _library(settings: Settings, encoders: EncoderRegistry, photos: Path, count: int) -> None:
    """``count`` photos embedded by CLIP, and an empty SigLIP collection."""
    write_photos(photos, count)
    ctx = open_context(settings, encoders=encoders)
    try:
        index_clip_only(ctx, [photos])
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
    finally:
        ctx.close()


def _plan(ctx: ServiceContext) -> list[Any]:
    with ctx.session_factory() as session:
        return repo.asset_ids_to_embed(session, ctx.spec("siglip"))


def _assert_migrated(ctx: ServiceContext, count: int) -> None:
    """Exactly one point per asset, every asset done, nothing failed."""
    with ctx.session_factory() as session:
        progress = ModelProgressOut.model_validate(
            model_progress(session, ctx.spec("siglip"))
        ).model_dump(mode="json")
        asset_ids = set(
            session.scalars(
                select(AssetEmbedding.asset_id).where(
                    AssetEmbedding.model_key == "siglip",
                    AssetEmbedding.state == EmbeddingState.DONE,
                )
            )
        )
    assert (progress["done"], progress["failed"], progress["pending"]) == (count, 0, 0)
    assert ctx.store.count("image_assets_siglip") == count
    assert ctx.store.point_ids("image_assets_siglip") == asset_ids
    assert coverage_of(ctx, "siglip").ratio == 1.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rq_settings(request: pytest.FixtureRequest, make_settings: Any, redis_url: str) -> Settings:
    extra: dict[str, Any] = {"redis_url": redis_url}
    if request.param == "postgres":
        extra["database_url"] = request.getfixturevalue("postgres_url")
    return make_settings(**extra)  # type: ignore[no-any-return]


def test_simple_worker_runs_queued_jobs_in_process(
    rq_settings: Settings,
    encoders: EncoderRegistry,
    connection: redis.Redis[bytes],
    tmp_path: Path,
) -> None:
    _library(rq_settings, encoders, tmp_path / "photos", 10)
    ctx = open_context(rq_settings, encoders=encoders)
    try:
        queue = work_queue(connection)
        first = enqueue_reembed(queue, "siglip", _plan(ctx), job_size=4)
        again = enqueue_reembed(queue, "siglip", _plan(ctx), job_size=4)
        assert (first.jobs, first.enqueued_assets) == (3, 10)
        assert (again.jobs, again.already_queued) == (0, 10)  # nothing queued twice
        waiting = progress_json(ctx)
        assert waiting["runner"] == "rq"
        assert waiting["queue"]["queued"] == 3
        assert waiting["pending"] == 10

        bind_context(ctx)  # what `image-search worker` does with the context it opened
        try:
            assert SimpleWorker([queue], connection=connection).work(burst=True)
        finally:
            bind_context(None)

        _assert_migrated(ctx, 10)
        jobs = queue.finished_job_registry.get_job_ids()
        results: list[Any] = []
        for job_id in jobs:
            job = queue.fetch_job(job_id)
            assert job is not None
            results.append(job.return_value())
        assert sorted(r["done"] for r in results) == [2, 4, 4]
        done = progress_json(ctx)
        assert done["complete"] is True
        assert done["queue"]["queued"] == 0
    finally:
        ctx.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")  # nothing listens
def test_transient_errors_retry_then_fail_the_assets_and_retry_failed_recovers(
    make_settings: Any,
    encoders: EncoderRegistry,
    connection: redis.Redis[bytes],
    redis_url: str,
    tmp_path: Path,
    unreachable_url: str,
) -> None:
    local = f"path:{tmp_path / 'qdrant'}"
    good: Settings = make_settings(qdrant_url=local, redis_url=redis_url)
    _library(good, encoders, tmp_path / "photos", 6)
    # The same DB, but a Qdrant that does not answer.
    down = open_context(
        make_settings(qdrant_url=unreachable_url, redis_url=redis_url), encoders=encoders
    )
    queue = work_queue(connection)
    try:
        enqueue_reembed(
            queue, "siglip", _plan(down), job_size=6, policy=RetryPolicy(1, intervals=(0,))
        )
        run_worker(down, connection, burst=True)
        (job_id,) = queue.failed_job_registry.get_job_ids()
        job = queue.fetch_job(job_id)
        assert job is not None
        assert job.retries_left == 0
        assert "VectorStoreUnavailable" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
        with down.session_factory() as session:
            rows = session.scalars(
                select(AssetEmbedding).where(AssetEmbedding.model_key == "siglip")
            ).all()
        assert len(rows) == 6
        assert all(r.state == EmbeddingState.FAILED for r in rows)
        assert all("gave up after retries" in (r.last_error or "") for r in rows)
    finally:
        down.close()

    env = settings_env(good)
    status = json.loads(invoke(env, "reembed", "status", "--model", "siglip", "--json").output)
    assert (status["failed"], status["failures"]["count"]) == (6, 6)
    assert status["queue"]["failed_jobs"] == 1
    queued = json.loads(invoke(env, "reembed", "retry-failed", "--to", "siglip", "--json").output)
    assert (queued["runner"], queued["enqueued_assets"], queued["jobs"]) == ("rq", 6, 1)
    assert queue.failed_job_registry.count == 0

    ctx = open_context(good, encoders=encoders)
    try:
        run_worker(ctx, connection, burst=True)
        _assert_migrated(ctx, 6)
    finally:
        ctx.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")  # nothing listens
def test_a_retry_scheduled_for_later_runs_when_due_in_a_burst(
    make_settings: Any,
    encoders: EncoderRegistry,
    connection: redis.Redis[bytes],
    redis_url: str,
    tmp_path: Path,
    unreachable_url: str,
) -> None:
    """Qdrant is down for the first attempt; RQ schedules the retry 2 s later, and a burst
    worker waits for it instead of leaving it behind, then lands the batch."""
    good: Settings = make_settings(qdrant_url=f"path:{tmp_path / 'qdrant'}", redis_url=redis_url)
    _library(good, encoders, tmp_path / "photos", 4)
    queue = work_queue(connection)
    down = open_context(
        make_settings(qdrant_url=unreachable_url, redis_url=redis_url), encoders=encoders
    )
    try:
        enqueue_reembed(queue, "siglip", _plan(down), policy=RetryPolicy(3, intervals=(2,)))
        assert run_worker(down, connection, burst=True, max_jobs=1).jobs == 1
    finally:
        down.close()
    # The retry waits in RQ's schedule (or, if already due, is back on the queue).
    assert queue.scheduled_job_registry.count + queue.count == 1
    assert queue.failed_job_registry.count == 0

    ctx = open_context(good, encoders=encoders)
    try:
        assert run_worker(ctx, connection, burst=True).jobs == 1
        assert queue.scheduled_job_registry.count + queue.count == 0
        (job_id,) = queue.finished_job_registry.get_job_ids()
        job = queue.fetch_job(job_id)
        assert job is not None
        assert job.retries_left == 2
        _assert_migrated(ctx, 4)
    finally:
        ctx.close()


def test_a_permanent_error_is_not_retried(
    make_settings: Any,
    encoders: EncoderRegistry,
    connection: redis.Redis[bytes],
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings: Settings = make_settings(redis_url=redis_url)
    _library(settings, encoders, tmp_path / "photos", 3)
    ctx = open_context(settings, encoders=encoders)
    try:
        queue = work_queue(connection)
        enqueue_reembed(queue, "siglip", _plan(ctx))
        ctx.store.drop_collection("image_assets_siglip")  # an operator dropped it meanwhile
        report = run_worker(ctx, connection, burst=True)
        assert report.jobs == 1
        (job_id,) = queue.failed_job_registry.get_job_ids()
        job = queue.fetch_job(job_id)
        assert job is not None
        assert job.retries_left == 0
        assert queue.scheduled_job_registry.count == 0
        assert "CollectionMissing" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    finally:
        ctx.close()


def test_worker_refuses_the_embedded_store_and_a_missing_redis(make_settings: Any) -> None:
    settings: Settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    embedded = invoke(settings_env(settings), "worker", "--burst", ok=False)
    assert embedded.exit_code == 1
    assert "QDRANT_URL" in embedded.output
    assert "one process at a time" in embedded.output

    no_redis = invoke(settings_env(make_settings()), "worker", ok=False)
    assert no_redis.exit_code == 1
    assert "REDIS_URL is not set" in no_redis.output


def _worker(settings: Settings, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command("worker", "--burst", *args),
        env=subprocess_env(settings_env(settings)),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_worker_subprocess_loads_the_model_once(
    make_settings: Any, encoders: EncoderRegistry, redis_url: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        qdrant_url=f"path:{tmp_path / 'qdrant'}", redis_url=redis_url
    )
    _library(settings, encoders, tmp_path / "photos", 12)
    env = settings_env(settings)
    queued = json.loads(
        invoke(env, "reembed", "--to", "siglip", "--job-size", "4", "--json").output
    )
    assert (queued["runner"], queued["jobs"]) == ("rq", 3)

    proc = _worker(settings, tmp_path)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert output.count("loaded siglip model") == 1  # once for three jobs
    assert "3 jobs run" in output

    ctx = open_context(settings, encoders=encoders)
    try:
        _assert_migrated(ctx, 12)
    finally:
        ctx.close()


def _done_count(settings: Settings) -> int:
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            return len(
                session.scalars(
                    select(AssetEmbedding.asset_id).where(
                        AssetEmbedding.model_key == "siglip",
                        AssetEmbedding.state == EmbeddingState.DONE,
                    )
                ).all()
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_worker_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(
    make_settings: Any, encoders: EncoderRegistry, redis_url: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        qdrant_url=f"path:{tmp_path / 'qdrant'}", redis_url=redis_url
    )
    _library(settings, encoders, tmp_path / "photos", 200)
    env = settings_env(settings)
    invoke(env, "reembed", "--to", "siglip", "--job-size", "16")

    proc = _worker(settings, tmp_path)
    deadline = time.monotonic() + 300
    while _done_count(settings) < 16 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no warning, no clean-up: a crash or the OOM killer
    proc.communicate(timeout=60)
    at_kill = _done_count(settings)
    assert 16 <= at_kill < 200, "the worker must die with work left"

    # Restart: queue again what is not done (the killed job's assets included), work it.
    requeued = json.loads(invoke(env, "reembed", "--to", "siglip", "--json").output)
    assert requeued["planned"] == 200 - _done_count(settings)
    restarted = _worker(settings, tmp_path)
    output, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, output

    ctx = open_context(settings, encoders=encoders)
    try:
        _assert_migrated(ctx, 200)
    finally:
        ctx.close()


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_redis_restart_mid_migration_resumes(
    persistent: bool, make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=persistent)
    server.start()
    try:
        settings: Settings = make_settings(redis_url=server.url)
        _library(settings, encoders, tmp_path / "photos", 10)
        ctx = open_context(settings, encoders=encoders)
        try:
            client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
            enqueue_reembed(work_queue(client), "siglip", _plan(ctx), job_size=2)
            assert run_worker(ctx, client, burst=True, max_jobs=2).jobs == 2
            client.close()

            server.restart()  # SIGKILL, then start again on the same port and data dir

            client = redis.Redis.from_url(server.url)
            queue = Queue("reembed", connection=client)
            if persistent:
                assert queue.count == 3  # the queue survived
            else:
                assert queue.count == 0  # lost: the DB still knows what is left
                again = enqueue_reembed(work_queue(client), "siglip", _plan(ctx), job_size=2)
                assert again.enqueued_assets == 6
            run_worker(ctx, client, burst=True)
            client.close()
            _assert_migrated(ctx, 10)
        finally:
            ctx.close()
    finally:
        server.kill()
