"""What every collection and every point looks like, whatever the store.

The collection recipe (cosine distance, HNSW, INT8 scalar quantization kept in RAM,
the model stamp, where the data lives: shards, replicas, disk or RAM) and the payload
each point carries are defined here once; the adapters translate them into their own
API, and nothing else spells a field name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from image_search_service.core.config import Settings
from image_search_service.core.specs import ModelIdentity, ModelSpec
from image_search_service.images.loading import ImageMeta

DISTANCE = "cosine"
QUANTIZATION = "int8"
QUANTIZATION_QUANTILE = 0.99
QUANTIZATION_ALWAYS_RAM = True
# Below this many points a filtered search scans instead of walking the graph.
FULL_SCAN_THRESHOLD = 10_000


@dataclass(frozen=True)
class Placement:
    """Where a collection's data lives (QDRANT_SHARDS ... QDRANT_ON_DISK_PAYLOAD).

    Fixed when the collection is created: changing it means a new collection
    (``image-search reembed rebuild``). Shards, replicas and write consistency need a
    Qdrant server; on-disk storage is applied by Qdrant Edge too.
    """

    shards: int = 1
    replication_factor: int = 1
    write_consistency: int = 1
    # Full vectors and the HNSW graph memory-mapped from disk; the INT8 copy stays in RAM
    # (QUANTIZATION_ALWAYS_RAM), so a search reads the disk only to rescore.
    on_disk: bool = False
    on_disk_payload: bool = True

    @property
    def clustered(self) -> bool:
        """Asks for something only a Qdrant server (a cluster) does."""
        return (self.shards, self.replication_factor, self.write_consistency) != (1, 1, 1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Placement:
        return cls(
            shards=settings.qdrant_shards,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency=settings.qdrant_write_consistency,
            on_disk=settings.qdrant_on_disk,
            on_disk_payload=settings.qdrant_on_disk_payload,
        )


@dataclass(frozen=True)
class CollectionSpec:
    """How a collection is made: the recipe above, HNSW parameters, where the data
    lives, and the model stamp."""

    name: str
    identity: ModelIdentity
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    placement: Placement = Placement()

    @property
    def dim(self) -> int:
        return self.identity.dim

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.name,
            "dim": self.dim,
            "distance": DISTANCE,
            "quantization": {
                "type": QUANTIZATION,
                "quantile": QUANTIZATION_QUANTILE,
                "always_ram": QUANTIZATION_ALWAYS_RAM,
            },
            "hnsw": {"m": self.hnsw_m, "ef_construct": self.hnsw_ef_construct},
            "placement": asdict(self.placement),
            "model_identity": asdict(self.identity),
        }


def collection_spec(settings: Settings, spec: ModelSpec) -> CollectionSpec:
    return CollectionSpec(
        name=spec.collection,
        identity=spec.identity,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construct=settings.hnsw_ef_construct,
        placement=Placement.from_settings(settings),
    )


def version_name(name: str, version: int) -> str:
    """The physical collection behind alias ``name`` (stores with aliases): a rebuild
    fills the next version and moves the alias to it."""
    return f"{name}_v{version}"


def version_of(name: str, physical: str) -> int | None:
    """The version number of ``physical`` if it is one of ``name``'s versions."""
    prefix = f"{name}_v"
    suffix = physical.removeprefix(prefix)
    return int(suffix) if physical.startswith(prefix) and suffix.isdigit() else None


class PayloadField:
    """Names of the payload fields every point carries."""

    ASSET_ID = "asset_id"
    FORMAT = "format"  # keyword: JPEG, PNG, WEBP
    TAKEN_TS = "taken_ts"  # float: capture time, epoch seconds (UTC)
    WIDTH = "width"
    HEIGHT = "height"
    PEOPLE = "people"  # keyword[]: normalised names of the people in the photo
    TAGS = "tags"  # keyword[]: normalised keywords


# Fields a payload index is made for, by type (filters run inside HNSW).
KEYWORD_INDEXES = (PayloadField.FORMAT, PayloadField.PEOPLE, PayloadField.TAGS)
FLOAT_INDEXES = (PayloadField.TAKEN_TS,)


def point_payload(
    asset_id: UUID,
    meta: ImageMeta,
    *,
    people: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        PayloadField.ASSET_ID: str(asset_id),
        PayloadField.FORMAT: meta.format,
        PayloadField.TAKEN_TS: payload_timestamp(meta.taken_at),
        PayloadField.WIDTH: meta.width,
        PayloadField.HEIGHT: meta.height,
        **label_payload(people=people, tags=tags),
    }


def label_payload(*, people: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
    """The people and tags part of a payload (normalised keys), set again on an edit."""
    return {PayloadField.PEOPLE: sorted(set(people)), PayloadField.TAGS: sorted(set(tags))}


def payload_timestamp(value: datetime | None) -> float | None:
    """Capture times are stored as epoch seconds; naive EXIF times are read as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
