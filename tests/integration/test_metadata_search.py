"""People, tags and captions end to end: real files with real XMP (embedded and in
sidecars) indexed through the real pipeline, searched through the real app, on the
embedded Qdrant Edge store and on qdrant-client's Qdrant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from image_search_service.db.models import Asset
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import ClientFactory, app_ctx, assert_error
from tests.xmp_factories import (
    png_bytes_with_raw_xmp,
    write_jpeg_with_xmp,
    xmp_packet,
)

RED, BLUE = (220, 20, 20), (30, 40, 220)
EXAMPLE = "Find all images that include Pat, Jack, and an automobile"


def write_people_library(root: Path) -> dict[str, Path]:
    """Photos where some have Pat and Jack, some only one of them, one via a sidecar,
    one with a caption only, and every kind of bad metadata."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "both_embedded": write_jpeg_with_xmp(
            root / "both.jpg",
            xmp_packet(people=["Pat", ("Jack", (0.3, 0.5, 0.2, 0.3))], tags=["Holiday"]),
            colour=RED,
            seed=1,
        ),
        "both_sidecar": write_jpeg_with_xmp(root / "both_sidecar.jpg", None, colour=BLUE, seed=2),
        "pat_only": write_jpeg_with_xmp(
            root / "pat.jpg", xmp_packet(people=["PAT"]), colour=RED, seed=3
        ),
        "jack_only": write_jpeg_with_xmp(
            root / "jack.jpg", xmp_packet(mp_people=["jack"], tags=["holiday"]), colour=BLUE, seed=4
        ),
        "caption_only": write_jpeg_with_xmp(
            root / "cabin.jpg",
            xmp_packet(caption="Christmas morning at the cabin", title="Cabin"),
            colour=(20, 200, 40),
            seed=5,
        ),
        "sidecar_not_xml": write_jpeg_with_xmp(
            root / "garbage_sidecar.jpg", None, colour=(240, 220, 30), seed=6
        ),
    }
    (root / "both_sidecar.jpg.xmp").write_bytes(xmp_packet(people=["jack", "pat"]))
    (root / "garbage_sidecar.jpg.xmp").write_bytes(b"\x00\xff not xml \xfe")
    bad = {
        "malformed": b"<x:xmpmeta><rdf:RDF><oops>",
        "non_utf8": xmp_packet(caption="caf\u00e9 Pat").replace("é".encode(), b"\xe9"),
        "regions": xmp_packet(people=[f"Person {i}" for i in range(1500)]),
        "oversized": xmp_packet(caption="x" * 600_000),
    }
    for name, xmp in bad.items():
        path = root / f"{name}.png"
        path.write_bytes(png_bytes_with_raw_xmp(xmp))
        files[name] = path
    return files


@pytest.fixture(
    params=["edge", "qdrant-client", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def client(request: pytest.FixtureRequest, make_client: ClientFactory) -> Iterator[TestClient]:
    """Qdrant Edge + SQLite (the embedded default), qdrant-client's Qdrant + SQLite, and
    Qdrant Edge + PostgreSQL (its full-text search)."""
    overrides: dict[str, Any] = {}
    if request.param == "qdrant-client":
        overrides["qdrant_url"] = ":memory:"
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    with make_client(**overrides) as test_client:
        yield test_client


@pytest.fixture
def library(client: TestClient, tmp_path: Path) -> dict[str, Path]:
    files = write_people_library(tmp_path / "photos")
    report = index_paths(app_ctx(client), [tmp_path / "photos"], model_keys=["clip"])
    assert (report.failed, report.indexed) == (0, len(files)), report.failures
    return files


def _paths(body: dict[str, Any]) -> set[str]:
    return {Path(r["path"]).name for r in body["results"]}


def test_bad_metadata_never_fails_the_photo(client: TestClient, library: dict[str, Path]) -> None:
    with app_ctx(client).session_factory() as session:
        rows = {Path(a.path).stem: a for a in session.query(Asset)}
    for name in ("malformed", "non_utf8", "regions", "oversized", "garbage_sidecar"):
        assert rows[name].status.value == "active"
        assert rows[name].metadata_error, name
    assert "face regions" in (rows["regions"].metadata_error or "")
    assert "sidecar" in (rows["garbage_sidecar"].metadata_error or "")
    assert rows["both"].metadata_error is None
    assets = client.get("/api/v1/assets", params={"limit": 50}).json()["items"]
    by_name = {Path(a["path"]).stem: a for a in assets}
    assert by_name["regions"]["people"] == []
    assert by_name["both"]["people"][0] == {  # sorted by name
        "name": "Jack",
        "box": {"x": 0.2, "y": 0.35, "w": 0.2, "h": 0.3},
    }


def test_the_example_query(client: TestClient, library: dict[str, Path]) -> None:
    body = client.get("/api/v1/search", params={"q": EXAMPLE, "limit": 10}).json()
    assert body["understood"]["recognised_people"] == ["Pat", "Jack"]
    assert body["understood"]["people"] == ["pat", "jack"]
    assert body["understood"]["concept"] == "an automobile"
    # Only photos with both, including the one whose people are in a sidecar.
    assert _paths(body) == {"both.jpg", "both_sidecar.jpg"}
    for result in body["results"]:
        assert {p["name"] for p in result["people"]} == {"Pat", "Jack"}


@pytest.mark.parametrize("query", ["pat and JACK", "photos of Jack with pat", "PAT, jack"])
def test_names_in_any_case_and_order(
    client: TestClient, library: dict[str, Path], query: str
) -> None:
    body = client.get("/api/v1/search", params={"q": query}).json()
    assert _paths(body) == {"both.jpg", "both_sidecar.jpg"}
    assert body["understood"]["concept"] == ""


def test_an_unknown_name_stays_in_the_concept(client: TestClient, library: Any) -> None:
    body = client.get("/api/v1/search", params={"q": "Zed and a car", "limit": 50}).json()
    assert body["understood"]["concept"] == "Zed and a car"
    assert body["understood"]["people"] == []
    assert len(body["results"]) == len(library)
    raw = client.get("/api/v1/search", params={"q": "Pat", "understand": "false"}).json()
    assert raw["understood"]["people"] == []
    assert len(raw["results"]) == min(20, len(library))


def test_explicit_filters_on_every_search_endpoint(
    client: TestClient, library: dict[str, Path]
) -> None:
    both = {"both.jpg", "both_sidecar.jpg"}
    text = client.get("/api/v1/search", params={"q": "a photo", "people": "Pat,JACK"}).json()
    assert _paths(text) == both
    repeated = client.get(
        "/api/v1/search", params=[("q", "a photo"), ("people", "pat"), ("people", "jack")]
    ).json()
    assert _paths(repeated) == both
    anyof = client.get("/api/v1/search", params={"q": "x", "people_any": "Pat,Jack"}).json()
    assert _paths(anyof) == both | {"pat.jpg", "jack.jpg"}
    tags = client.get("/api/v1/search", params={"q": "x", "tags": "HOLIDAY"}).json()
    assert _paths(tags) == {"both.jpg", "jack.jpg"}
    body = client.post("/api/v1/search", json={"q": "a photo", "people": ["Pat", "Jack"]})
    assert _paths(body.json()) == both
    image = client.post(
        "/api/v1/search/image",
        files={"file": ("q.jpg", library["pat_only"].read_bytes(), "image/jpeg")},
        data={"people": "pat,jack"},
    ).json()
    assert _paths(image) == both
    assert image["understood"]["people"] == ["pat", "jack"]
    pat_id = next(r["asset_id"] for r in anyof["results"] if r["path"].endswith("pat.jpg"))
    similar = client.get(f"/api/v1/search/similar/{pat_id}", params={"people_any": "pat"}).json()
    assert _paths(similar) == both  # the asset itself is excluded
    # Few matches still fill what they can; a limit above the matches returns them all.
    assert (
        len(
            client.get("/api/v1/search", params={"q": "x", "people": "Pat", "limit": 1}).json()[
                "results"
            ]
        )
        == 1
    )
    too_long = client.get("/api/v1/search", params={"q": "x", "people": "p" * 300})
    assert_error(too_long, 422)


def test_a_sidecar_change_alone_is_picked_up(
    client: TestClient, library: dict[str, Path], tmp_path: Path
) -> None:
    sidecar = library["pat_only"].with_name("pat.xmp")
    sidecar.write_bytes(xmp_packet(people=["Pat", "Jack"]))
    report = index_paths(app_ctx(client), [tmp_path / "photos"], model_keys=["clip"])
    assert (report.indexed, report.metadata_refreshed) == (0, 1)
    body = client.get("/api/v1/search", params={"q": "Pat and Jack"}).json()
    assert _paths(body) == {"both.jpg", "both_sidecar.jpg", "pat.jpg"}
    # Rewriting it again (new mtime) is seen again; an unchanged one is not re-read.
    sidecar.write_bytes(xmp_packet(people=["Pat"]))
    os.utime(sidecar, ns=(1, 1))
    report = index_paths(app_ctx(client), [tmp_path / "photos"], model_keys=["clip"])
    assert report.metadata_refreshed == 1
    assert _paths(client.get("/api/v1/search", params={"q": "Pat and Jack"}).json()) == {
        "both.jpg",
        "both_sidecar.jpg",
    }
    again = index_paths(app_ctx(client), [tmp_path / "photos"], model_keys=["clip"])
    assert again.metadata_refreshed == 0


def test_edits_filter_at_once_and_survive_reindexing(
    client: TestClient, library: dict[str, Path], tmp_path: Path
) -> None:
    items = client.get("/api/v1/assets", params={"limit": 50}).json()["items"]
    jack = next(a for a in items if a["path"].endswith("jack.jpg"))
    edited = client.patch(
        f"/api/v1/assets/{jack['id']}",
        json={"people": ["Jack", "Pat"], "tags": ["Beach"], "caption": "Jack and Pat at sea"},
    )
    assert edited.status_code == 200, edited.text
    assert {p["name"] for p in edited.json()["people"]} == {"Jack", "Pat"}
    assert edited.json()["edited"] == ["people", "tags", "caption"]
    expected = {"both.jpg", "both_sidecar.jpg", "jack.jpg"}
    assert _paths(client.get("/api/v1/search", params={"q": "Pat and Jack"}).json()) == expected
    # The file changes (new pixels, same people in its XMP): re-indexed, edit kept.
    write_jpeg_with_xmp(library["jack_only"], xmp_packet(mp_people=["jack"]), seed=40)
    report = index_paths(app_ctx(client), [tmp_path / "photos"], model_keys=["clip"])
    assert report.indexed == 1
    after = client.get(f"/api/v1/assets/{jack['id']}").json()
    assert {p["name"] for p in after["people"]} == {"Jack", "Pat"}
    assert after["tags"] == ["Beach"]
    assert after["caption"] == "Jack and Pat at sea"
    assert _paths(client.get("/api/v1/search", params={"q": "Pat and Jack"}).json()) == expected
    # Clearing the caption is an edit too; unknown fields are refused.
    cleared = client.patch(f"/api/v1/assets/{jack['id']}", json={"caption": None}).json()
    assert cleared["caption"] is None
    assert_error(client.patch(f"/api/v1/assets/{jack['id']}", json={"peeple": []}), 422)
    assert_error(client.patch(f"/api/v1/assets/{jack['id']}", json={"people": [" "]}), 422)
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(client.patch(f"/api/v1/assets/{missing}", json={"tags": []}), 404)


def test_people_and_tags_with_counts_rename_and_merge(
    client: TestClient, library: dict[str, Path]
) -> None:
    people = {p["name"]: p for p in client.get("/api/v1/people").json()["items"]}
    assert {n: p["count"] for n, p in people.items()} == {"Pat": 3, "Jack": 3}
    tags = client.get("/api/v1/tags").json()["items"]
    assert [(t["name"], t["count"]) for t in tags] == [("Holiday", 2)]
    # Rename: search by the new name, the old one is no longer a person.
    renamed = client.patch(f"/api/v1/people/{people['Jack']['id']}", json={"name": "Jacques"})
    assert renamed.json() == {"id": people["Jack"]["id"], "name": "Jacques", "count": 3}
    body = client.get("/api/v1/search", params={"q": "Pat and Jacques"}).json()
    assert _paths(body) == {"both.jpg", "both_sidecar.jpg"}
    assert body["results"][0]["people"][0]["name"] in {"Jacques", "Pat"}
    # Merge: naming Pat "jacques" folds Pat's photos into Jacques.
    merged = client.patch(f"/api/v1/people/{people['Pat']['id']}", json={"name": "jacques"})
    assert merged.json()["name"] == "Jacques"
    assert merged.json()["count"] == 4
    names = [p["name"] for p in client.get("/api/v1/people").json()["items"]]
    assert names == ["Jacques"]
    assert (
        len(client.get("/api/v1/search", params={"people": "jacques", "q": "x"}).json()["results"])
        == 4
    )
    assert_error(client.patch("/api/v1/people/999999", json={"name": "X"}), 404)
    assert_error(client.patch(f"/api/v1/people/{people['Pat']['id']}", json={"name": ""}), 422)


def test_people_and_tags_are_paginated_and_filtered_by_name(
    client: TestClient, library: dict[str, Path]
) -> None:
    everyone = client.get("/api/v1/people").json()
    assert (everyone["total"], everyone["limit"], everyone["offset"]) == (2, 100, 0)
    first = client.get("/api/v1/people", params={"limit": 1}).json()
    second = client.get("/api/v1/people", params={"limit": 1, "offset": 1}).json()
    assert first["total"] == second["total"] == 2
    # Pages follow the full list's order (most photographed, then by name) without overlap.
    assert first["items"] + second["items"] == everyone["items"]
    assert client.get("/api/v1/people", params={"offset": 2}).json()["items"] == []
    # The name filter ignores case and surrounding space, and LIKE's wildcards are literal.
    found = client.get("/api/v1/people", params={"q": " PA "}).json()
    assert [p["name"] for p in found["items"]] == ["Pat"]
    assert found["total"] == 1
    assert client.get("/api/v1/people", params={"q": "%"}).json()["total"] == 0
    assert client.get("/api/v1/tags", params={"q": "holi"}).json()["total"] == 1
    assert client.get("/api/v1/tags", params={"q": "_"}).json()["items"] == []
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"q": "x" * 1000}):
        assert_error(client.get("/api/v1/people", params=bad), 422)
        assert_error(client.get("/api/v1/tags", params=bad), 422)


def test_no_text_a_client_sends_may_hold_a_nul(
    client: TestClient, library: dict[str, Path]
) -> None:
    """PostgreSQL cannot store NUL and SQLite cuts a LIKE pattern at it: every text input
    refuses it with 422 (on both databases), and nothing changes."""
    asset = client.get("/api/v1/assets").json()["items"][0]["id"]
    people_before = client.get("/api/v1/people").json()
    person = people_before["items"][0]["id"]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/search", {"params": {"q": "a\x00b"}}),
        ("GET", "/api/v1/search", {"params": {"q": "x", "people": "a\x00"}}),
        ("GET", "/api/v1/search", {"params": {"q": "x", "not": "\x00"}}),
        ("GET", "/api/v1/search", {"params": {"q": "x", "user_id": "\x00"}}),
        ("POST", "/api/v1/search", {"json": {"q": "a\x00"}}),
        ("POST", "/api/v1/search/combined", {"data": {"q": "a\x00"}, "files": {"x": b""}}),
        ("GET", "/api/v1/people", {"params": {"q": "\x00"}}),
        ("GET", "/api/v1/tags", {"params": {"q": "a\x00"}}),
        ("PATCH", f"/api/v1/assets/{asset}", {"json": {"people": ["a\x00b"]}}),
        ("PATCH", f"/api/v1/assets/{asset}", {"json": {"tags": ["\x00"]}}),
        ("PATCH", f"/api/v1/assets/{asset}", {"json": {"caption": "a\x00"}}),
        ("PATCH", f"/api/v1/people/{person}", {"json": {"name": "\x00"}}),
        ("POST", "/api/v1/embed/text", {"json": {"texts": ["a\x00"]}}),
        ("POST", "/api/v1/admin/index", {"json": {"path": "/tmp/a\x00b"}}),
    ]
    for method, url, kwargs in requests:
        refused = client.request(method, url, **kwargs)
        assert_error(refused, 422)
        assert "NUL" in refused.json()["detail"], (url, kwargs)
    # A name of only invisible characters is blank.
    assert_error(client.patch(f"/api/v1/people/{person}", json={"name": "\u200b"}), 422)
    assert_error(client.patch(f"/api/v1/assets/{asset}", json={"tags": ["\u200b "]}), 422)
    assert client.get("/api/v1/people").json() == people_before


def test_a_caption_only_match_is_fused_in(client: TestClient, library: dict[str, Path]) -> None:
    body = client.get("/api/v1/search", params={"q": "Christmas", "limit": 3}).json()
    assert body["understood"]["full_text"] is True
    first = body["results"][0]
    assert Path(first["path"]).name == "cabin.jpg"
    assert first["matched_by"] in {"text", "both"}
    assert first["caption"] == "Christmas morning at the cabin"
    assert first["title"] == "Cabin"
    assert all(r["matched_by"] == "image" for r in body["results"][1:])
    # An edited caption is searchable at once; the old words no longer match.
    items = client.get("/api/v1/assets", params={"limit": 50}).json()["items"]
    pat = next(a for a in items if a["path"].endswith("pat.jpg"))
    client.patch(f"/api/v1/assets/{pat['id']}", json={"caption": "Lighthouse at dawn"})
    hits = client.get("/api/v1/search", params={"q": "lighthouse", "limit": 2}).json()["results"]
    assert Path(hits[0]["path"]).name == "pat.jpg"
    assert hits[0]["matched_by"] != "image"
    # Filters still hold for text matches: the caption photo has neither Pat nor Jack.
    both = client.get("/api/v1/search", params={"q": "Christmas with Pat and Jack"}).json()
    assert _paths(both) == {"both.jpg", "both_sidecar.jpg"}
    # FTS syntax typed by a user is just words.
    odd = client.get("/api/v1/search", params={"q": 'NEAR(" OR * christmas:'})
    assert odd.status_code == 200


def test_combined_queries(client: TestClient, library: dict[str, Path]) -> None:
    items = client.get("/api/v1/assets", params={"limit": 50}).json()["items"]
    ids = {Path(a["path"]).name: a["id"] for a in items}
    # An uploaded example alone finds itself first.
    upload = client.post(
        "/api/v1/search/combined",
        files=[("file", ("a.jpg", library["pat_only"].read_bytes(), "image/jpeg"))],
    ).json()
    assert Path(upload["results"][0]["path"]).name == "pat.jpg"
    assert upload["understood"]["examples"] == 1
    # Text + uploaded example + stored example + a negative, with weights.
    mixed = client.post(
        "/api/v1/search/combined",
        files=[("file", ("a.jpg", library["jack_only"].read_bytes(), "image/jpeg"))],
        data={
            "q": "a photo -dogs",
            "like": ids["both.jpg"],
            "not": "cats",
            "text_weight": "0.5",
            "example_weight": "2",
            "limit": "50",
        },
    ).json()
    assert mixed["understood"]["negative"] == ["cats", "dogs"]  # given, then inline
    assert mixed["understood"]["concept"] == "a photo"
    assert mixed["understood"]["examples"] == 2
    names = [Path(r["path"]).name for r in mixed["results"]]
    assert "both.jpg" not in names  # a stored example is not its own result
    assert len(names) == len(library) - 1
    # The same through GET /search: stored examples by id, negatives repeated.
    get = client.get(
        "/api/v1/search",
        params=[("q", "beach"), ("not", "people"), ("like", ids["cabin.jpg"]), ("limit", "50")],
    ).json()
    assert get["understood"]["negative"] == ["people"]
    assert "cabin.jpg" not in _paths(get)
    # Weights that cancel everything, nothing positive, an unknown asset: 4xx, never 500.
    assert_error(client.get("/api/v1/search", params={"q": "x", "text_weight": "0"}), 422)
    assert_error(client.post("/api/v1/search/combined", data={"q": ""}), (415, 422))
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_error(client.get("/api/v1/search", params={"q": "x", "like": unknown}), 404)
    assert_error(client.get("/api/v1/search", params={"q": "x", "text_weight": "11"}), 422)
