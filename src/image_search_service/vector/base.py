"""The vector-store interface every adapter implements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import numpy as np
import numpy.typing as npt

from image_search_service.core.errors import ModelMismatch
from image_search_service.core.specs import ModelIdentity

Vector = npt.NDArray[np.float32]
QUANTIZATION_QUANTILE = 0.99


@dataclass(frozen=True)
class CollectionSpec:
    """How a collection is made: cosine, HNSW, INT8 scalar quantization, model stamp."""

    name: str
    identity: ModelIdentity
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100

    @property
    def dim(self) -> int:
        return self.identity.dim


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.name,
            "points": self.points,
            "dim": self.dim,
            "distance": self.distance,
            "quantization": self.quantization,
            "hnsw": {"m": self.hnsw_m, "ef_construct": self.hnsw_ef_construct},
            "model_identity": self.identity.as_dict() if self.identity else None,
            "runtimes": list(self.runtimes),
        }

    def mismatches(self, spec: CollectionSpec) -> list[str]:
        """What differs from the settings (empty when the collection matches)."""
        problems = []
        if self.identity != spec.identity:
            found = self.identity.describe() if self.identity else "no model stamp"
            problems.append(f"filled by {found}, configured {spec.identity.describe()}")
        if self.dim != spec.dim:
            problems.append(f"dimension {self.dim}, configured {spec.dim}")
        if self.quantization != "int8":
            problems.append(f"quantization {self.quantization}, expected int8")
        if (self.hnsw_m, self.hnsw_ef_construct) != (spec.hnsw_m, spec.hnsw_ef_construct):
            problems.append(
                f"HNSW m={self.hnsw_m} ef_construct={self.hnsw_ef_construct}, "
                f"configured m={spec.hnsw_m} ef_construct={spec.hnsw_ef_construct}"
            )
        return problems


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

    @property
    def is_empty(self) -> bool:
        return not (self.taken_after or self.taken_before or self.format or self.exclude_ids)


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

    def ensure_collection(self, spec: CollectionSpec) -> bool:
        """Create the collection if missing (returns True) or verify its model stamp."""
        ...

    def has_collection(self, name: str) -> bool:
        """Cheap existence check (no point count)."""
        ...

    def collection_info(self, name: str) -> CollectionInfo | None: ...

    def verify_collection(self, spec: CollectionSpec) -> None:
        """Raise CollectionMissing or ModelMismatch unless the collection fits the spec."""
        ...

    def drop_collection(self, name: str) -> bool: ...

    def note_runtime(self, name: str, runtime: str) -> None:
        """Add ``runtime`` to the runtimes recorded in the collection's stamp (provenance
        only: a torch -> onnx switch is not a model mismatch)."""
        ...

    def upsert(self, name: str, points: Sequence[VectorPoint]) -> None: ...

    def delete(self, name: str, ids: Iterable[UUID]) -> None: ...

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
        """Build indexes after bulk writes (Edge indexes only when asked)."""
        ...

    def close(self) -> None: ...


def payload_timestamp(value: datetime | None) -> float | None:
    """Capture times are stored as epoch seconds; naive EXIF times are read as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
