"""Embedded Qdrant: Qdrant Edge shards on disk, one directory per collection.

Edge has no collection metadata, so the model stamp and creation settings live in
``collection.json`` beside the shard. A shard may be open in one process only, so
the whole store holds an exclusive file lock while open (its holder's pid is written
beside it, for the message another process gets). Edge is one shard in one process: it
applies the on-disk settings but has no shards, replicas or aliases (``vector/factory.py``
says so once in the log when cluster settings are set).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import qdrant_edge as qe
from filelock import FileLock, Timeout

from image_search_service.core.errors import (
    CollectionMissing,
    VectorStoreLocked,
    VectorStoreUnavailable,
)
from image_search_service.core.specs import ModelIdentity
from image_search_service.vector.base import (
    CollectionInfo,
    SearchFilter,
    StoreCapabilities,
    Vector,
    VectorHit,
    VectorPoint,
    aliases_unsupported,
    check_identity,
)
from image_search_service.vector.schema import (
    DISTANCE,
    FLOAT_INDEXES,
    FULL_SCAN_THRESHOLD,
    KEYWORD_INDEXES,
    QUANTIZATION,
    QUANTIZATION_ALWAYS_RAM,
    QUANTIZATION_QUANTILE,
    CollectionSpec,
    PayloadField,
    Placement,
    payload_timestamp,
)

_META_FILE = "collection.json"
_SHARD_DIR = "shard"
_LOCK_FILE = ".lock"
_SCROLL_PAGE = 1024


class EdgeVectorStore:
    kind = "embedded"
    capabilities = StoreCapabilities(
        applies_index_config=True, payload_indexes=True, shared=False, indexes_on_optimize=True
    )

    def __init__(self, root: Path, *, oversampling: float = 2.0, lock_timeout_s: float = 10.0):
        self.root = root
        self.oversampling = oversampling
        root.mkdir(parents=True, exist_ok=True)
        self._lock: FileLock | None = _acquire_lock(root / _LOCK_FILE, lock_timeout_s)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._mutex = threading.RLock()

    # -- collections -------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid collection name {name!r}")
        return self.root / name

    def _meta(self, name: str) -> dict[str, Any] | None:
        path = self._dir(name) / _META_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _shard(self, name: str) -> qe.EdgeShard:
        with self._mutex:
            shard = self._shards.get(name)
            if shard is None:
                if self._meta(name) is None:
                    raise CollectionMissing(f"collection {name!r} does not exist")
                try:
                    shard = qe.EdgeShard.load(str(self._dir(name) / _SHARD_DIR))
                except Exception as exc:  # the engine reports I/O and format errors alike
                    raise VectorStoreUnavailable(f"cannot open collection {name!r}: {exc}") from exc
                self._shards[name] = shard
            return shard

    def ensure_collection(self, spec: CollectionSpec) -> bool:
        with self._mutex:
            meta = self._meta(spec.name)
            if meta is not None:
                check_identity(spec.name, ModelIdentity.from_dict(meta["model"]), spec.identity)
                self._ensure_indexes(self._shard(spec.name))
                return False
            directory = self._dir(spec.name)
            shard_dir = directory / _SHARD_DIR
            if shard_dir.exists():  # a crash between creating the shard and the stamp
                shutil.rmtree(shard_dir)
            on_disk = spec.placement.on_disk
            config = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(
                    size=spec.dim, distance=qe.Distance.Cosine, on_disk=on_disk
                ),
                on_disk_payload=spec.placement.on_disk_payload,
                hnsw_config=qe.HnswIndexConfig(
                    m=spec.hnsw_m,
                    ef_construct=spec.hnsw_ef_construct,
                    full_scan_threshold=FULL_SCAN_THRESHOLD,
                    on_disk=on_disk,
                ),
                quantization_config=qe.ScalarQuantizationConfig(
                    type=qe.ScalarType.Int8,
                    quantile=QUANTIZATION_QUANTILE,
                    always_ram=QUANTIZATION_ALWAYS_RAM,
                ),
            )
            shard = qe.EdgeShard.create(str(shard_dir), config)
            self._ensure_indexes(shard)
            self._shards[spec.name] = shard
            meta = {
                "model": asdict(spec.identity),
                "dim": spec.dim,
                "distance": DISTANCE,
                "quantization": QUANTIZATION,
                "quantile": QUANTIZATION_QUANTILE,
                "hnsw": {"m": spec.hnsw_m, "ef_construct": spec.hnsw_ef_construct},
                # What Edge applies of the placement: one shard, one copy, always.
                "on_disk": on_disk,
                "on_disk_payload": spec.placement.on_disk_payload,
            }
            tmp = directory / (_META_FILE + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, directory / _META_FILE)  # the stamp appears atomically, last
            return True

    @staticmethod
    def _ensure_indexes(shard: qe.EdgeShard) -> None:
        """Payload indexes of the recipe; a collection made by an older version gets the
        ones it lacks (filters work without them, only slower)."""
        existing = set(shard.info().payload_schema)
        for field_name, schema in [
            *((f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_INDEXES),
            *((f, qe.PayloadSchemaType.Float) for f in FLOAT_INDEXES),
        ]:
            if field_name not in existing:
                shard.update(qe.UpdateOperation.create_field_index(field_name, schema))

    def has_collection(self, name: str) -> bool:
        return self._meta(name) is not None

    def collection_info(self, name: str) -> CollectionInfo | None:
        meta = self._meta(name)
        if meta is None:
            return None
        hnsw = meta.get("hnsw", {})
        return CollectionInfo(
            name=name,
            identity=ModelIdentity.from_dict(meta["model"]),
            points=self.count(name),
            dim=int(meta["dim"]),
            distance=str(meta.get("distance", DISTANCE)),
            quantization=meta.get("quantization"),
            hnsw_m=hnsw.get("m"),
            hnsw_ef_construct=hnsw.get("ef_construct"),
            runtimes=tuple(meta.get("runtimes", ())),
            placement=Placement(
                on_disk=bool(meta["on_disk"]), on_disk_payload=bool(meta["on_disk_payload"])
            )
            if "on_disk" in meta
            else None,  # made before placements were recorded
        )

    def collection_stamp(self, name: str) -> ModelIdentity | None:
        meta = self._meta(name)
        if meta is None:
            raise CollectionMissing(f"collection {name!r} does not exist")
        return ModelIdentity.from_dict(meta["model"])

    def note_runtime(self, name: str, runtime: str) -> None:
        with self._mutex:
            meta = self._meta(name)
            if meta is None:
                raise CollectionMissing(f"collection {name!r} does not exist")
            runtimes = list(meta.get("runtimes", []))
            if runtime in runtimes:
                return
            meta["runtimes"] = [*runtimes, runtime]
            directory = self._dir(name)
            tmp = directory / (_META_FILE + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, directory / _META_FILE)

    def drop_collection(self, name: str) -> bool:
        with self._mutex:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            directory = self._dir(name)
            if not directory.exists():
                return False
            # Remove the stamp first, so a crash mid-delete leaves "missing", not "corrupt".
            (directory / _META_FILE).unlink(missing_ok=True)
            shutil.rmtree(directory)
            return True

    # -- aliases: none in Edge ---------------------------------------------------------
    def alias_target(self, name: str) -> str | None:
        return None

    def create_version(self, spec: CollectionSpec) -> str:
        raise aliases_unsupported()

    def switch_alias(self, name: str, physical: str) -> str | None:
        raise aliases_unsupported()

    # -- points ------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        edge_points = [
            qe.Point(id=str(p.id), vector=p.vector.astype(np.float32).tolist(), payload=p.payload)
            for p in points
        ]
        with self._mutex:
            shard = self._shard(name)
            shard.update(qe.UpdateOperation.upsert_points(edge_points))
            shard.flush()

    def delete(self, name: str, ids: Iterable[UUID]) -> None:
        id_list: list[str | int | UUID] = [str(i) for i in ids]
        if not id_list:
            return
        with self._mutex:
            shard = self._shard(name)
            shard.update(qe.UpdateOperation.delete_points(id_list))
            shard.flush()

    def set_payload(self, name: str, payloads: Mapping[UUID, dict[str, Any]]) -> None:
        if not payloads:
            return
        with self._mutex:
            shard = self._shard(name)
            present = {
                str(r.id)
                for r in shard.retrieve(
                    [str(i) for i in payloads], with_payload=False, with_vector=False
                )
            }
            for point_id, payload in payloads.items():
                if str(point_id) in present:
                    shard.update(qe.UpdateOperation.set_payload([str(point_id)], payload))
            shard.flush()

    def search(
        self,
        name: str,
        vector: Vector,
        *,
        limit: int,
        offset: int = 0,
        search_filter: SearchFilter | None = None,
        min_score: float | None = None,
    ) -> list[VectorHit]:
        request = qe.QueryRequest(
            limit=limit,
            offset=offset or None,
            query=qe.Query.Nearest(vector.astype(np.float32).tolist()),
            filter=_edge_filter(search_filter),
            score_threshold=min_score,
            with_payload=False,
            with_vector=False,
            # INT8 alone loses ~10% recall@10: rescore with oversampling (docs/design.md).
            params=qe.SearchParams(
                quantization=qe.QuantizationSearchParams(
                    rescore=True, oversampling=self.oversampling
                )
            ),
        )
        with self._mutex:
            scored = self._shard(name).query(request)
        return [VectorHit(id=UUID(str(p.id)), score=float(p.score)) for p in scored]

    def retrieve_vectors(self, name: str, ids: Sequence[UUID]) -> dict[UUID, Vector]:
        if not ids:
            return {}
        with self._mutex:
            records = self._shard(name).retrieve(
                [str(i) for i in ids], with_payload=False, with_vector=True
            )
        out: dict[UUID, Vector] = {}
        for record in records:
            vec: Any = record.vector
            if isinstance(vec, dict):  # named-vector shape: the default vector is ""
                vec = vec.get("")
            if vec is not None:
                out[UUID(str(record.id))] = np.asarray(vec, dtype=np.float32)
        return out

    def point_ids(self, name: str) -> set[UUID]:
        ids: set[UUID] = set()
        offset: Any = None
        with self._mutex:
            shard = self._shard(name)
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=_SCROLL_PAGE, with_payload=False, with_vector=False
                    )
                )
                ids.update(UUID(str(r.id)) for r in records)
                if offset is None:
                    return ids

    def count(self, name: str) -> int:
        with self._mutex:
            return int(self._shard(name).count(qe.CountRequest(exact=True)))

    def optimize(self, name: str) -> None:
        with self._mutex:
            self._shard(name).optimize()

    def close(self) -> None:
        with self._mutex:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def _acquire_lock(path: Path, timeout_s: float) -> FileLock:
    lock = FileLock(path, timeout=timeout_s, thread_local=False)
    pid_file = path.with_name(path.name + ".pid")
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = pid_file.read_text().strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise VectorStoreLocked(
            f"the embedded vector store at {path.parent} is in use by another process "
            f"(pid {holder}). Stop that process (or wait for it), or set QDRANT_URL to a "
            "Qdrant server so several processes can share the vectors."
        ) from None
    pid_file.write_text(str(os.getpid()))
    return lock


def _edge_filter(search_filter: SearchFilter | None) -> qe.Filter | None:
    if search_filter is None or search_filter.is_empty:
        return None
    must: list[Any] = []
    if search_filter.format:
        must.append(
            qe.FieldCondition(key=PayloadField.FORMAT, match=qe.MatchValue(search_filter.format))
        )
    if search_filter.taken_after or search_filter.taken_before:
        must.append(
            qe.FieldCondition(
                key=PayloadField.TAKEN_TS,
                range=qe.RangeFloat(
                    gte=payload_timestamp(search_filter.taken_after),
                    lt=payload_timestamp(search_filter.taken_before),
                ),
            )
        )
    for key, values in (
        (PayloadField.PEOPLE, search_filter.people),
        (PayloadField.TAGS, search_filter.tags),
    ):
        must.extend(qe.FieldCondition(key=key, match=qe.MatchValue(v)) for v in values)
    if search_filter.people_any:
        must.append(
            qe.FieldCondition(
                key=PayloadField.PEOPLE, match=qe.MatchAny(list(search_filter.people_any))
            )
        )
    if search_filter.include_ids:
        must.append(qe.HasIdCondition({str(i) for i in search_filter.include_ids}))
    must_not: list[Any] = []
    if search_filter.exclude_ids:
        must_not.append(qe.HasIdCondition({str(i) for i in search_filter.exclude_ids}))
    return qe.Filter(must=must or None, must_not=must_not or None)
