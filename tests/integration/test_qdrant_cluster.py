"""Qdrant as a cluster: placement settings in the collection recipe, collections behind
aliases, and a rebuild that moves searches to a new collection in one alias switch.

qdrant-client's in-process mode stands in for the server: it keeps aliases and the
on-disk flag of the vectors, and drops shards, replicas and quantization, so those are
checked in the request the recipe builds.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models as qm

from image_search_service.context import ServiceContext, open_context
from image_search_service.core.config import load_settings
from image_search_service.core.errors import ConfigError, ModelMismatch
from image_search_service.core.specs import ModelIdentity, model_spec
from image_search_service.db import repository as repo
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.reembed.collections import check_collection, rebuild_collection
from image_search_service.vector.base import VectorPoint
from image_search_service.vector.edge import EdgeVectorStore
from image_search_service.vector.factory import open_vector_store
from image_search_service.vector.qdrant import QdrantServerStore, create_request
from image_search_service.vector.schema import CollectionSpec, Placement, collection_spec
from tests.integration.reembed_support import (
    index_clip_only,
    invoke,
    settings_env,
    write_photos,
)

IDENTITY = ModelIdentity("tiny", "", 8)
SPEC = CollectionSpec("photos", IDENTITY)


def _point(i: int, axis: int) -> VectorPoint:
    vector = np.zeros(IDENTITY.dim, dtype=np.float32)
    vector[axis] = 1.0
    return VectorPoint(id=uuid.UUID(int=i), vector=vector)


def _query(axis: int) -> np.ndarray:
    vector = np.zeros(IDENTITY.dim, dtype=np.float32)
    vector[axis] = 1.0
    return vector


# -- settings ---------------------------------------------------------------------------
def test_write_consistency_above_the_replicas_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None, qdrant_replication_factor=2, qdrant_write_consistency=3)
    assert "QDRANT_WRITE_CONSISTENCY" in str(err.value)
    assert "QDRANT_REPLICATION_FACTOR" in str(err.value)
    with pytest.raises(ConfigError, match="QDRANT_SHARDS"):
        load_settings(_env_file=None, qdrant_shards=0)


def test_the_recipe_asks_the_server_for_the_configured_placement(make_settings: Any) -> None:
    settings = make_settings(
        qdrant_shards=6,
        qdrant_replication_factor=2,
        qdrant_write_consistency=2,
        qdrant_on_disk=True,
        qdrant_on_disk_payload=False,
    )
    spec = collection_spec(settings, model_spec(settings, "clip"))
    request = create_request(spec)
    assert request["shard_number"] == 6
    assert request["replication_factor"] == 2
    assert request["write_consistency_factor"] == 2
    assert request["on_disk_payload"] is False
    assert request["vectors_config"].on_disk is True
    assert request["hnsw_config"].on_disk is True
    # Vectors on disk, the INT8 copy in RAM: a search touches the disk only to rescore.
    quantization = request["quantization_config"]
    assert isinstance(quantization, qm.ScalarQuantization)
    assert quantization.scalar.always_ram is True
    assert spec.describe()["placement"]["shards"] == 6

    # The caption collection is placed like the image ones.
    from image_search_service.captions.ollama import OllamaEmbedder
    from image_search_service.captions.space import caption_collection

    embedder = OllamaEmbedder(
        url="http://127.0.0.1:1", model="nomic-embed-text", dim=768, timeout_s=1, batch_size=1
    )
    assert create_request(caption_collection(settings, embedder))["shard_number"] == 6
    embedder.close()

    default = create_request(collection_spec(make_settings(), model_spec(settings, "clip")))
    assert (default["shard_number"], default["replication_factor"]) == (1, 1)
    assert default["vectors_config"].on_disk is False
    assert default["on_disk_payload"] is True


# -- aliases ----------------------------------------------------------------------------
def test_a_collection_is_made_as_a_version_behind_an_alias() -> None:
    store = QdrantServerStore.connect(":memory:")
    try:
        spec = CollectionSpec("photos", IDENTITY, placement=Placement(on_disk=True))
        assert store.ensure_collection(spec) is True
        assert store.ensure_collection(spec) is False  # found through the alias
        aliases = {a.alias_name: a.collection_name for a in store.client.get_aliases().aliases}
        assert aliases == {"photos": "photos_v1"}
        physical = store.client.get_collection("photos_v1").config.params.vectors
        assert isinstance(physical, qm.VectorParams)
        assert physical.on_disk is True
        info = store.collection_info("photos")
        assert info is not None
        assert info.physical == "photos_v1"
        assert info.identity == IDENTITY

        assert store.drop_collection("photos") is True
        assert store.client.get_aliases().aliases == []
        assert not store.client.collection_exists("photos_v1")
    finally:
        store.close()


def test_a_version_left_without_its_alias_is_taken_up_not_doubled() -> None:
    """A crash between creating version 1 and its alias, or another process creating
    the same collection at once: the next ensure names that version, makes no second."""
    store = QdrantServerStore.connect(":memory:")
    try:
        assert store.create_version(SPEC) == "photos_v1"  # no alias yet
        assert store.ensure_collection(SPEC) is True
        assert store.alias_target("photos") == "photos_v1"
        names = {c.name for c in store.client.get_collections().collections}
        assert names == {"photos_v1"}
        # A leftover of another model is refused, not aliased.
        other = CollectionSpec("others", ModelIdentity("else", "", IDENTITY.dim))
        store.create_version(CollectionSpec("others", IDENTITY))
        with pytest.raises(ModelMismatch):
            store.ensure_collection(other)
        assert store.alias_target("others") is None
    finally:
        store.close()


def test_searches_read_the_old_collection_until_the_switch_and_the_new_one_after() -> None:
    store = QdrantServerStore.connect(":memory:")
    try:
        store.ensure_collection(SPEC)
        store.upsert("photos", [_point(1, 0), _point(2, 1)])  # through the alias: v1
        new = store.create_version(SPEC)
        assert new == "photos_v2"
        store.upsert(new, [_point(3, 0)])
        # Filling v2 changes nothing a search through the alias sees.
        assert [h.id.int for h in store.search("photos", _query(0), limit=1)] == [1]
        assert store.count("photos") == 2

        assert store.switch_alias("photos", new) == "photos_v1"
        assert [h.id.int for h in store.search("photos", _query(0), limit=1)] == [3]
        assert store.count("photos") == 1
        assert store.alias_target("photos") == "photos_v2"
        # The old version is still there until someone drops it (rollback: switch back).
        assert store.count("photos_v1") == 2
    finally:
        store.close()


def test_a_plain_collection_from_before_aliases_is_replaced_on_its_first_switch() -> None:
    store = QdrantServerStore.connect(":memory:")
    try:
        store.client.create_collection(
            "photos",
            vectors_config=qm.VectorParams(size=IDENTITY.dim, distance=qm.Distance.COSINE),
            metadata={"model": {"model_name": "tiny", "pretrained": "", "dim": IDENTITY.dim}},
        )
        store.upsert("photos", [_point(1, 0)])
        assert store.ensure_collection(SPEC) is False  # kept as it is
        assert store.alias_target("photos") is None
        new = store.create_version(SPEC)
        store.upsert(new, [_point(2, 0)])
        assert store.switch_alias("photos", new) is None
        assert store.alias_target("photos") == "photos_v1"
        assert [h.id.int for h in store.search("photos", _query(0), limit=5)] == [2]
    finally:
        store.close()


# -- Edge: one shard, no aliases --------------------------------------------------------
def test_edge_applies_on_disk_and_refuses_aliases_with_a_clear_error(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path / "qdrant", lock_timeout_s=0.2)
    try:
        on_disk = CollectionSpec("photos", IDENTITY, placement=Placement(on_disk=True))
        store.ensure_collection(on_disk)
        store.upsert("photos", [_point(1, 0), _point(2, 1)])
        store.optimize("photos")
        assert [h.id.int for h in store.search("photos", _query(1), limit=1)] == [2]
        info = store.collection_info("photos")
        assert info is not None
        assert info.placement is not None
        assert info.placement.on_disk is True
        assert info.mismatches(on_disk, store.capabilities) == []
        # In RAM is asked for now: the check says the collection must be rebuilt.
        problems = info.mismatches(SPEC, store.capabilities)
        assert len(problems) == 1
        assert problems[0].startswith("on_disk True, configured False")
        # Shards are not Edge's to honour, so they are not a mismatch there either.
        clustered = CollectionSpec("photos", IDENTITY, placement=Placement(shards=4, on_disk=True))
        assert info.mismatches(clustered, store.capabilities) == []

        assert store.capabilities.aliases is False
        assert store.alias_target("photos") is None
        with pytest.raises(ConfigError, match="QDRANT_URL"):
            store.create_version(SPEC)
        with pytest.raises(ConfigError, match="no collection aliases"):
            store.switch_alias("photos", "photos_v1")
    finally:
        store.close()


def test_cluster_settings_on_edge_are_ignored_with_one_log_line(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(qdrant_shards=3, qdrant_replication_factor=2)
    with caplog.at_level(logging.WARNING, logger="image_search_service.vector.factory"):
        store = open_vector_store(settings)
    try:
        lines = [r.getMessage() for r in caplog.records if r.name.endswith("vector.factory")]
        assert len(lines) == 1
        assert "QDRANT_SHARDS=3" in lines[0]
        assert "QDRANT_REPLICATION_FACTOR=2" in lines[0]
        assert "ignored" in lines[0]
        spec = collection_spec(settings, model_spec(settings, "clip"))
        assert store.ensure_collection(spec) is True  # works, as one shard
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="image_search_service.vector.factory"):
        open_vector_store(make_settings(data_dir=settings.data_dir / "other")).close()
    assert not [r for r in caplog.records if r.name.endswith("vector.factory")]


# -- the rebuild ------------------------------------------------------------------------
def _clip_vector(ctx: ServiceContext, photo: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(photo) as image:
        vectors = ctx.encoder("clip").encode_images([image.convert("RGB")])
    return np.asarray(vectors[0], dtype=np.float32)


def test_rebuild_fills_a_new_version_while_searches_read_the_old_then_switches(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    photos = write_photos(tmp_path / "photos", 6)
    settings = make_settings(qdrant_url=":memory:")
    ctx = open_context(settings, encoders=encoders)
    try:
        index_clip_only(ctx, [photos[0].parent])
        name = ctx.spec("clip").collection
        assert ctx.store.alias_target(name) == f"{name}_v1"
        query = _clip_vector(ctx, photos[0])
        seen: dict[str, Any] = {}

        def progress(total: int) -> Any:
            def tick(_n: int) -> None:
                filled = ctx.store.point_ids(f"{name}_v2")
                if seen or not filled:
                    return
                # Mid-fill: searches still answer from v1, whole; the library changes:
                # a photo already copied is deleted, two new ones are indexed (into v1).
                seen["count"] = ctx.store.count(name)
                seen["target"] = ctx.store.alias_target(name)
                seen["top"] = ctx.store.search(name, query, limit=1)[0].id
                with ctx.transaction() as session:
                    done = repo.get_assets(session, sorted(filled))
                    path = Path(next(a.path for a in done.values() if a.id != seen["top"]))
                path.unlink()
                write_photos(tmp_path / "photos", 2, start=6)
                index_clip_only(ctx, [photos[0].parent])

            return tick

        report = rebuild_collection(ctx, "clip", job_size=2, progress=progress)
        assert seen["count"] == 6
        assert seen["target"] == f"{name}_v1"
        assert report.aborted is None
        assert report.switched
        assert (report.physical, report.previous) == (f"{name}_v2", f"{name}_v1")
        assert report.dropped_previous
        assert not ctx.store.has_collection(f"{name}_v1")
        assert (report.caught_up, report.removed) == (2, 1)
        assert ctx.store.alias_target(name) == f"{name}_v2"
        assert ctx.store.count(name) == 7  # 6 - 1 deleted + 2 added during the fill
        assert ctx.store.search(name, query, limit=1)[0].id == seen["top"]
        check = check_collection(ctx, "clip")
        assert check.ok
        assert check.physical_collection == f"{name}_v2"
        assert check.embedded == check.assets == 7
    finally:
        ctx.close()


def test_rebuild_with_a_new_model_moves_the_stamp_with_the_alias(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """A model change: the old settings search the old collection until the switch; then
    the stamp check refuses them and the new settings are answered."""
    photos = write_photos(tmp_path / "photos", 3)
    qdrant = f"path:{tmp_path / 'qdrant-local'}"
    old = make_settings(qdrant_url=qdrant)
    new = make_settings(
        qdrant_url=qdrant,
        clip_model_name=f"local-dir:{tiny_models['siglip']}",
        clip_embedding_dim=old.siglip_embedding_dim,
    )
    ctx = open_context(old, encoders=encoders)
    try:
        index_clip_only(ctx, [photos[0].parent])
    finally:
        ctx.close()
    ctx = open_context(new, encoders=encoders)
    try:
        with pytest.raises(ModelMismatch):
            ctx.verify_collection("clip")
        report = rebuild_collection(ctx, "clip", keep_previous=True)
        assert report.switched
        assert report.done == 3
        ctx.verify_collection("clip")
        assert ctx.store.collection_stamp(ctx.spec("clip").collection) == ctx.spec("clip").identity
    finally:
        ctx.close()
    ctx = open_context(old, encoders=encoders)
    try:
        with pytest.raises(ModelMismatch):
            ctx.verify_collection("clip")
        # Kept: an operator can point the alias back (docs/qdrant-cluster.md).
        assert ctx.store.has_collection(report.previous or "")
    finally:
        ctx.close()


def test_rebuild_on_edge_is_refused_naming_qdrant_url(ctx: ServiceContext) -> None:
    with pytest.raises(ConfigError, match="QDRANT_URL"):
        rebuild_collection(ctx, "clip")


def test_the_rebuild_command_switches_and_check_shows_the_new_version(
    make_settings: Any, encoders: EncoderRegistry, tmp_path: Path
) -> None:
    photos = write_photos(tmp_path / "photos", 3)
    settings = make_settings(qdrant_url=f"path:{tmp_path / 'qdrant-local'}")
    ctx = open_context(settings, encoders=encoders)
    try:
        index_clip_only(ctx, [photos[0].parent])
    finally:
        ctx.close()
    env = settings_env(settings)
    out = json.loads(invoke(env, "reembed", "rebuild", "--to", "clip", "--json").output)
    assert out["switched"] is True
    assert (out["physical"], out["previous"]) == ("image_assets_v2", "image_assets_v1")
    assert (out["done"], out["failed"], out["dropped_previous"]) == (3, 0, True)
    check = json.loads(
        invoke(env, "create-collection", "--model", "clip", "--check", "--json").output
    )
    assert check["ok"] is True
    assert check["physical_collection"] == "image_assets_v2"
    assert check["embedded"] == 3

    edge = invoke(
        settings_env(make_settings(data_dir=tmp_path / "edge")),
        "reembed",
        "rebuild",
        "--to",
        "clip",
        ok=False,
    )
    assert edge.exit_code != 0
    assert "QDRANT_URL" in edge.output
