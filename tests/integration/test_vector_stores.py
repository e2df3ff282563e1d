"""Both adapters behind one interface: Qdrant Edge on disk and qdrant-client in-process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from image_search_service.core.errors import CollectionMissing, ModelMismatch, VectorStoreLocked
from image_search_service.core.specs import ModelIdentity
from image_search_service.vector.base import (
    SearchFilter,
    VectorPoint,
    VectorStore,
    verify_collection,
)
from image_search_service.vector.edge import EdgeVectorStore
from image_search_service.vector.qdrant import QdrantServerStore
from image_search_service.vector.schema import CollectionSpec, payload_timestamp

SPEC = CollectionSpec("photos", ModelIdentity("tiny", "", 16))


@pytest.fixture(params=["edge", "qdrant-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore
    if request.param == "edge":
        s = EdgeVectorStore(tmp_path / "qdrant", lock_timeout_s=0.2)
    else:
        s = QdrantServerStore.connect(":memory:")
    yield s
    s.close()


def _points(n: int, seed: int = 0) -> tuple[list[VectorPoint], np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, SPEC.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    points = [
        VectorPoint(
            id=uuid.UUID(int=i + 1),
            vector=vecs[i],
            payload={
                "asset_id": str(uuid.UUID(int=i + 1)),
                "format": "PNG" if i % 2 else "JPEG",
                "taken_ts": payload_timestamp(datetime(2020, 1, 1 + i % 28)),
            },
        )
        for i in range(n)
    ]
    return points, vecs


def test_create_is_idempotent_and_stamped(store: VectorStore) -> None:
    assert store.ensure_collection(SPEC) is True
    assert store.ensure_collection(SPEC) is False
    info = store.collection_info("photos")
    assert info is not None
    assert info.identity == SPEC.identity
    assert info.dim == 16
    assert info.distance == "cosine"
    assert (info.hnsw_m, info.hnsw_ef_construct) == (16, 100)
    assert store.collection_info("nope") is None


def test_runtimes_are_recorded_in_the_stamp_without_changing_identity(
    store: VectorStore,
) -> None:
    store.ensure_collection(SPEC)
    info = store.collection_info("photos")
    assert info is not None
    assert info.runtimes == ()
    store.note_runtime("photos", "torch-fp32")
    store.note_runtime("photos", "onnx-int8")
    store.note_runtime("photos", "torch-fp32")  # recorded once
    info = store.collection_info("photos")
    assert info is not None
    assert info.runtimes == ("torch-fp32", "onnx-int8")
    assert info.runtimes == ("torch-fp32", "onnx-int8")
    assert info.identity == SPEC.identity
    verify_collection(store, SPEC)  # provenance is not identity
    assert store.ensure_collection(SPEC) is False
    with pytest.raises(CollectionMissing):
        store.note_runtime("absent", "onnx-fp32")


def test_opening_with_another_model_is_a_clear_error(store: VectorStore) -> None:
    store.ensure_collection(SPEC)
    other = CollectionSpec("photos", ModelIdentity("other-model", "x", 16))
    with pytest.raises(ModelMismatch, match="other-model"):
        store.ensure_collection(other)
    with pytest.raises(ModelMismatch):
        verify_collection(store, other)
    with pytest.raises(CollectionMissing):
        verify_collection(store, CollectionSpec("absent", SPEC.identity))


def test_upsert_search_filter_and_delete(store: VectorStore) -> None:
    store.ensure_collection(SPEC)
    points, vecs = _points(60)
    store.upsert("photos", points)
    store.upsert("photos", points[:10])  # idempotent: same ids, no duplicates
    store.optimize("photos")
    assert store.count("photos") == 60
    assert store.point_ids("photos") == {p.id for p in points}

    top = store.search("photos", vecs[7], limit=5)
    assert top[0].id == points[7].id
    assert top[0].score == pytest.approx(1.0, abs=1e-3)
    assert [h.score for h in top] == sorted((h.score for h in top), reverse=True)
    page2 = store.search("photos", vecs[7], limit=5, offset=5)
    assert not {h.id for h in top} & {h.id for h in page2}

    pngs = store.search("photos", vecs[7], limit=10, search_filter=SearchFilter(format="PNG"))
    assert pngs
    assert all(int(h.id) % 2 == 0 for h in pngs)
    excluded = store.search(
        "photos", vecs[7], limit=5, search_filter=SearchFilter(exclude_ids=(points[7].id,))
    )
    assert points[7].id not in {h.id for h in excluded}
    window = SearchFilter(taken_after=datetime(2020, 1, 3), taken_before=datetime(2020, 1, 5))
    dated = store.search("photos", vecs[0], limit=60, search_filter=window)
    assert dated
    assert all((int(h.id) - 1) % 28 in (2, 3) for h in dated)

    strong = store.search("photos", vecs[7], limit=60, min_score=0.99)
    assert [h.id for h in strong] == [points[7].id]

    got = store.retrieve_vectors("photos", [points[3].id, uuid.uuid4()])
    assert list(got) == [points[3].id]
    np.testing.assert_allclose(got[points[3].id], vecs[3], atol=1e-5)

    store.delete("photos", [p.id for p in points[:20]])
    assert store.count("photos") == 40
    assert points[0].id not in {h.id for h in store.search("photos", vecs[0], limit=10)}


def test_drop_collection(store: VectorStore) -> None:
    store.ensure_collection(SPEC)
    assert store.drop_collection("photos") is True
    assert store.collection_info("photos") is None


class TestEdgeOnDisk:
    def test_data_survives_reopen(self, tmp_path: Path) -> None:
        points, vecs = _points(30)
        first = EdgeVectorStore(tmp_path / "q")
        first.ensure_collection(SPEC)
        first.upsert("photos", points)
        first.optimize("photos")
        first.close()
        again = EdgeVectorStore(tmp_path / "q")
        assert again.count("photos") == 30
        assert again.search("photos", vecs[4], limit=1)[0].id == points[4].id
        again.close()

    def test_second_opener_is_told_who_holds_the_store(self, tmp_path: Path) -> None:
        holder = EdgeVectorStore(tmp_path / "q")
        with pytest.raises(VectorStoreLocked, match="QDRANT_URL"):
            EdgeVectorStore(tmp_path / "q", lock_timeout_s=0.3)
        holder.close()
        EdgeVectorStore(tmp_path / "q", lock_timeout_s=0.3).close()  # free again

    def test_int8_search_with_oversampling_matches_exact_search(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(3)
        centres = rng.normal(size=(20, 64)).astype(np.float32)
        vecs = centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 64))
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        spec = CollectionSpec("big", ModelIdentity("tiny", "", 64))
        s = EdgeVectorStore(tmp_path / "q")
        s.ensure_collection(spec)
        s.upsert("big", [VectorPoint(uuid.UUID(int=i + 1), v) for i, v in enumerate(vecs)])
        s.optimize("big")
        recalls = []
        for q in vecs[:50]:
            exact = {uuid.UUID(int=int(i) + 1) for i in np.argsort(-(vecs @ q))[:10]}
            got = {h.id for h in s.search("big", q, limit=10)}
            recalls.append(len(exact & got) / 10)
        s.close()
        assert float(np.mean(recalls)) >= 0.95
