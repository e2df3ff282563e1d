"""S3 assets over HTTP (files and thumbnails streamed through the server) and the ingest
webhook, against a real S3 server on loopback, Redis and RQ."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import SimpleWorker

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.jobs.dispatcher import Dispatcher
from image_search_service.jobs.process import bind_context
from image_search_service.jobs.queue import work_queue
from image_search_service.services.library.ingest import submit_ingest
from tests.factories import jpeg_bytes, photo_bytes
from tests.integration.api_support import (
    ClientFactory,
    assert_error,
    index,
    services,
    wait_idle,
)
from tests.integration.s3_support import S3Server

KEY = {"X-API-Key": "k"}


def _event(bucket: str, key: str, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """What AWS and MinIO post for a notification (keys URL-encoded, spaces as +)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": name,
                "s3": {
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": key.replace(" ", "+"), "size": 1, "eTag": "x"},
                },
            }
        ]
    }


def _status(ctx: ServiceContext, uri: str) -> AssetStatus | None:
    with ctx.transaction() as session:
        asset = repo.asset_by_path(session, uri)
        return asset.status if asset is not None else None


@pytest.fixture
def client(make_client: ClientFactory, s3_env: S3Server) -> Iterator[TestClient]:
    with make_client(api_key="k") as test_client:
        yield test_client


def test_s3_file_and_thumbnail_are_streamed(client: TestClient, s3_env: S3Server) -> None:
    bucket = s3_env.new_bucket()
    heic = photo_bytes("HEIF", (90, 60), seed=8)
    s3_env.client().put_object(Bucket=bucket, Key="a/IMG_1.heic", Body=heic)
    index(client, [f"s3://{bucket}/a/"], ["clip"])
    client.headers["X-API-Key"] = "k"  # reads need the key too
    listing = client.get("/api/v1/assets").json()["items"]
    assert [a["path"] for a in listing] == [f"s3://{bucket}/a/IMG_1.heic"]
    asset_id = listing[0]["id"]
    file = client.get(f"/api/v1/assets/{asset_id}/file")
    assert file.status_code == 200, file.text
    assert file.content == heic
    assert file.headers["content-type"] == "image/heic"
    thumb = client.get(f"/api/v1/assets/{asset_id}/thumbnail?size=128")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    s3_env.client().delete_object(Bucket=bucket, Key="a/IMG_1.heic")
    assert_error(client.get(f"/api/v1/assets/{asset_id}/file"), 404, "AssetFileMissing")
    assert s3_env.secret_key not in client.get("/metrics").text


def test_the_admin_index_endpoint_takes_a_bucket_uri(client: TestClient, s3_env: S3Server) -> None:
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="2024/a.jpg", Body=jpeg_bytes(seed=31))
    key = {"X-API-Key": "k"}
    for path in (f"s3://{bucket}/2024/", f"s3://{bucket}-missing/"):
        queued = client.post("/api/v1/admin/index", json={"path": path}, headers=key)
        assert queued.status_code == 202, queued.text
        assert queued.json()["run"]["path"] == path  # not taken for a local folder
    wait_idle(client)
    status = client.get("/api/v1/admin/index", headers=key).json()
    runs = {r["path"]: r for r in status["finished"]}
    assert runs[f"s3://{bucket}/2024/"]["report"]["indexed"] == 1
    assert "bucket not found" in runs[f"s3://{bucket}-missing/"]["error"]


def test_ingest_webhook_in_process(client: TestClient, s3_env: S3Server) -> None:
    bucket = s3_env.new_bucket()
    s3 = s3_env.client()
    s3.put_object(Bucket=bucket, Key="in/summer day.jpg", Body=jpeg_bytes(seed=21))
    s3.put_object(Bucket=bucket, Key="in/burst.mpo", Body=photo_bytes("MPO", seed=22))
    ctx = services(client).ctx

    assert_error(client.post("/api/v1/ingest", json=_event(bucket, "in/summer day.jpg")), 401)
    created = client.post("/api/v1/ingest", json=_event(bucket, "in/summer day.jpg"), headers=KEY)
    assert created.status_code == 202, created.text
    assert created.json()["runner"] == "in-process"
    wrong = {"Authorization": "Bearer nope"}
    assert_error(client.post("/api/v1/ingest", json=[], headers=wrong), 401)
    bearer = {"Authorization": "Bearer k"}  # as MinIO's webhook target sends its token
    as_list = client.post("/api/v1/ingest", json=[f"s3://{bucket}/in/burst.mpo"], headers=bearer)
    assert as_list.json()["accepted"] == 1
    wait_idle(client)
    day = f"s3://{bucket}/in/summer day.jpg"
    assert _status(ctx, day) == AssetStatus.ACTIVE
    assert _status(ctx, f"s3://{bucket}/in/burst.mpo") == AssetStatus.ACTIVE
    assert ctx.store.count("image_assets") == 2

    # Redelivered: nothing changes.
    client.post("/api/v1/ingest", json=_event(bucket, "in/summer day.jpg"), headers=KEY)
    wait_idle(client)
    assert ctx.store.count("image_assets") == 2

    s3.delete_object(Bucket=bucket, Key="in/summer day.jpg")
    removed = _event(bucket, "in/summer day.jpg", "ObjectRemoved:Delete")
    assert client.post("/api/v1/ingest", json=removed, headers=KEY).status_code == 202
    wait_idle(client)
    assert _status(ctx, day) == AssetStatus.MISSING
    assert ctx.store.count("image_assets") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"hello": 1},
        ["/etc/passwd"],
        ["s3://bucket-only/"],
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]},
        "s3://x/y.jpg",
    ],
)
def test_ingest_rejects_bad_bodies(client: TestClient, body: Any) -> None:
    assert_error(client.post("/api/v1/ingest", json=body, headers=KEY), 422)


@pytest.mark.redis
def test_ingest_through_rq_is_idempotent(
    make_settings: Any,
    encoders: EncoderRegistry,
    s3_env: S3Server,
    redis_url: str,
    tmp_path: Path,
) -> None:
    settings: Settings = make_settings(redis_url=redis_url, qdrant_url=f"path:{tmp_path / 'q'}")
    bucket = s3_env.new_bucket()
    s3_env.client().put_object(Bucket=bucket, Key="x/one.jpg", Body=jpeg_bytes(seed=31))
    uris = [f"s3://{bucket}/x/one.jpg"]
    ctx = open_context(settings, encoders=encoders)
    local = Dispatcher()
    connection = redis.Redis.from_url(redis_url)
    try:
        first = submit_ingest(ctx, uris, dispatcher=local)
        again = submit_ingest(ctx, uris, dispatcher=local)
        assert (first.runner, first.queued) == ("rq", 1)
        assert again.queued == 0  # redelivered while the first is waiting
        assert first.job_id == again.job_id
        queue = work_queue(connection)
        assert len(queue.get_job_ids()) == 1
        bind_context(ctx)
        try:
            assert SimpleWorker([queue], connection=connection).work(burst=True)
            assert _status(ctx, uris[0]) == AssetStatus.ACTIVE
            # Delivered again after the job ran: queued, runs, changes nothing.
            assert submit_ingest(ctx, uris, dispatcher=local).queued == 1
            assert SimpleWorker([queue], connection=connection).work(burst=True)
        finally:
            bind_context(None)
        job = queue.fetch_job(first.job_id or "")
        assert job is not None
        result = job.return_value()
        assert result is not None
        assert (result["indexed"], result["skipped"]) == (0, 1)
        assert ctx.store.count("image_assets") == 1
    finally:
        connection.close()
        local.close()
        ctx.close()
