"""The vector-store interface every adapter implements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import numpy as np
import numpy.typing as npt

from image_search_service.core.errors import ConfigError, ModelMismatch
from image_search_service.core.specs import ModelIdentity
from image_search_service.vector.schema import DISTANCE, QUANTIZATION, CollectionSpec, Placement

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StoreCapabilities:
    """What a store really does with the collection recipe, so callers ask instead of
    checking which adapter they hold."""

    # INT8 quantization and HNSW are applied, not just accepted (qdrant-client's
    # in-process mode accepts both and searches by brute force).
    applies_index_config: bool
    # Payload filters run on server-side payload indexes.
    payload_indexes: bool
    # Several processes may open it at once (a server); embedded stores lock one process.
    shared: bool
    # The HNSW graph is built only when optimize() is called (Qdrant Edge).
    indexes_on_optimize: bool
    # Collection aliases: a model's collection is an alias of a versioned physical one, so
    # a rebuild fills a new version and readers move in one atomic alias switch.
    aliases: bool = False
    # Shards, replicas and write consistency are applied (a Qdrant server).
    cluster: bool = False


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    identity: ModelIdentity | None
    points: int
    dim: int
    distance: str
    quantization: str | None
    hnsw_m: int | None
    hnsw_ef_construct: int | None
    # Provenance, not identity: which runtimes made its vectors (e.g. torch-fp32, onnx-int8).
    runtimes: tuple[str, ...] = ()
    # The physical collection when ``name`` is an alias (stores with aliases).
    physical: str | None = None
    # Where its data lives, as the store reports it (None: not recorded, e.g. made by an
    # older version).
    placement: Placement | None = None

    def mismatches(self, spec: CollectionSpec, capabilities: StoreCapabilities) -> list[str]:
        """What differs from the settings (empty when the collection matches); index
        settings a store does not apply are not compared."""
        problems = []
        if self.identity != spec.identity:
            found = self.identity.describe() if self.identity else "no model stamp"
            problems.append(f"filled by {found}, configured {spec.identity.describe()}")
        if self.dim != spec.dim:
            problems.append(f"dimension {self.dim}, configured {spec.dim}")
        if self.distance != DISTANCE:
            problems.append(f"distance {self.distance}, expected {DISTANCE}")
        if not capabilities.applies_index_config:
            return problems
        if self.quantization != QUANTIZATION:
            problems.append(f"quantization {self.quantization}, expected {QUANTIZATION}")
        if (self.hnsw_m, self.hnsw_ef_construct) != (spec.hnsw_m, spec.hnsw_ef_construct):
            problems.append(
                f"HNSW m={self.hnsw_m} ef_construct={self.hnsw_ef_construct}, "
                f"configured m={spec.hnsw_m} ef_construct={spec.hnsw_ef_construct}"
            )
        return problems + self._placement_mismatches(spec.placement, capabilities)

    def _placement_mismatches(
        self, wanted: Placement, capabilities: StoreCapabilities
    ) -> list[str]:
        """Placement is fixed at creation: a difference means the setting is not in force
        until the collection is rebuilt (``image-search reembed rebuild``)."""
        if self.placement is None:
            return []
        fields = ["on_disk", "on_disk_payload"]
        if capabilities.cluster:
            fields = ["shards", "replication_factor", "write_consistency", *fields]
        return [
            f"{field} {getattr(self.placement, field)}, configured {getattr(wanted, field)} "
            "(fixed when the collection was made: rebuild it to apply)"
            for field in fields
            if getattr(self.placement, field) != getattr(wanted, field)
        ]


@dataclass(frozen=True)
class VectorPoint:
    id: UUID
    vector: Vector
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchFilter:
    """Payload filters search supports; fields mirror the point payload."""

    taken_after: datetime | None = None
    taken_before: datetime | None = None
    format: str | None = None
    exclude_ids: tuple[UUID, ...] = ()
    # Normalised names (images.metadata.normalise_name): every one must be in the photo.
    people: tuple[str, ...] = ()
    # ... at least one of these must be.
    people_any: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # every one must be set
    # Only these points (full-text matches being scored visually); empty: no restriction.
    include_ids: tuple[UUID, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.taken_after
            or self.taken_before
            or self.format
            or self.exclude_ids
            or self.people
            or self.people_any
            or self.tags
            or self.include_ids
        )


@dataclass(frozen=True)
class VectorHit:
    id: UUID
    score: float


def check_identity(name: str, stamped: ModelIdentity | None, expected: ModelIdentity) -> None:
    """Invariant 3: never mix models in one collection."""
    if stamped != expected:
        found = stamped.describe() if stamped else "an unstamped model"
        raise ModelMismatch(
            f"collection {name!r} was filled by {found}, but the configured model is "
            f"{expected.describe()}. Point the setting back at the original model, use another "
            "collection name, or drop the collection and re-embed."
        )


class VectorStore(Protocol):
    """What services need from a vector database. Point id = asset UUID."""

    kind: str

    @property
    def capabilities(self) -> StoreCapabilities: ...

    def ensure_collection(self, spec: CollectionSpec) -> bool:
        """Create the collection if missing (returns True) or verify its model stamp."""
        ...

    def has_collection(self, name: str) -> bool:
        """Cheap existence check (no point count)."""
        ...

    def collection_stamp(self, name: str) -> ModelIdentity | None:
        """The model stamp (None: unstamped); CollectionMissing if there is no collection.
        One round trip on a server: what a search checks before it runs."""
        ...

    def collection_info(self, name: str) -> CollectionInfo | None:
        """Everything status shows, point count included; None if there is no collection."""
        ...

    def drop_collection(self, name: str) -> bool:
        """Remove the collection (an alias: the alias and the collection it names)."""
        ...

    # -- aliases (``capabilities.aliases``; the other stores raise ConfigError) ---------
    def alias_target(self, name: str) -> str | None:
        """The physical collection alias ``name`` points at; None if it is no alias."""
        ...

    def create_version(self, spec: CollectionSpec) -> str:
        """Create the next versioned physical collection for ``spec`` (stamped, with its
        payload indexes) without pointing any alias at it; returns its name."""
        ...

    def switch_alias(self, name: str, physical: str) -> str | None:
        """Point alias ``name`` at ``physical`` in one atomic step and return the
        collection it named before (None if none). A plain collection called ``name``
        (made before aliases) is deleted first: that one switch is not atomic."""
        ...

    def note_runtime(self, name: str, runtime: str) -> None:
        """Add ``runtime`` to the runtimes recorded in the collection's stamp (provenance
        only: a torch -> onnx switch is not a model mismatch)."""
        ...

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None: ...

    def delete(self, name: str, ids: Iterable[UUID]) -> None: ...

    def set_payload(self, name: str, payloads: Mapping[UUID, dict[str, Any]]) -> None:
        """Merge these fields into the payloads of existing points (missing points are
        skipped): how an edit reaches the filters without re-embedding."""
        ...

    def search(
        self,
        name: str,
        vector: Vector,
        *,
        limit: int,
        offset: int = 0,
        search_filter: SearchFilter | None = None,
        min_score: float | None = None,
    ) -> list[VectorHit]: ...

    def retrieve_vectors(self, name: str, ids: Sequence[UUID]) -> dict[UUID, Vector]: ...

    def point_ids(self, name: str) -> set[UUID]: ...

    def count(self, name: str) -> int: ...

    def optimize(self, name: str) -> None:
        """After bulk writes: build what the store builds only when asked (see
        ``capabilities.indexes_on_optimize``); a no-op elsewhere."""
        ...

    def close(self) -> None: ...


def aliases_unsupported() -> ConfigError:
    """What a store without aliases raises from the alias methods."""
    return ConfigError(
        "Qdrant Edge (the embedded store) has no collection aliases, so a collection cannot "
        "be rebuilt beside the one searches read: set QDRANT_URL to a Qdrant server, or "
        "drop the collection and re-embed (`image-search create-collection --drop`)"
    )


def verify_collection(store: VectorStore, spec: CollectionSpec) -> None:
    """Raise CollectionMissing or ModelMismatch unless the collection fits the spec."""
    check_identity(spec.name, store.collection_stamp(spec.name), spec.identity)
