"""The ingest webhook's job when the objects or the bucket are not what it expects: an
object that is no image, credentials the bucket refuses, and such a job on a real RQ
worker (its reason recorded, retried on RQ's schedule). A real S3 server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from rq import SimpleWorker

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.s3 import SourceAccessDenied, SourceNotFound
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.process import bind_context
from image_search_service.jobs.queue import work_queue
from image_search_service.jobs.worker import run_worker
from image_search_service.services.library.ingest import ingest_objects, submit_ingest
from tests.factories import jpeg_bytes
from tests.integration.s3_support import S3Server

WRONG_SECRET = "wJalrXUtnFEMI-wrong-secret-value"


def status(ctx: ServiceContext, uri: str) -> AssetStatus | None:
    with ctx.transaction() as session:
        asset = repo.asset_by_path(session, uri)
        return asset.status if asset is not None else None


def test_objects_that_are_no_images_fail_alone_with_their_reason(
    ctx: ServiceContext, s3_env: S3Server
) -> None:
    bucket = s3_env.new_bucket()
    s3 = s3_env.client()
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"a shopping list")
    s3.put_object(Bucket=bucket, Key="fake.jpg", Body=b"text with a photo's name")
    s3.put_object(Bucket=bucket, Key="real.jpg", Body=jpeg_bytes(seed=41))
    uris = [f"s3://{bucket}/{key}" for key in ("notes.txt", "fake.jpg", "real.jpg")]
    report = ingest_objects(ctx, uris)
    assert (report.indexed, report.failed) == (1, 1)
    assert report.unsupported_files == [uris[0]]
    assert report.failures[0]["path"] == uris[1]
    assert "not a supported image file" in report.failures[0]["error"]
    assert status(ctx, uris[2]) == AssetStatus.ACTIVE
    assert status(ctx, uris[0]) is None
    assert ctx.store.count("image_assets") == 1


def test_a_bucket_that_refuses_the_credentials_fails_the_ingest(
    make_settings: Any,
    encoders: EncoderRegistry,
    s3_env: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="a.jpg", Body=jpeg_bytes(seed=42))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    ctx = open_context(make_settings(), encoders=encoders)
    try:
        with pytest.raises(SourceAccessDenied) as denied:
            ingest_objects(ctx, [f"s3://{bucket}/a.jpg"])
        assert status(ctx, f"s3://{bucket}/a.jpg") is None
    finally:
        ctx.close()
    assert f"access denied to s3://{bucket}/a.jpg" in str(denied.value)
    assert WRONG_SECRET not in str(denied.value)


def test_an_object_in_a_missing_bucket_fails_the_ingest_instead_of_reading_as_gone(
    ctx: ServiceContext, s3_env: S3Server
) -> None:
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="kept.jpg", Body=jpeg_bytes(seed=43))
    kept = f"s3://{bucket}/kept.jpg"
    assert ingest_objects(ctx, [kept]).indexed == 1
    # An object that is gone from a bucket that is there: marked missing, as before.
    s3_env.client().delete_object(Bucket=bucket, Key="kept.jpg")
    assert ingest_objects(ctx, [kept]).missing == 1
    # A bucket that is not there at all is an error, and marks nothing missing.
    with pytest.raises(SourceNotFound, match=f"bucket not found: s3://{bucket}-gone/"):
        ingest_objects(ctx, [f"s3://{bucket}-gone/a.jpg"])


@pytest.mark.redis
def test_an_ingest_job_failing_under_rq_keeps_its_reason_and_its_retry_lands(
    make_settings: Any,
    encoders: EncoderRegistry,
    s3_env: S3Server,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings: Settings = make_settings(redis_url=redis_url, qdrant_url=f"path:{tmp_path / 'q'}")
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="x/one.jpg", Body=jpeg_bytes(seed=43))
    uris = [f"s3://{bucket}/x/one.jpg"]
    right_secret = s3_env.secret_key
    connection = redis.Redis.from_url(redis_url)
    queue = work_queue(connection)
    local = Dispatcher()
    try:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
        refused = open_context(settings, encoders=encoders)
        bind_context(refused)
        try:
            submitted = submit_ingest(refused, uris, dispatcher=local)
            assert (submitted.runner, submitted.queued) == ("rq", 1)
            SimpleWorker([queue], connection=connection).work(burst=True)
        finally:
            bind_context(None)
            refused.close()
        job = queue.fetch_job(submitted.job_id or "")
        assert job is not None
        assert job.get_status() == "scheduled"  # failed once, its retry waits in the schedule
        assert "access denied" in caplog.text  # the worker's log says why
        assert WRONG_SECRET not in caplog.text

        # Credentials fixed before the retry is due: the retry lands the object.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", right_secret)
        ctx = open_context(settings, encoders=encoders)
        try:
            assert run_worker(ctx, connection, burst=True).jobs == 1
            assert status(ctx, uris[0]) == AssetStatus.ACTIVE
            assert job.get_status(refresh=True) == "finished"
        finally:
            ctx.close()
    finally:
        local.close()
        connection.close()
