"""Indexing S3 buckets against a real S3 server on loopback (moto's server mode)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from image_search_service.cli import main
from image_search_service.context import ServiceContext, open_context
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus
from image_search_service.images.s3 import SourceAccessDenied, SourceNotFound
from image_search_service.services.library.index import index_paths
from image_search_service.services.search.service import SearchOptions, SearchService
from tests.factories import jpeg_bytes, photo_bytes
from tests.integration.s3_support import S3Server


def _fill(server: S3Server, bucket: str) -> dict[str, bytes]:
    objects = {
        "2024/beach.jpg": jpeg_bytes((80, 60), (20, 120, 220), seed=1),
        "2024/IMG_0001.HEIC": photo_bytes("HEIF", (64, 48), (220, 40, 20), seed=2),
        "2024/DSCF0001.MPO": photo_bytes("MPO", (64, 48), (40, 200, 60), seed=3),
        "2024/park.jpg": jpeg_bytes((70, 50), (240, 220, 30), seed=4),
        "2024/notes.txt": b"not a photo",
        "2024/fake.jpg": b"this is not a jpeg at all",
        "other/outside.jpg": jpeg_bytes(seed=5),
    }
    client = server.client()
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    return objects


def _by_path(ctx: ServiceContext) -> dict[str, Any]:
    with ctx.transaction() as session:
        rows, _ = repo.list_assets(session, limit=500, offset=0)
        return {a.path: (a.id, a.status, a.format) for a in rows}


def test_index_a_bucket_incrementally(ctx: ServiceContext, s3_env: S3Server) -> None:
    bucket = s3_env.new_bucket()
    _fill(s3_env, bucket)
    uri = f"s3://{bucket}/2024/"
    report = index_paths(ctx, [uri], model_keys=["clip"])
    assert report.indexed == 4
    assert report.failed == 1
    assert report.failures[0]["path"] == f"s3://{bucket}/2024/fake.jpg"
    assert report.unsupported_files == [f"s3://{bucket}/2024/notes.txt"]
    assets = _by_path(ctx)
    heic = assets[f"s3://{bucket}/2024/IMG_0001.HEIC"]
    assert heic[1] == AssetStatus.ACTIVE
    assert heic[2] == "HEIF"
    assert assets[f"s3://{bucket}/2024/DSCF0001.MPO"][2] == "MPO"
    assert f"s3://{bucket}/other/outside.jpg" not in assets
    assert ctx.store.count("image_assets") == 4

    # A HEIC photo of the bucket is found by example.
    found = SearchService(ctx).search_image(
        photo_bytes("HEIF", (64, 48), (220, 40, 20), seed=2),
        model="clip",
        options=SearchOptions(limit=1),
    )
    assert found.results[0].path == f"s3://{bucket}/2024/IMG_0001.HEIC"

    # Nothing changed: no download, nothing embedded.
    again = index_paths(ctx, [uri], model_keys=["clip"])
    assert (again.indexed, again.failed, again.skipped) == (0, 0, 5)

    # A deleted object is noticed; a replaced one is re-embedded under the same id.
    client = s3_env.client()
    client.delete_object(Bucket=bucket, Key="2024/park.jpg")
    client.put_object(Bucket=bucket, Key="2024/beach.jpg", Body=jpeg_bytes(seed=77))
    third = index_paths(ctx, [uri], model_keys=["clip"])
    assert (third.missing, third.indexed) == (1, 1)
    after = _by_path(ctx)
    assert f"s3://{bucket}/2024/park.jpg" not in after
    with ctx.transaction() as session:
        gone = repo.asset_by_path(session, f"s3://{bucket}/2024/park.jpg")
        assert gone is not None
        assert gone.status == AssetStatus.MISSING
    assert after[f"s3://{bucket}/2024/beach.jpg"][0] == assets[f"s3://{bucket}/2024/beach.jpg"][0]
    assert ctx.store.count("image_assets") == 3


def test_an_object_removed_after_listing_fails_alone(ctx: ServiceContext, s3_env: S3Server) -> None:
    bucket = s3_env.new_bucket()
    _fill(s3_env, bucket)

    def remove_one(total: int) -> Callable[[int], None]:
        # Called once the listing is done, before the first download.
        s3_env.client().delete_object(Bucket=bucket, Key="2024/park.jpg")
        return lambda n: None

    report = index_paths(ctx, [f"s3://{bucket}/2024/"], model_keys=["clip"], progress=remove_one)
    assert report.indexed == 3
    failures = {f["path"]: f["error"] for f in report.failures}
    assert "not found" in failures[f"s3://{bucket}/2024/park.jpg"]
    assert len(failures) == 2  # and fake.jpg


def test_missing_bucket_is_one_clear_error(ctx: ServiceContext, s3_env: S3Server) -> None:
    with pytest.raises(SourceNotFound, match="bucket not found: s3://no-such-bucket-x/"):
        index_paths(ctx, ["s3://no-such-bucket-x/"], model_keys=["clip"])


def test_wrong_credentials_never_print_the_secret(
    make_settings: Any, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = s3_env.new_bucket()
    wrong_secret = "wJalrXUtnFEMI-wrong-secret-value"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    settings = make_settings()
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLIP_MODEL_NAME", settings.clip_model_name)
    monkeypatch.setenv("CLIP_PRETRAINED", "")
    result = CliRunner().invoke(main, ["index", f"s3://{bucket}/"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "access denied" in lines[0]
    assert "SignatureDoesNotMatch" in lines[0]
    assert wrong_secret not in result.output
    assert s3_env.secret_key not in result.output
    ctx = open_context(settings)
    try:
        with pytest.raises(SourceAccessDenied) as denied:
            index_paths(ctx, [f"s3://{bucket}/"], model_keys=["clip"])
    finally:
        ctx.close()
    assert wrong_secret not in str(denied.value)


def test_cli_indexes_a_bucket_and_reports_a_missing_one(
    make_settings: Any, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_env.new_bucket()
    _fill(s3_env, bucket)
    settings = make_settings()
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLIP_MODEL_NAME", settings.clip_model_name)
    monkeypatch.setenv("CLIP_PRETRAINED", "")
    ok = CliRunner().invoke(main, ["index", f"s3://{bucket}/2024/", "--json"])
    assert ok.exit_code == 0, ok.output
    missing = CliRunner().invoke(main, ["index", "s3://no-such-bucket-y/photos/"])
    assert missing.exit_code != 0
    lines = [line for line in missing.output.splitlines() if line.strip()]
    assert lines == ["error: bucket not found: s3://no-such-bucket-y/photos/"], missing.output
