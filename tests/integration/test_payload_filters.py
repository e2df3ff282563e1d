"""People and tag payloads on both stores: filters inside the search, payload updates
for edits, and the payload indexes (added to collections made before they existed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from image_search_service.core.specs import ModelIdentity
from image_search_service.vector.base import SearchFilter, VectorHit, VectorPoint, VectorStore
from image_search_service.vector.edge import EdgeVectorStore
from image_search_service.vector.qdrant import QdrantServerStore
from image_search_service.vector.schema import CollectionSpec, PayloadField, label_payload

SPEC = CollectionSpec("photos", ModelIdentity("tiny", "", 8))
PEOPLE = [["pat", "jack"], ["pat"], ["jack"], [], ["ann", "pat", "jack"]] * 40  # 200 points


@pytest.fixture(params=["edge", "qdrant-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore
    if request.param == "edge":
        s = EdgeVectorStore(tmp_path / "qdrant", lock_timeout_s=0.2)
    else:
        s = QdrantServerStore.connect(":memory:")
    s.ensure_collection(SPEC)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(PEOPLE), SPEC.dim)).astype(np.float32)
    s.upsert(
        SPEC.name,
        [
            VectorPoint(
                uuid.UUID(int=i + 1),
                vectors[i],
                label_payload(people=people, tags=["beach"] if i % 2 else []),
            )
            for i, people in enumerate(PEOPLE)
        ],
    )
    s.optimize(SPEC.name)
    yield s
    s.close()


def _ids(hits: Sequence[VectorHit]) -> set[int]:
    return {h.id.int - 1 for h in hits}


def test_people_and_tag_filters_fill_the_limit(store: VectorStore) -> None:
    query = np.ones(SPEC.dim, dtype=np.float32) / np.sqrt(SPEC.dim)
    both = store.search(
        SPEC.name, query, limit=50, search_filter=SearchFilter(people=("pat", "jack"))
    )
    assert len(both) == 50  # 80 points match: a full page, every one matching
    assert all({"pat", "jack"} <= set(PEOPLE[i]) for i in _ids(both))
    anyof = store.search(
        SPEC.name, query, limit=200, search_filter=SearchFilter(people_any=("ann", "jack"))
    )
    assert _ids(anyof) == {i for i, p in enumerate(PEOPLE) if {"ann", "jack"} & set(p)}
    tagged = store.search(
        SPEC.name, query, limit=200, search_filter=SearchFilter(people=("pat",), tags=("beach",))
    )
    assert _ids(tagged) == {i for i, p in enumerate(PEOPLE) if "pat" in p and i % 2}
    only = store.search(
        SPEC.name,
        query,
        limit=200,
        search_filter=SearchFilter(
            include_ids=(uuid.UUID(int=1), uuid.UUID(int=2)), people=("pat",)
        ),
    )
    assert _ids(only) == {0, 1}


def test_set_payload_updates_filters_and_skips_missing_points(store: VectorStore) -> None:
    query = np.ones(SPEC.dim, dtype=np.float32)
    store.set_payload(
        SPEC.name,
        {
            uuid.UUID(int=4): label_payload(people=["zed"], tags=[]),  # index 3
            uuid.UUID(int=99_999): label_payload(people=["zed"], tags=[]),  # no such point
        },
    )
    hits = store.search(SPEC.name, query, limit=10, search_filter=SearchFilter(people=("zed",)))
    assert _ids(hits) == {3}
    assert store.count(SPEC.name) == len(PEOPLE)  # nothing was created


def test_edge_adds_payload_indexes_an_older_collection_lacks(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "q", lock_timeout_s=0.2)
    store.ensure_collection(SPEC)
    shard = store._shard(SPEC.name)
    assert {PayloadField.PEOPLE, PayloadField.TAGS} <= set(shard.info().payload_schema)
    shard.update(qe.UpdateOperation.delete_field_index(PayloadField.PEOPLE))
    assert PayloadField.PEOPLE not in set(shard.info().payload_schema)
    assert store.ensure_collection(SPEC) is False
    assert PayloadField.PEOPLE in set(store._shard(SPEC.name).info().payload_schema)
    store.close()
