"""Near-duplicate groups (re-saves, resizes, light crops, burst shots) from stored vectors.

Nothing is re-encoded. The embedded asset ids are read from the DB a page at a time;
each page's vectors are fetched from the store, and each vector's neighbours at or above
the threshold are found by the store's own (HNSW) search. Pairs are joined with a
union-find, so memory grows with the number of assets that *have* a near-duplicate,
never with the whole library's vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from uuid import UUID

import numpy as np

from image_search_service.context import ServiceContext
from image_search_service.core.config import ModelKey
from image_search_service.core.errors import InvalidRequest
from image_search_service.core.specs import duplicate_threshold
from image_search_service.db import repository as repo

PAGE_SIZE = 256
# Neighbours looked at per photo: a burst of more near-identical shots than this is
# still joined into one group, through the shots' own neighbours.
MAX_NEIGHBOURS = 32
MAX_GROUPS_LIMIT = 10_000


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[UUID, UUID] = {}

    def find(self, item: UUID) -> UUID:
        parent = self.parent.setdefault(item, item)
        if parent != item:
            root = self.find(parent)
            self.parent[item] = root
            return root
        return item

    def union(self, a: UUID, b: UUID) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # deterministic roots


@dataclass(frozen=True)
class DuplicateMember:
    asset_id: UUID
    path: str
    width: int | None
    height: int | None
    size_bytes: int


@dataclass(frozen=True)
class DuplicateGroup:
    members: list[DuplicateMember]
    min_score: float  # the pair_scores link that joined the group

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def assets(self) -> list[DuplicateMember]:
        return self.members


@dataclass
class DuplicateReport:
    model: ModelKey
    collection: str
    threshold: float
    scanned: int = 0
    groups: list[DuplicateGroup] = field(default_factory=list)
    total_groups: int = 0
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        """Photos beyond the first of each returned group."""
        return sum(len(g.members) - 1 for g in self.groups)


def find_duplicates(
    ctx: ServiceContext,
    *,
    model: ModelKey,
    threshold: float | None = None,
    limit: int = 1000,
    page_size: int = PAGE_SIZE,
) -> DuplicateReport:
    """Groups of near-identical photos, biggest first (at most ``limit`` groups)."""
    if threshold is None:
        threshold = duplicate_threshold(ctx.settings, model)
    if not 0.0 < threshold <= 1.0:
        raise InvalidRequest("threshold must be in (0, 1] (cosine similarity)")
    if not 1 <= limit <= MAX_GROUPS_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_GROUPS_LIMIT}")
    started = time.perf_counter()
    spec = ctx.spec(model)
    ctx.verify_collection(model)
    report = DuplicateReport(model=model, collection=spec.collection, threshold=threshold)
    groups = _UnionFind()
    pair_scores: dict[tuple[UUID, UUID], float] = {}
    after: UUID | None = None
    while True:
        with ctx.transaction() as session:
            ids = repo.embedded_ids_page(session, spec, after=after, limit=page_size)
        if not ids:
            break
        after = ids[-1]
        vectors = ctx.store.retrieve_vectors(spec.collection, ids)
        for asset_id in ids:
            vector = vectors.get(asset_id)
            if vector is None:
                continue  # recorded as done but not stored: status reports that
            report.scanned += 1
            hits = ctx.store.search(
                spec.collection,
                np.asarray(vector, dtype=np.float32),
                limit=MAX_NEIGHBOURS + 1,
                min_score=threshold,
            )
            for hit in hits:
                if hit.id == asset_id or hit.score < threshold:
                    continue
                groups.union(asset_id, hit.id)
                pair = (min(asset_id, hit.id), max(asset_id, hit.id))
                pair_scores[pair] = max(pair_scores.get(pair, -1.0), hit.score)

    members: dict[UUID, list[UUID]] = {}
    for item in groups.parent:
        members.setdefault(groups.find(item), []).append(item)
    group_score: dict[UUID, float] = {}
    for (a, _b), score in pair_scores.items():
        root = groups.find(a)
        group_score[root] = min(group_score.get(root, 1.0), score)
    ordered = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    report.total_groups = len(ordered)
    with ctx.transaction() as session:
        for root, ids in ordered[:limit]:
            assets = repo.get_assets(session, ids)
            rows = [
                DuplicateMember(a.id, a.path, a.width, a.height, a.size_bytes)
                for a in sorted(assets.values(), key=lambda a: a.path)
            ]
            if len(rows) > 1:  # an asset deleted meanwhile leaves a smaller group
                report.groups.append(
                    DuplicateGroup(rows, round(group_score.get(root, threshold), 6))
                )
    report.seconds = round(time.perf_counter() - started, 3)
    return report
