"""The library's counts and listings that a million-photo library reads through indexes
(issue 21): each checked against a count made in Python from the same rows, on SQLite
and PostgreSQL, with every kind of row that could be miscounted - unreadable and missing
photos holding states, a row left by a previous model, a photo embedded by the candidate
only - and the path prefixes of a re-scan, LIKE's wildcards included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from image_search_service.core.specs import ModelSpec
from image_search_service.db import metadata_repository as meta_repo
from image_search_service.db import repository as repo
from image_search_service.db.models import (
    Asset,
    AssetEmbedding,
    AssetPerson,
    AssetStatus,
    EmbeddingState,
    Person,
)
from image_search_service.db.session import make_engine, make_session_factory, upgrade_database

CLIP = ModelSpec("clip", "demo-clip", "", 512, "image_assets")
SIGLIP = ModelSpec("siglip", "demo-siglip", "", 768, "image_assets_siglip")
OLD_CLIP = ModelSpec("clip", "ViT-B-32", "openai", 512, "image_assets")

A, F, M = AssetStatus.ACTIVE, AssetStatus.FAILED, AssetStatus.MISSING
DONE, FAIL, PEND = EmbeddingState.DONE, EmbeddingState.FAILED, EmbeddingState.PENDING

# (status, clip state, siglip state); a spec instead of a state: "done" by that model.
ROWS: list[tuple[AssetStatus, object, object]] = [
    (A, CLIP, SIGLIP),
    (A, CLIP, SIGLIP),
    (A, CLIP, None),
    (A, CLIP, FAIL),
    (A, CLIP, PEND),
    (A, OLD_CLIP, None),  # done by a previous model: not done by this one
    (A, FAIL, SIGLIP),  # searchable through the candidate only
    (A, None, None),
    (A, PEND, SIGLIP),
    (F, FAIL, None),
    (F, CLIP, FAIL),  # embedded, then became unreadable
    (M, CLIP, SIGLIP),  # gone from disk: counts nowhere
    (M, FAIL, None),
    (M, None, FAIL),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    url = (
        f"sqlite:///{tmp_path}/m.sqlite3"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    upgrade_database(engine)
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


def _state(asset_id: uuid.UUID, key: str, state: object, now: datetime) -> dict[str, object]:
    spec = state if isinstance(state, ModelSpec) else (CLIP if key == "clip" else SIGLIP)
    return {
        "asset_id": asset_id,
        "model_key": key,
        "state": DONE if isinstance(state, ModelSpec) else state,
        "attempts": 1,
        "model_name": spec.model_name,
        "pretrained": spec.pretrained,
        "dim": spec.embedding_dim,
        "updated_at": now,
    }


def _asset(path: str, status: AssetStatus, created: datetime) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "path": path,
        "content_hash": uuid.uuid4().hex,
        "size_bytes": 1,
        "mtime_ns": 1,
        "status": status,
        "created_at": created,
        "updated_at": created,
    }


def _fill(
    session: Session, spec_rows: list[tuple[AssetStatus, object, object]] = ROWS
) -> list[tuple[uuid.UUID, AssetStatus, object, object]]:
    now = datetime.now(UTC)
    assets, states, rows = [], [], []
    for i, (status, clip, siglip) in enumerate(spec_rows):
        row = _asset(f"/lib/{i}.jpg", status, now - timedelta(minutes=len(spec_rows) - i))
        assets.append(row)
        asset_id = row["id"]
        assert isinstance(asset_id, uuid.UUID)
        rows.append((asset_id, status, clip, siglip))
        states += [
            _state(asset_id, k, s, now) for k, s in (("clip", clip), ("siglip", siglip)) if s
        ]
    session.execute(insert(Asset), assets)
    if states:
        session.execute(insert(AssetEmbedding), states)
    session.commit()
    return rows


def _expected(
    rows: list[tuple[uuid.UUID, AssetStatus, object, object]], spec: ModelSpec
) -> repo.Coverage:
    column = 2 if spec.key == "clip" else 3
    present = [r for r in rows if r[1] != M]
    done = [r for r in present if r[column] == spec]
    return repo.Coverage(
        model=spec.key,
        present=len(present),
        searchable=sum(r[1] == A for r in present),
        done=len(done),
        failed=sum(r[column] == FAIL for r in present),
        done_searchable=sum(r[1] == A for r in done),
    )


# The shortcuts: one model covers every active asset, or none has embedded anything.
CLIP_COMPLETE = [r for r in ROWS if r[0] != A or r[1] == CLIP]
SIGLIP_COMPLETE = [r for r in ROWS if r[0] != A or r[2] == SIGLIP]
NOTHING_DONE = [(s, None, None) for s, _, _ in ROWS]


@pytest.mark.parametrize(
    "spec_rows",
    [ROWS, CLIP_COMPLETE, SIGLIP_COMPLETE, NOTHING_DONE],
    ids=["mixed", "clip-complete", "siglip-complete", "nothing-done"],
)
def test_counts_match_a_count_of_every_row(
    session: Session, spec_rows: list[tuple[AssetStatus, object, object]]
) -> None:
    rows = _fill(session, spec_rows)
    library = repo.library_counts(session)
    assert (library.total, library.active, library.failed, library.missing) == (
        len(rows),
        sum(r[1] == A for r in rows),
        sum(r[1] == F for r in rows),
        sum(r[1] == M for r in rows),
    )
    for spec in (CLIP, SIGLIP):
        assert repo.coverage(session, spec) == _expected(rows, spec)
        assert repo.coverage(session, spec, library=library) == _expected(rows, spec)
    active = [r for r in rows if r[1] == A]
    assert repo.count_searchable(session, [CLIP, SIGLIP]) == sum(
        r[2] == CLIP or r[3] == SIGLIP for r in active
    )
    assert repo.count_searchable(session, [SIGLIP]) == sum(r[3] == SIGLIP for r in active)
    assert repo.count_covered_but_not_by(session, CLIP, SIGLIP) == sum(
        r[2] == CLIP and r[3] != SIGLIP for r in active
    )
    assert repo.count_covered_but_not_by(session, SIGLIP, CLIP) == sum(
        r[3] == SIGLIP and r[2] != CLIP for r in active
    )
    # The plan of a re-embed: present assets neither done by this model nor failed.
    planned = repo.asset_ids_to_embed(session, SIGLIP)
    assert planned == [r[0] for r in rows if r[1] != M and r[3] not in (SIGLIP, FAIL)]
    assert len(planned) == _expected(rows, SIGLIP).pending
    # Embedded ids in id order, a page at a time, of searchable assets only.
    pages, after = [], None
    while page := repo.embedded_ids_page(session, CLIP, after=after, limit=2):
        pages += page
        after = page[-1]
    assert pages == sorted(r[0] for r in active if r[2] == CLIP)


def test_a_page_of_assets_counts_only_those_present(session: Session) -> None:
    rows = _fill(session)
    page, total = repo.list_assets(session, limit=4, offset=0)
    present = [r[0] for r in rows if r[1] != M]  # oldest first
    assert total == len(present)
    assert [a.id for a in page] == present[:4]


@pytest.mark.parametrize(
    ("prefixes", "expected"),
    [
        (["/lib/a/"], ["/lib/a/1.jpg", "/lib/a/sub/2.jpg"]),
        (["/lib/a_b/"], ["/lib/a_b/4.jpg"]),  # "_" is no wildcard: not /lib/aXb/
        (["/lib/a%/"], ["/lib/a%/5.jpg"]),  # nor "%"
        (["/lib/ab/3.jpg"], ["/lib/ab/3.jpg"]),  # a file given as the root
        (["/lib/é/"], ["/lib/é/6.jpg"]),
        (["/lib/a/", "/lib/ab/"], ["/lib/a/1.jpg", "/lib/a/sub/2.jpg", "/lib/ab/3.jpg"]),
        (["s3://bucket/photos/"], ["s3://bucket/photos/8.jpg"]),
        ([], []),
    ],
)
def test_assets_under_a_folder(session: Session, prefixes: list[str], expected: list[str]) -> None:
    now = datetime.now(UTC)
    paths = [
        "/lib/a/1.jpg",
        "/lib/a/sub/2.jpg",
        "/lib/ab/3.jpg",
        "/lib/a_b/4.jpg",
        "/lib/aXb/7.jpg",
        "/lib/a%/5.jpg",
        "/lib/aa/9.jpg",
        "/lib/é/6.jpg",
        "s3://bucket/photos/8.jpg",
        "s3://bucket/photos2/8.jpg",
    ]
    rows = [_asset(p, A, now) for p in paths]
    rows.append(_asset("/lib/a/gone.jpg", M, now))  # missing: never under anything
    session.execute(insert(Asset), rows)
    session.commit()
    assert sorted(a.path for a in repo.assets_under(session, prefixes)) == expected
    assert sorted(p for _, p in repo.asset_paths_under(session, prefixes)) == expected


def test_known_people_are_those_of_photos_still_in_the_library(session: Session) -> None:
    now = datetime.now(UTC)
    rows = [_asset(f"/lib/{s}.jpg", s, now) for s in (A, F, M)]
    session.execute(insert(Asset), rows)
    session.add_all(
        [
            Person(id=1, name="Ann", name_key="ann"),
            Person(id=2, name="Bo", name_key="bo"),
            Person(id=3, name="Cy", name_key="cy"),
            Person(id=4, name="Di", name_key="di"),  # in no photo at all
        ]
    )
    session.flush()
    links = [(0, 1), (1, 1), (1, 2), (2, 3), (2, 1)]  # Cy only in the missing photo
    session.execute(
        insert(AssetPerson), [{"asset_id": rows[a]["id"], "person_id": p} for a, p in links]
    )
    session.commit()
    assert meta_repo.known_people(session) == {"ann": "Ann", "bo": "Bo"}
    # Photos per person count those still in the library only; Cy and Di have none.
    page = meta_repo.people_counts(session)
    assert [(c.name, c.count) for c in page.items] == [("Ann", 2), ("Bo", 1)]
    assert page.total == 2
    assert [c.name for c in meta_repo.people_counts(session, containing="b").items] == ["Bo"]
    assert meta_repo.people_counts(session, limit=1, offset=1).items[0].name == "Bo"
    found = meta_repo.person_count(session, 1)
    assert found is not None
    assert found.count == 2
    assert meta_repo.person_count(session, 3) is None


def test_full_text_returns_the_best_searchable_matches(tmp_path: Path) -> None:
    """SQLite ranks inside FTS5 first and checks status for the best few only; when
    those are all gone from the library, every match is joined instead."""
    engine = make_engine(f"sqlite:///{tmp_path}/m.sqlite3")
    upgrade_database(engine)
    now = datetime.now(UTC)
    # Gone photos whose text matches best (the word three times), then searchable ones.
    bodies = [(M, "sunset sunset sunset")] * 5 + [(A, "sunset at the beach")] * 3
    bodies += [(A, "sunset")]  # the best searchable match: the shortest text
    rows = [_asset(f"/lib/{i}.jpg", status, now) for i, (status, _) in enumerate(bodies)]
    with make_session_factory(engine)() as session:
        session.execute(insert(Asset), rows)
        for row, (_, body) in zip(rows, bodies, strict=True):
            asset_id = row["id"]
            assert isinstance(asset_id, uuid.UUID)
            session.execute(
                text("INSERT INTO asset_search (asset_id, body) VALUES (:id, :body)"),
                {"id": asset_id.hex, "body": body},
            )
        session.commit()
        found = meta_repo.text_matches(session, "sunset", limit=2)
        assert len(found) == 2
        assert found[0] == rows[-1]["id"]
        assert all(bodies[[r["id"] for r in rows].index(i)][0] == A for i in found)
        assert len(meta_repo.text_matches(session, "beach", limit=10)) == 3
        assert meta_repo.text_matches(session, "winter", limit=10) == []
    engine.dispose()
