"""Reading S3 event notifications and URI lists; s3:// URIs, also from Path objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from image_search_service.core.errors import InvalidRequest
from image_search_service.images.s3 import as_s3_uri, parse_object_uri, parse_uri
from image_search_service.services.library.ingest import MAX_URIS, parse_ingest_body


def _record(name: str, bucket: str, key: str) -> dict[str, Any]:
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_notification_records_become_distinct_uris_with_decoded_keys() -> None:
    body = {
        "Records": [
            _record("ObjectCreated:Put", "b", "2024/IMG+0001.HEIC"),
            _record("ObjectRemoved:Delete", "b", "2024/caf%C3%A9.jpg"),
            _record("ObjectCreated:CompleteMultipartUpload", "b", "2024/IMG+0001.HEIC"),
            _record("s3:Replication:OperationFailedReplication", "b", "x.jpg"),
        ]
    }
    assert parse_ingest_body(body) == ["s3://b/2024/IMG 0001.HEIC", "s3://b/2024/café.jpg"]


def test_uri_lists_and_the_test_event() -> None:
    assert parse_ingest_body(["s3://b/a.jpg", "s3://b/a.jpg"]) == ["s3://b/a.jpg"]
    assert parse_ingest_body({"uris": ["s3://b/k/c.png"]}) == ["s3://b/k/c.png"]
    assert parse_ingest_body({"Event": "s3:TestEvent", "Bucket": "b"}) == []


@pytest.mark.parametrize(
    "body",
    [
        None,
        "s3://b/a.jpg",
        {"uris": "s3://b/a.jpg"},
        ["http://b/a.jpg"],
        ["s3://b/"],
        ["s3:///key.jpg"],
        {"Records": ["x"]},
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}]},
        [f"s3://b/{i}.jpg" for i in range(MAX_URIS + 1)],
    ],
)
def test_bad_bodies_are_invalid_requests(body: Any) -> None:
    with pytest.raises(InvalidRequest):
        parse_ingest_body(body)


def test_s3_uris() -> None:
    assert as_s3_uri("s3://bucket/prefix/") == "s3://bucket/prefix/"
    # LIBRARY_PATHS read as paths: Path() collapses the double slash.
    assert as_s3_uri(Path("s3://bucket/prefix")) == "s3://bucket/prefix"
    assert as_s3_uri("/photos") is None
    assert as_s3_uri(Path("s3:x")) is None
    location = parse_uri("s3://bucket")
    assert (location.bucket, location.prefix, location.uri) == ("bucket", "", "s3://bucket/")
    assert parse_object_uri("s3://b/a/b.jpg") == ("b", "a/b.jpg")
    with pytest.raises(ValueError, match="no key"):
        parse_object_uri("s3://b/a/")
