"""Bad input of every kind gets a 4xx with the error shape, and changes nothing stored
(asset rows, points in every collection, uploaded files)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from image_search_service.encoders.registry import EncoderRegistry
from tests.factories import broken_files, jpeg_bytes
from tests.integration.api_support import (
    api_client,
    app_ctx,
    assert_error,
    index,
    stored_state,
    tiny_model_settings,
    write_library,
)

MAX_UPLOAD = 100_000
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def battery(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[tuple[TestClient, dict[str, bytes], str]]:
    """One indexed app for the whole battery (every case checks it is left unchanged)."""
    root = tmp_path_factory.mktemp("battery")
    settings = tiny_model_settings(tiny_models, root / "data", max_upload_bytes=MAX_UPLOAD)
    library = write_library(root / "photos")
    broken = {name: path.read_bytes() for name, path in broken_files(root / "broken").items()}
    with api_client(settings, encoders=encoders) as client:
        index(client, [library[0].parent], ["clip"])
        ctx = app_ctx(client)
        ctx.store.ensure_collection(ctx.collection_spec("siglip"))
        asset_id = client.get("/api/v1/assets").json()["items"][0]["id"]
        yield client, broken, asset_id


def _noise_jpeg(min_bytes: int) -> bytes:
    """A real JPEG of random noise at least ``min_bytes`` long (noise does not compress)."""
    side = 200
    while True:
        image = Image.effect_noise((side, side), 100).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=95)
        if buf.tell() >= min_bytes:
            return buf.getvalue()
        side *= 2


def _file(data: bytes, name: str = "f.jpg", kind: str = "image/jpeg") -> dict[str, Any]:
    return {"files": {"file": (name, data, kind)}}


# (id, method, url, request kwargs, expected status, expected error name)
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # text search: query string
    ("q missing", "GET", "/api/v1/search", {}, 422, "InvalidRequest"),
    ("q empty", "GET", "/api/v1/search", {"params": {"q": ""}}, 422, "InvalidRequest"),
    ("q blank", "GET", "/api/v1/search", {"params": {"q": "   "}}, 422, "InvalidRequest"),
    ("q too long", "GET", "/api/v1/search", {"params": {"q": "x" * 1001}}, 422, "InvalidRequest"),
    ("limit 0", "GET", "/api/v1/search", {"params": {"q": "a", "limit": 0}}, 422, "InvalidRequest"),
    (
        "limit 101",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "limit": 101}},
        422,
        "InvalidRequest",
    ),
    (
        "limit text",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "limit": "ten"}},
        422,
        "InvalidRequest",
    ),
    (
        "offset -1",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "offset": -1}},
        422,
        "InvalidRequest",
    ),
    (
        "offset huge",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "offset": 10**30}},
        422,
        "InvalidRequest",
    ),
    (
        "min_score 2",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "min_score": 2}},
        422,
        "InvalidRequest",
    ),
    (
        "min_score nan",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "min_score": "nan"}},
        422,
        "InvalidRequest",
    ),
    (
        "date garbage",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "taken_after": "last week"}},
        422,
        "InvalidRequest",
    ),
    (
        "date invalid",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "taken_before": "2024-13-45"}},
        422,
        "InvalidRequest",
    ),
    (
        "dates reversed",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "taken_after": "2024-01-01", "taken_before": "2023-01-01"}},
        422,
        "InvalidRequest",
    ),
    (
        "format unknown",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "format": "BMP"}},
        422,
        "InvalidRequest",
    ),
    (
        "user id too long",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a"}, "headers": {"X-User-Id": "u" * 300}},
        422,
        "InvalidRequest",
    ),
    (
        "user_id param too long",
        "GET",
        "/api/v1/search",
        {"params": {"q": "a", "user_id": "u" * 300}},
        422,
        "InvalidRequest",
    ),
    # text search: JSON body
    (
        "json invalid",
        "POST",
        "/api/v1/search",
        {"content": b"{q:", "headers": {"content-type": "application/json"}},
        422,
        "InvalidRequest",
    ),
    ("json array", "POST", "/api/v1/search", {"json": ["q", "a"]}, 422, "InvalidRequest"),
    ("json empty", "POST", "/api/v1/search", {"json": {}}, 422, "InvalidRequest"),
    (
        "json unknown field",
        "POST",
        "/api/v1/search",
        {"json": {"q": "a", "limt": 5}},
        422,
        "InvalidRequest",
    ),
    ("json q number", "POST", "/api/v1/search", {"json": {"q": 5}}, 422, "InvalidRequest"),
    (
        "json limit 500",
        "POST",
        "/api/v1/search",
        {"json": {"q": "a", "limit": 500}},
        422,
        "InvalidRequest",
    ),
    (
        "json bad date",
        "POST",
        "/api/v1/search",
        {"json": {"q": "a", "taken_after": "yesterday"}},
        422,
        "InvalidRequest",
    ),
    (
        "json as text/plain",
        "POST",
        "/api/v1/search",
        {"content": b'{"q": "a"}', "headers": {"content-type": "text/plain"}},
        415,
        "UnsupportedMediaType",
    ),
    (
        "json no content type",
        "POST",
        "/api/v1/search",
        {"content": b'{"q": "a"}'},
        415,
        "UnsupportedMediaType",
    ),
    ("json as form", "POST", "/api/v1/search", {"data": {"q": "a"}}, 415, "UnsupportedMediaType"),
    (
        "json body too big",
        "POST",
        "/api/v1/search",
        {"json": {"q": "a", "pad": "x" * (2 << 20)}},
        413,
        "RequestTooLarge",
    ),
    # similar
    ("similar bad uuid", "GET", "/api/v1/search/similar/not-a-uuid", {}, 422, "InvalidRequest"),
    ("similar unknown", "GET", f"/api/v1/search/similar/{UNKNOWN_ID}", {}, 404, "AssetNotFound"),
    (
        "similar limit",
        "GET",
        f"/api/v1/search/similar/{UNKNOWN_ID}",
        {"params": {"limit": 1000}},
        422,
        "InvalidRequest",
    ),
    # assets
    ("asset bad uuid", "GET", "/api/v1/assets/12345", {}, 422, "InvalidRequest"),
    ("asset unknown", "GET", f"/api/v1/assets/{UNKNOWN_ID}", {}, 404, "AssetNotFound"),
    ("file unknown", "GET", f"/api/v1/assets/{UNKNOWN_ID}/file", {}, 404, "AssetNotFound"),
    (
        "thumbnail unknown",
        "GET",
        f"/api/v1/assets/{UNKNOWN_ID}/thumbnail",
        {},
        404,
        "AssetNotFound",
    ),
    ("list limit 0", "GET", "/api/v1/assets", {"params": {"limit": 0}}, 422, "InvalidRequest"),
    ("list limit 501", "GET", "/api/v1/assets", {"params": {"limit": 501}}, 422, "InvalidRequest"),
    (
        "list offset huge",
        "GET",
        "/api/v1/assets",
        {"params": {"offset": 10**30}},
        422,
        "InvalidRequest",
    ),
    ("delete bad uuid", "DELETE", "/api/v1/assets/abc", {}, 422, "InvalidRequest"),
    ("delete unknown", "DELETE", f"/api/v1/assets/{UNKNOWN_ID}", {}, 404, "AssetNotFound"),
    (
        "admin user too long",
        "GET",
        "/api/v1/admin/rollout",
        {"params": {"user_id": "u" * 300}},
        422,
        "InvalidRequest",
    ),
    # routing
    ("unknown route", "GET", "/api/v2/search", {}, 404, "NotFound"),
    ("wrong method", "PUT", "/api/v1/search", {}, 405, "MethodNotAllowed"),
]

# Upload endpoints take the same bad files.
for _url in ("/api/v1/search/image", "/api/v1/assets"):
    _tag = "image search" if "search" in _url else "upload"
    CASES += [
        (
            f"{_tag}: no file",
            "POST",
            _url,
            {"files": {"other": ("f.jpg", b"x", "image/jpeg")}},
            422,
            "InvalidRequest",
        ),
        (
            f"{_tag}: file as text field",
            "POST",
            _url,
            {"data": {"file": "abc"}, "files": {"x": ("a", b"", "text/plain")}},
            422,
            "InvalidRequest",
        ),
        (
            f"{_tag}: json body",
            "POST",
            _url,
            {"json": {"file": "abc"}},
            415,
            "UnsupportedMediaType",
        ),
        (
            f"{_tag}: no content type",
            "POST",
            _url,
            {"content": jpeg_bytes()},
            415,
            "UnsupportedMediaType",
        ),
        (
            f"{_tag}: text file",
            "POST",
            _url,
            _file(b"just some notes\n" * 20, "notes.txt", "text/plain"),
            415,
            "UnsupportedImage",
        ),
        (
            f"{_tag}: gif without pixels",
            "POST",
            _url,
            _file(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "a.gif", "image/gif"),
            415,
            "UnsupportedImage",
        ),
        (
            f"{_tag}: svg",
            "POST",
            _url,
            _file(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.svg", "image/svg+xml"),
            415,
            "UnsupportedImage",
        ),
    ]
    if _tag == "image search":
        CASES += [
            (
                f"{_tag}: limit 0",
                "POST",
                _url,
                {**_file(jpeg_bytes()), "data": {"limit": "0"}},
                422,
                "InvalidRequest",
            ),
            (
                f"{_tag}: bad date",
                "POST",
                _url,
                {**_file(jpeg_bytes()), "data": {"taken_after": "soon"}},
                422,
                "InvalidRequest",
            ),
        ]


def _request(client: TestClient, method: str, url: str, kwargs: dict[str, Any]) -> Any:
    return client.request(method, url, **kwargs)


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "error"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_request_is_4xx_and_changes_nothing(
    battery: tuple[TestClient, dict[str, bytes], str],
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
    error: str,
) -> None:
    client = battery[0]
    before = stored_state(app_ctx(client))
    assert_error(_request(client, method, url, kwargs), status, error)
    assert stored_state(app_ctx(client)) == before


@pytest.mark.parametrize("url", ["/api/v1/search/image", "/api/v1/assets"])
@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("zero_byte", 415, "UnsupportedImage"),
        ("not_image", 415, "UnsupportedImage"),
        ("truncated", 415, "UnsupportedImage"),
        ("corrupt", 415, "UnsupportedImage"),
        ("bomb", 413, "ImageTooLarge"),
    ],
)
def test_broken_uploads(
    battery: tuple[TestClient, dict[str, bytes], str], url: str, name: str, status: int, error: str
) -> None:
    client, broken, _ = battery
    before = stored_state(app_ctx(client))
    assert_error(client.post(url, **_file(broken[name], f"{name}.jpg")), status, error)
    assert stored_state(app_ctx(client)) == before


@pytest.mark.parametrize("url", ["/api/v1/search/image", "/api/v1/assets"])
def test_oversized_uploads(battery: tuple[TestClient, dict[str, bytes], str], url: str) -> None:
    client = battery[0]
    before = stored_state(app_ctx(client))
    # A real image over MAX_UPLOAD_BYTES, within the body cap: refused by the route.
    over = _noise_jpeg(MAX_UPLOAD + 1)
    assert_error(client.post(url, **_file(over)), 413, "ImageTooLarge")
    # A body over the cap, declared by Content-Length: refused before it is read.
    huge = b"\xff\xd8" + bytes(MAX_UPLOAD + (2 << 20))
    assert_error(client.post(url, **_file(huge)), 413, "RequestTooLarge")

    # The same, streamed without a length (chunked): refused once the cap is passed.
    def chunks() -> Iterator[bytes]:
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(40):
            yield bytes(100_000)
        yield b"\r\n--b0undary--\r\n"

    streamed = client.post(
        url, content=chunks(), headers={"content-type": "multipart/form-data; boundary=b0undary"}
    )
    assert_error(streamed, 413, "RequestTooLarge")
    assert stored_state(app_ctx(client)) == before


ODD_STRINGS = [
    "\x00",
    "a\x00b",
    "\u202e\u200b",
    "🙂" * 300,
    "%ED%A0%80",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\r\nX-Injected: 1",
]


@pytest.mark.parametrize("value", ODD_STRINGS)
def test_odd_strings_never_cause_a_server_error(
    battery: tuple[TestClient, dict[str, bytes], str], value: str
) -> None:
    client = battery[0]
    before = stored_state(app_ctx(client))
    responses = [
        client.get("/api/v1/search", params={"q": value, "user_id": value}),
        client.post("/api/v1/search", json={"q": value, "user_id": value, "format": value}),
        client.get("/api/v1/search", params={"q": "a", "taken_after": value}),
        client.get(f"/api/v1/assets/{quote(value, safe='')}"),
        client.get(f"/api/v1/search/similar/{quote(value, safe='')}"),
        client.get("/api/v1/admin/rollout", params={"user_id": value}),
    ]
    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text)
        if response.status_code >= 400:
            assert_error(response, response.status_code)
    assert stored_state(app_ctx(client)) == before


def test_thumbnail_size_must_be_a_listed_one(
    battery: tuple[TestClient, dict[str, bytes], str],
) -> None:
    client, _, asset_id = battery
    for size in ("100", "abc", "-1"):
        response = client.get(f"/api/v1/assets/{asset_id}/thumbnail", params={"size": size})
        assert_error(response, 422, "InvalidRequest")
