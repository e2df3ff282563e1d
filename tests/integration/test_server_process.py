"""End to end: the real `image-search serve` process (uvicorn) on a free port, configured
by environment as an operator would, spoken to over real HTTP."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import numpy as np
import pytest

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.factories import jpeg_bytes
from tests.integration.api_support import tiny_model_settings
from tests.integration.live_server import serve_process, stop_process, tiny_model_env
from tests.xmp_factories import jpeg_with_xmp, xmp_packet

pytestmark = pytest.mark.slow

MAX_UPLOAD = 200_000


@dataclass
class Server:
    client: httpx.Client
    process: subprocess.Popen[bytes]
    log: Path
    library: list[Path]
    settings: Settings

    def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; returns the exit status."""
        stop_process(self.process)
        return self.process.returncode


@pytest.fixture
def server(
    tmp_path: Path,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
    photo_library: list[Path],
) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    settings = tiny_model_settings(tiny_models, data_dir)
    ctx = open_context(settings, encoders=encoders)
    try:
        index_paths(ctx, [tmp_path / "photos"], model_keys=["clip"])
    finally:
        ctx.close()  # the server needs the embedded store to itself

    env = tiny_model_env(tiny_models, data_dir)
    env.update(
        {
            "SIGLIP_ROLLOUT_PERCENTAGE": "50",
            "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "PRELOAD_MODELS": "true",
        }
    )
    with serve_process(tmp_path, env) as served:
        yield Server(served.client, served.process, served.log, photo_library, settings)


def test_real_server_over_http(server: Server) -> None:
    client = server.client
    assert "binds to 127.0.0.1" in server.log.read_text()
    assert client.get("/ready").json()["status"] == "ready"

    by_get = client.get("/api/v1/search", params={"q": "a red photo", "limit": 3})
    assert by_get.status_code == 200, by_get.text
    body = by_get.json()
    assert (body["model"], body["limit"], len(body["results"])) == ("clip", 3, 3)
    by_post = client.post("/api/v1/search", json={"q": "a red photo", "limit": 3})
    assert by_post.json()["results"] == body["results"]

    # "alice" is in the 50% rollout, but SigLIP has no collection: CLIP answers, and says so.
    routed = client.get("/api/v1/search", params={"q": "x"}, headers={"X-User-Id": "alice"})
    assert routed.json()["model"] == "clip"
    assert "does not exist yet" in routed.json()["fallback_reason"]

    data = jpeg_bytes((70, 50), colour=(5, 90, 200), seed=123)
    upload = client.post("/api/v1/assets", files={"file": ("mine.jpg", data, "image/jpeg")})
    assert upload.status_code == 201, upload.text
    asset_id = upload.json()["id"]
    found = client.post("/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")})
    assert found.json()["results"][0]["asset_id"] == asset_id
    similar = client.get(f"/api/v1/search/similar/{asset_id}").json()
    assert len(similar["results"]) == len(server.library)

    def chunks() -> Iterator[bytes]:
        yield b'--bb\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for _ in range(30):
            yield bytes(100_000)
        yield b"\r\n--bb--\r\n"

    # Streamed without Content-Length: cut off once past the cap, before it is all read.
    streamed = client.post(
        "/api/v1/assets",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=bb"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "RequestTooLarge"

    # Embeddings for other services: a batch with one corrupt file fails that file alone.
    batch = client.post(
        "/api/v1/embed/batch",
        files=[
            ("files", ("a.jpg", data, "image/jpeg")),
            ("files", ("bad.jpg", data[: len(data) // 3], "image/jpeg")),
            ("files", ("c.jpg", jpeg_bytes(seed=5), "image/jpeg")),
        ],
    )
    assert batch.status_code == 200, batch.text
    assert [v is None for v in batch.json()["embeddings"]] == [False, True, False]
    assert [e["index"] for e in batch.json()["errors"]] == [1]
    one = client.post("/api/v1/embed/image", files={"file": ("a.jpg", data, "image/jpeg")})
    # The same image alone and in a batch: INT8 dynamic quantization scales activations per
    # batch, so the vectors agree closely rather than bit for bit (docs/api.md).
    alone, batched = np.asarray(one.json()["embedding"]), np.asarray(batch.json()["embeddings"][0])
    assert float(alone @ batched) > 0.999
    again = client.post("/api/v1/embed/image", files={"file": ("a.jpg", data, "image/jpeg")})
    assert again.json()["embedding"] == one.json()["embedding"]  # identical input, identical
    texts = client.post("/api/v1/embed/text", json={"texts": ["a red photo"]})
    assert len(texts.json()["embeddings"][0]) == texts.json()["dim"]

    metrics = client.get("/metrics").text
    assert 'image_search_embed_requests_total{kind="batch",model="clip"} 1.0' in metrics
    assert 'route="/api/v1/search",status="200"' in metrics
    assert 'image_search_encoder_duration_seconds_count{kind="text",model="clip"}' in metrics
    assert client.get("/docs").status_code == 200


def test_stops_cleanly_and_keeps_the_upload(server: Server, encoders: EncoderRegistry) -> None:
    upload = server.client.post(
        "/api/v1/assets", files={"file": ("k.jpg", jpeg_bytes(seed=9), "image/jpeg")}
    )
    assert upload.status_code == 201
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()
    # The store is free again (the lifespan closed it) and holds the upload.
    ctx = open_context(server.settings, encoders=encoders)
    try:
        asset_id = UUID(upload.json()["id"])
        with ctx.session_factory() as session:
            assert repo.get_asset(session, asset_id) is not None
        assert ctx.store.retrieve_vectors("image_assets", [asset_id])
    finally:
        ctx.close()


@pytest.mark.parametrize(
    ("env", "args", "host", "says"),
    [
        ({}, [], "127.0.0.1", "binds to 127.0.0.1 only"),
        (
            {},
            ["--host", "0.0.0.0", "--allow-unauthenticated"],
            "0.0.0.0",
            "WARNING: --allow-unauthenticated",
        ),
        ({"READ_API_KEY": "r"}, [], "0.0.0.0", "every route but /health needs one"),
        ({"API_KEY": "k"}, [], "0.0.0.0", "serving on http://0.0.0.0:8123"),
        ({"API_KEY": "k"}, ["--host", "10.0.0.5"], "10.0.0.5", "serving on http://10.0.0.5"),
    ],
)
def test_serve_chooses_the_bind_address_by_api_key(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    env: dict[str, str],
    args: list[str],
    host: str,
    says: str,
) -> None:
    # Only the bind decision is under test here: uvicorn itself is exercised above.
    import uvicorn
    from click.testing import CliRunner

    from image_search_service.cli import main

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = CliRunner().invoke(
        main,
        ["serve", "--port", "8123", *args],
        env={"DATA_DIR": str(tmp_path / "data"), "API_KEY": "", "READ_API_KEY": "", **env},
    )
    assert result.exit_code == 0, result.output
    assert [(c["host"], c["port"]) for c in calls] == [(host, 8123)]
    # Client limits: a header-size cap (h11 enforces it), bounded connections.
    assert calls[0]["http"] == "h11"
    assert calls[0]["h11_max_incomplete_event_size"] == 16 * 1024
    assert calls[0]["limit_concurrency"] == 100
    assert says in result.output


@pytest.mark.parametrize("args", [[], ["--host", "0.0.0.0"]])
def test_an_api_key_of_only_spaces_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str]
) -> None:
    import uvicorn
    from click.testing import CliRunner

    from image_search_service.cli import main

    calls: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = CliRunner().invoke(
        main, ["serve", *args], env={"DATA_DIR": str(tmp_path / "data"), "API_KEY": "   "}
    )
    assert result.exit_code != 0
    assert calls == []
    assert "API_KEY" in result.output
    assert "whitespace" in result.output
    assert "Traceback" not in result.output


def test_real_server_refuses_hostile_requests(server: Server) -> None:
    client = server.client
    # Headers past the cap: refused by uvicorn before the app sees them.
    huge = client.get("/health", headers={"X-Padding": "a" * 300_000})
    assert huge.status_code in (400, 431)
    # Cross-site writes and a rebound Host, over real HTTP.
    files = {"file": ("x.jpg", jpeg_bytes(seed=77), "image/jpeg")}
    evil = client.post("/api/v1/assets", files=files, headers={"Origin": "http://evil.example"})
    assert (evil.status_code, evil.json()["error"]) == (403, "CrossSiteRequest")
    rebound = client.get("/api/v1/assets", headers={"Host": "evil.example"})
    assert (rebound.status_code, rebound.json()["error"]) == (400, "InvalidHost")
    # Two X-API-Key headers: never a 5xx; the server still answers afterwards.
    twice = client.get("/health", headers=[("X-API-Key", "a"), ("X-API-Key", "b")])
    assert twice.status_code == 200
    assert client.get("/health").status_code == 200


def test_people_and_captions_over_real_http(server: Server) -> None:
    """An upload carrying XMP people and a caption, found by the example query over HTTP."""
    client = server.client
    xmp = xmp_packet(people=["Pat", "Jack"], caption="Christmas morning at the cabin")
    both = client.post(
        "/api/v1/assets", files={"file": ("pj.jpg", jpeg_with_xmp(xmp, seed=7), "image/jpeg")}
    )
    assert both.status_code == 201, both.text
    assert {p["name"] for p in both.json()["people"]} == {"Pat", "Jack"}
    only_pat = jpeg_with_xmp(xmp_packet(people=["Pat"]), seed=8)
    client.post("/api/v1/assets", files={"file": ("p.jpg", only_pat, "image/jpeg")})
    body = client.get(
        "/api/v1/search",
        params={"q": "Find all images that include Pat, Jack, and an automobile"},
    ).json()
    assert [r["asset_id"] for r in body["results"]] == [both.json()["id"]]
    assert body["understood"]["concept"] == "an automobile"
    caption = client.get("/api/v1/search", params={"q": "Christmas", "limit": 1}).json()
    assert caption["results"][0]["asset_id"] == both.json()["id"]
    assert caption["results"][0]["matched_by"] in {"text", "both"}
    people = client.get("/api/v1/people").json()["items"]
    assert {(p["name"], p["count"]) for p in people} == {("Pat", 2), ("Jack", 1)}
