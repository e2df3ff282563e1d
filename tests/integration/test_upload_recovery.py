"""An upload cut short by a crash is repaired when the server starts again: nothing is
left half-made (an asset without a format or a vector, a file served as 422)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.images.scan import bytes_hash, content_hash
from image_search_service.services.library.assets import STALE_UPLOAD_S
from tests.factories import jpeg_bytes
from tests.integration.api_support import ClientFactory, services, wait_idle


def _crashed_uploads(settings: Settings, encoders: EncoderRegistry) -> dict[str, Path]:
    """The DATA_DIR a server killed during uploads leaves behind."""
    uploads = settings.uploads_dir
    (uploads / "ab").mkdir(parents=True)
    half_indexed = uploads / "ab" / f"{bytes_hash(jpeg_bytes(seed=1))}.jpg"
    half_indexed.write_bytes(jpeg_bytes(seed=1))
    no_asset = uploads / "ab" / f"{bytes_hash(jpeg_bytes(seed=2))}.jpg"
    no_asset.write_bytes(jpeg_bytes(seed=2))
    half_written = uploads / "ab" / ".tmp-k2j3h4.jpg"
    half_written.write_bytes(jpeg_bytes(seed=3)[:100])
    stale = time.time() - STALE_UPLOAD_S - 1
    os.utime(half_written, (stale, stale))
    # Being written right now by another server process on this DATA_DIR: kept.
    in_progress = uploads / "ab" / ".tmp-w9x8y7.jpg"
    in_progress.write_bytes(jpeg_bytes(seed=4)[:100])
    file_gone = uploads / "ab" / "gone.jpg"
    ctx = open_context(settings, encoders=encoders)
    try:
        ctx.ensure_collection("clip")
        with ctx.transaction() as session:
            # Killed after the asset row was committed, before its vector and format.
            for path in (half_indexed, file_gone):
                repo.add_asset(
                    session,
                    path=str(path.resolve()),
                    content_hash=content_hash(path) if path.exists() else "gone",
                    size_bytes=path.stat().st_size if path.exists() else 1,
                    mtime_ns=path.stat().st_mtime_ns if path.exists() else 1,
                )
    finally:
        ctx.close()
    return {
        "half_indexed": half_indexed,
        "no_asset": no_asset,
        "half_written": half_written,
        "in_progress": in_progress,
        "file_gone": file_gone,
    }


def test_a_restart_repairs_what_a_crash_left_of_uploads(
    make_client: ClientFactory,
    make_settings: Callable[..., Settings],
    encoders: EncoderRegistry,
) -> None:
    settings = make_settings()
    left = _crashed_uploads(settings, encoders)
    with make_client(settings) as client:
        wait_idle(client)
        ctx = services(client).ctx
        with ctx.transaction() as session:
            repaired = repo.asset_by_path(session, str(left["half_indexed"].resolve()))
            indexed = repo.asset_by_path(session, str(left["no_asset"].resolve()))
            forgotten = repo.asset_by_path(session, str(left["file_gone"].resolve()))
        assert repaired is not None
        assert indexed is not None
        assert forgotten is None
        assert not left["half_written"].exists()
        assert left["in_progress"].exists()
        for asset in (repaired, indexed):
            assert asset.format == "JPEG"
            assert client.get(f"/api/v1/assets/{asset.id}/file").status_code == 200
        status = client.get("/api/v1/admin/status").json()
        assert (status["assets"], status["indexing"]) == (2, 0)
        assert status["models"]["clip"]["coverage"] == 1.0
        assert status["models"]["clip"]["pending"] == 0
        found = client.get("/api/v1/search", params={"q": "red", "min_score": -1}).json()
        assert {r["asset_id"] for r in found["results"]} == {str(repaired.id), str(indexed.id)}
