"""A name in the query text and an explicit ``people=`` filter together: both hold (the
text's names are added to the explicit ones, never put in their place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from image_search_service.services.library.index import index_paths
from tests.integration.api_support import app_ctx
from tests.xmp_factories import write_jpeg_with_xmp, xmp_packet


def names(body: dict[str, Any]) -> set[str]:
    return {Path(r["path"]).name for r in body["results"]}


def test_explicit_people_are_kept_when_the_text_names_someone(
    client: TestClient, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    write_jpeg_with_xmp(root / "both.jpg", xmp_packet(people=["Pat", "Jack"]), seed=1)
    write_jpeg_with_xmp(root / "pat.jpg", xmp_packet(people=["Pat"]), seed=2)
    write_jpeg_with_xmp(root / "jack.jpg", xmp_packet(people=["Jack"]), seed=3)
    write_jpeg_with_xmp(root / "nobody.jpg", None, seed=4)
    report = index_paths(app_ctx(client), [root], model_keys=["clip"])
    assert (report.failed, report.indexed) == (0, 4), report.failures

    params: dict[str, str | int] = {"q": "Pat on a beach", "people": "Jack", "limit": 10}
    body = client.get("/api/v1/search", params=params).json()
    assert body["understood"]["recognised_people"] == ["Pat"]
    assert sorted(body["understood"]["people"]) == ["jack", "pat"]
    assert names(body) == {"both.jpg"}
    posted = client.post("/api/v1/search", json={**params, "people": ["Jack"]}).json()
    assert names(posted) == {"both.jpg"}
    # Each alone finds its own photos: the merged filter is what narrows to one.
    assert names(client.get("/api/v1/search", params={"q": "Pat on a beach"}).json()) == {
        "both.jpg",
        "pat.jpg",
    }
