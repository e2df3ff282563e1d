"""Qdrant server adapter through qdrant-client (``QDRANT_URL``).

Also runs against qdrant-client's in-process mode (``":memory:"``) in tests; that
mode ignores HNSW, quantization, shards and replicas but keeps the API, the metadata
stamp and aliases.

A model's collection is an alias of a versioned physical collection (``<name>_v1``,
``_v2`` ...): a rebuild fills the next version while searches read the current one, then
moves the alias in one request (``switch_alias``). A collection made before aliases keeps
its plain name until its first rebuild.

``path:/dir`` is the same local mode persisted on disk: one process at a time (it locks
the folder), which lets tests hand the vectors from a worker subprocess to the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar
from uuid import UUID

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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
    check_identity,
)
from image_search_service.vector.schema import (
    FLOAT_INDEXES,
    KEYWORD_INDEXES,
    QUANTIZATION,
    QUANTIZATION_ALWAYS_RAM,
    QUANTIZATION_QUANTILE,
    CollectionSpec,
    PayloadField,
    Placement,
    payload_timestamp,
    version_name,
    version_of,
)

T = TypeVar("T")
_SCROLL_PAGE = 1024


class QdrantServerStore:
    kind = "qdrant"

    def __init__(
        self, client: QdrantClient, *, oversampling: float = 2.0, local: bool = False
    ) -> None:
        self.client = client
        self.oversampling = oversampling
        # In-process mode is brute force: payload indexes and search params do nothing there.
        self.capabilities = StoreCapabilities(
            applies_index_config=not local,
            payload_indexes=not local,
            shared=not local,
            indexes_on_optimize=False,
            aliases=True,
            cluster=not local,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        oversampling: float = 2.0,
        lock_timeout_s: float = 0.0,
    ) -> QdrantServerStore:
        if url == ":memory:":
            return cls(QdrantClient(location=":memory:"), oversampling=oversampling, local=True)
        if url.startswith("path:"):
            client = _open_local(url.removeprefix("path:"), lock_timeout_s)
            return cls(client, oversampling=oversampling, local=True)
        return cls(QdrantClient(url=url, api_key=api_key, timeout=30), oversampling=oversampling)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ResponseHandlingException, ConnectionError, TimeoutError) as exc:
            raise VectorStoreUnavailable(f"Qdrant is unreachable: {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                raise CollectionMissing(f"collection not found: {exc}") from exc
            raise VectorStoreUnavailable(f"Qdrant error {exc.status_code}: {exc}") from exc

    def _exists(self, name: str) -> bool:
        return self._call(lambda: self.client.collection_exists(name))

    def _get(self, name: str) -> qm.CollectionInfo:
        """One round trip; a missing collection is CollectionMissing (404 on a server,
        ValueError in local mode)."""
        try:
            return self._call(lambda: self.client.get_collection(name))
        except ValueError as exc:
            raise CollectionMissing(f"collection {name!r} does not exist") from exc

    def collection_stamp(self, name: str) -> ModelIdentity | None:
        model = (self._get(name).config.metadata or {}).get("model")
        return ModelIdentity.from_dict(model) if isinstance(model, dict) else None

    def ensure_collection(self, spec: CollectionSpec) -> bool:
        if self._exists(spec.name):  # a collection, or an alias of one
            check_identity(spec.name, self.collection_stamp(spec.name), spec.identity)
            self._ensure_indexes(spec.name)
            return False
        # Always version 1 here, so processes creating it at once agree on one collection
        # (and one left by a crash before its alias is taken up); the alias comes last.
        physical = version_name(spec.name, 1)
        if not self._exists(physical):
            try:
                self._create(physical, spec)
            except (VectorStoreUnavailable, ValueError):
                if not self._exists(physical):  # not another process's creation: an error
                    raise
        check_identity(physical, self.collection_stamp(physical), spec.identity)
        self._ensure_indexes(physical)
        self._call(
            lambda: self.client.update_collection_aliases(
                [
                    qm.CreateAliasOperation(
                        create_alias=qm.CreateAlias(collection_name=physical, alias_name=spec.name)
                    )
                ]
            )
        )
        return True

    def _create(self, physical: str, spec: CollectionSpec) -> None:
        self._call(lambda: self.client.create_collection(physical, **create_request(spec)))
        self._ensure_indexes(physical)

    # -- aliases ---------------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        response = self._call(lambda: self.client.get_aliases())
        return {a.alias_name: a.collection_name for a in response.aliases}

    def alias_target(self, name: str) -> str | None:
        return self._aliases().get(name)

    def create_version(self, spec: CollectionSpec) -> str:
        names = [c.name for c in self._call(lambda: self.client.get_collections()).collections]
        versions = [v for n in names if (v := version_of(spec.name, n)) is not None]
        physical = version_name(spec.name, max(versions, default=0) + 1)
        self._create(physical, spec)
        return physical

    def switch_alias(self, name: str, physical: str) -> str | None:
        previous = self.alias_target(name)
        if previous is None and self._exists(name):
            # Made before aliases: the name is taken by the collection itself.
            self._call(lambda: self.client.delete_collection(name))
        operations: list[qm.CreateAliasOperation | qm.DeleteAliasOperation] = []
        if previous is not None:
            operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=name)))
        operations.append(
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=physical, alias_name=name)
            )
        )
        # One request: Qdrant applies the alias changes together, so a search reads the
        # old collection or the new one, never neither.
        self._call(lambda: self.client.update_collection_aliases(operations))
        return previous

    def _ensure_indexes(self, name: str) -> None:
        """Payload indexes of the recipe; a collection made by an older version gets the
        ones it lacks (filters work without them, only slower)."""
        if not self.capabilities.payload_indexes:
            return
        existing = set(self._get(name).payload_schema)
        for field_name, schema in [
            *((f, qm.PayloadSchemaType.KEYWORD) for f in KEYWORD_INDEXES),
            *((f, qm.PayloadSchemaType.FLOAT) for f in FLOAT_INDEXES),
        ]:
            if field_name in existing:
                continue
            self._call(
                lambda f=field_name, s=schema: self.client.create_payload_index(  # type: ignore[misc]
                    name, field_name=f, field_schema=s
                )
            )

    def has_collection(self, name: str) -> bool:
        return self._exists(name)

    def collection_info(self, name: str) -> CollectionInfo | None:
        try:
            info = self._get(name)
        except CollectionMissing:
            return None
        vectors = info.config.params.vectors
        assert isinstance(vectors, qm.VectorParams)
        quant = info.config.quantization_config
        quant_name = (
            QUANTIZATION
            if isinstance(quant, qm.ScalarQuantization) and quant.scalar.type == qm.ScalarType.INT8
            else (type(quant).__name__ if quant is not None else None)
        )
        metadata = info.config.metadata or {}
        model = metadata.get("model")
        params = info.config.params
        return CollectionInfo(
            name=name,
            identity=ModelIdentity.from_dict(model) if isinstance(model, dict) else None,
            points=self.count(name),
            dim=vectors.size,
            distance=str(vectors.distance.value).lower(),
            quantization=quant_name,
            hnsw_m=info.config.hnsw_config.m,
            hnsw_ef_construct=info.config.hnsw_config.ef_construct,
            runtimes=tuple(metadata.get("runtimes") or ()),
            physical=self.alias_target(name),
            # In-process mode drops these (None): nothing to compare there.
            placement=None
            if params.shard_number is None
            else Placement(
                shards=params.shard_number,
                replication_factor=params.replication_factor or 1,
                write_consistency=params.write_consistency_factor or 1,
                on_disk=bool(vectors.on_disk) and bool(info.config.hnsw_config.on_disk),
                on_disk_payload=bool(params.on_disk_payload),
            ),
        )

    def note_runtime(self, name: str, runtime: str) -> None:
        info = self._get(name)
        runtimes = list((info.config.metadata or {}).get("runtimes") or [])
        if runtime not in runtimes:
            # Collection metadata updates merge key by key: the model stamp stays.
            self._call(
                lambda: self.client.update_collection(
                    name, metadata={"runtimes": [*runtimes, runtime]}
                )
            )

    def drop_collection(self, name: str) -> bool:
        physical = self.alias_target(name)
        if physical is None:
            return bool(self._call(lambda: self.client.delete_collection(name)))
        self._call(
            lambda: self.client.update_collection_aliases(
                [qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=name))]
            )
        )
        return bool(self._call(lambda: self.client.delete_collection(physical)))

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=str(p.id), vector=p.vector.astype(np.float32).tolist(), payload=p.payload
            )
            for p in points
        ]
        self._call(lambda: self.client.upsert(name, points=structs, wait=True))

    def delete(self, name: str, ids: Iterable[UUID]) -> None:
        id_list: list[qm.ExtendedPointId] = [str(i) for i in ids]
        if id_list:
            self._call(
                lambda: self.client.delete(
                    name, points_selector=qm.PointIdsList(points=id_list), wait=True
                )
            )

    def set_payload(self, name: str, payloads: Mapping[UUID, dict[str, Any]]) -> None:
        if not payloads:
            return
        present = {
            str(r.id)
            for r in self._call(
                lambda: self.client.retrieve(
                    name, ids=[str(i) for i in payloads], with_payload=False, with_vectors=False
                )
            )
        }
        for point_id, payload in payloads.items():
            if str(point_id) in present:
                self._call(
                    lambda p=payload, i=point_id: self.client.set_payload(  # type: ignore[misc]
                        name, payload=p, points=[str(i)], wait=True
                    )
                )

    @property
    def _search_params(self) -> qm.SearchParams:
        # INT8 alone loses ~10% recall@10: rescore with oversampling (docs/design.md).
        return qm.SearchParams(
            quantization=qm.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        )

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
        response = self._call(
            lambda: self.client.query_points(
                name,
                query=vector.astype(np.float32).tolist(),
                limit=limit,
                offset=offset or None,
                query_filter=_qdrant_filter(search_filter),
                score_threshold=min_score,
                with_payload=False,
                search_params=(
                    self._search_params if self.capabilities.applies_index_config else None
                ),
            )
        )
        return [VectorHit(id=UUID(str(p.id)), score=float(p.score)) for p in response.points]

    def retrieve_vectors(self, name: str, ids: Sequence[UUID]) -> dict[UUID, Vector]:
        if not ids:
            return {}
        records = self._call(
            lambda: self.client.retrieve(
                name, ids=[str(i) for i in ids], with_payload=False, with_vectors=True
            )
        )
        out: dict[UUID, Vector] = {}
        for record in records:
            if isinstance(record.vector, list):
                out[UUID(str(record.id))] = np.asarray(record.vector, dtype=np.float32)
        return out

    def point_ids(self, name: str) -> set[UUID]:
        ids: set[UUID] = set()
        offset: Any = None
        while True:
            records, offset = self._call(
                lambda o=offset: self.client.scroll(  # type: ignore[misc]
                    name, limit=_SCROLL_PAGE, offset=o, with_payload=False, with_vectors=False
                )
            )
            ids.update(UUID(str(r.id)) for r in records)
            if offset is None:
                return ids

    def count(self, name: str) -> int:
        return int(self._call(lambda: self.client.count(name, exact=True)).count)

    def optimize(self, name: str) -> None:
        """The server indexes in the background; nothing to do."""

    def close(self) -> None:
        self.client.close()


def create_request(spec: CollectionSpec) -> dict[str, Any]:
    """The arguments of ``create_collection`` for ``spec`` (in-process mode drops the
    quantization and placement; a server applies them all)."""
    placement = spec.placement
    return {
        "vectors_config": qm.VectorParams(
            size=spec.dim, distance=qm.Distance.COSINE, on_disk=placement.on_disk
        ),
        "hnsw_config": qm.HnswConfigDiff(
            m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct, on_disk=placement.on_disk
        ),
        # Kept in RAM even with on-disk vectors: the search walks the INT8 copy and
        # reads full vectors from disk only to rescore the oversampled candidates.
        "quantization_config": qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8,
                quantile=QUANTIZATION_QUANTILE,
                always_ram=QUANTIZATION_ALWAYS_RAM,
            )
        ),
        "shard_number": placement.shards,
        "replication_factor": placement.replication_factor,
        "write_consistency_factor": placement.write_consistency,
        "on_disk_payload": placement.on_disk_payload,
        "metadata": {"model": asdict(spec.identity)},
    }


def _open_local(path: str, timeout_s: float) -> QdrantClient:
    """qdrant-client's on-disk local mode; waits for the folder lock like the Edge store."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return QdrantClient(path=path)
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise VectorStoreLocked(
                    f"the local Qdrant folder {path} is in use by another process; stop it (or "
                    "wait for it), or set QDRANT_URL to a Qdrant server so several processes "
                    "can share the vectors."
                ) from None
            time.sleep(0.2)


def _qdrant_filter(search_filter: SearchFilter | None) -> qm.Filter | None:
    if search_filter is None or search_filter.is_empty:
        return None
    must: list[qm.Condition] = []
    if search_filter.format:
        must.append(
            qm.FieldCondition(
                key=PayloadField.FORMAT, match=qm.MatchValue(value=search_filter.format)
            )
        )
    if search_filter.taken_after or search_filter.taken_before:
        must.append(
            qm.FieldCondition(
                key=PayloadField.TAKEN_TS,
                range=qm.Range(
                    gte=payload_timestamp(search_filter.taken_after),
                    lt=payload_timestamp(search_filter.taken_before),
                ),
            )
        )
    for key, values in (
        (PayloadField.PEOPLE, search_filter.people),
        (PayloadField.TAGS, search_filter.tags),
    ):
        must.extend(qm.FieldCondition(key=key, match=qm.MatchValue(value=v)) for v in values)
    if search_filter.people_any:
        must.append(
            qm.FieldCondition(
                key=PayloadField.PEOPLE, match=qm.MatchAny(any=list(search_filter.people_any))
            )
        )
    if search_filter.include_ids:
        must.append(qm.HasIdCondition(has_id=[str(i) for i in search_filter.include_ids]))
    must_not: list[qm.Condition] = []
    if search_filter.exclude_ids:
        must_not.append(qm.HasIdCondition(has_id=[str(i) for i in search_filter.exclude_ids]))
    return qm.Filter(must=must or None, must_not=must_not or None)
