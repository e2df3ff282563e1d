"""Create, check, drop and rebuild a model's collection, from the settings.

Creation itself is :meth:`VectorStore.ensure_collection` (cosine, HNSW, INT8, placement,
model stamp); this module adds what an operator needs around it: a dry run that touches
nothing, a check against the settings and the library, an explicit drop, and a rebuild
into a new collection that searches move to in one alias switch (a Qdrant server).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from image_search_service.context import ServiceContext
from image_search_service.core.config import ModelKey, Settings
from image_search_service.core.schemas import ModelIdentityOut
from image_search_service.core.specs import model_spec
from image_search_service.db import repository as repo
from image_search_service.services.library.indexing import ProgressFactory
from image_search_service.services.reembed.batch import DEFAULT_JOB_SIZE
from image_search_service.services.reembed.runner import RunReport, run_in_process
from image_search_service.services.reembed.schemas import CollectionCheckOut
from image_search_service.vector.base import aliases_unsupported
from image_search_service.vector.schema import collection_spec

logger = logging.getLogger(__name__)


def _store_location(settings: Settings) -> dict[str, str]:
    if settings.qdrant_url:
        return {"vector_store": "qdrant", "location": settings.qdrant_url}
    return {"vector_store": "embedded", "location": str(settings.qdrant_dir.resolve())}


def planned_collection(settings: Settings, key: ModelKey) -> dict[str, Any]:
    """What ``create`` would make, computed from the settings alone (opens nothing)."""
    spec = collection_spec(settings, model_spec(settings, key))
    return {"model": key, **_store_location(settings), **spec.describe()}


def check_collection(ctx: ServiceContext, key: ModelKey) -> CollectionCheckOut:
    """Does the collection exist, match the settings, and cover the library?"""
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    with ctx.transaction() as session:
        cov = repo.coverage(session, ctx.spec(key))
    problems = (
        info.mismatches(spec, ctx.store.capabilities)
        if info is not None
        else [f"collection {spec.name!r} does not exist"]
    )
    check = CollectionCheckOut(
        model=key,
        collection=spec.name,
        exists=info is not None,
        ok=info is not None and not problems,
        problems=problems,
        vector_store=ctx.store.kind,
        expected=spec.describe(),
        coverage=round(cov.ratio, 4),
        embedded=cov.done_searchable,
        assets=cov.searchable,
    )
    if info is None:
        return check
    return check.model_copy(
        update={
            "points": info.points,
            "dim": info.dim,
            "distance": info.distance,
            "quantization": info.quantization,
            "hnsw": {"m": info.hnsw_m, "ef_construct": info.hnsw_ef_construct},
            "model_identity": ModelIdentityOut.model_validate(info.identity)
            if info.identity is not None
            else None,
            "runtimes": list(info.runtimes),
            "physical_collection": info.physical,
            "note": None
            if ctx.store.capabilities.applies_index_config
            else "qdrant-client local mode: quantization and HNSW not applied",
        }
    )


def create_collection(ctx: ServiceContext, key: ModelKey) -> CollectionCheckOut:
    """Create it if missing (idempotent); an existing one must match the model stamp."""
    created = ctx.ensure_collection(key)
    return check_collection(ctx, key).model_copy(update={"created": created})


def drop_collection(ctx: ServiceContext, key: ModelKey) -> dict[str, Any]:
    """Remove the collection and this model's per-asset state (which described its points).

    The other model's collection and every asset row stay; re-creating and re-embedding
    rebuilds it from the DB and the files (docs/design.md, invariant 1).
    """
    spec = ctx.collection_spec(key)
    info = ctx.store.collection_info(spec.name)
    # State first: a crash in between leaves points nobody counts (re-embedding overwrites
    # them), never "done" rows for a collection that is gone.
    with ctx.transaction() as session:
        cleared = repo.clear_model_states(session, key)
    ctx.forget_verified(key)
    dropped = ctx.store.drop_collection(spec.name) if info is not None else False
    return {
        "model": key,
        "collection": spec.name,
        "dropped": dropped,
        "points_removed": info.points if info is not None else 0,
        "states_cleared": cleared,
    }


# -- rebuild: a new collection, then one alias switch -----------------------------------
@dataclass
class RebuildReport:
    """What ``rebuild_collection`` did; ``aborted`` set: the alias did not move."""

    model: ModelKey
    collection: str  # the alias searches use
    physical: str  # the collection filled (dropped again when aborted)
    previous: str | None  # what the alias named before (None: nothing, or a plain one)
    planned: int
    done: int = 0
    failed: int = 0
    caught_up: int = 0  # indexed during the fill, embedded into the new one at the end
    removed: int = 0  # deleted during the fill, removed from the new collection
    switched: bool = False
    dropped_previous: bool = False
    seconds: float = 0.0
    aborted: str | None = None


def rebuild_collection(
    ctx: ServiceContext,
    key: ModelKey,
    *,
    keep_previous: bool = False,
    job_size: int = DEFAULT_JOB_SIZE,
    progress: ProgressFactory | None = None,
) -> RebuildReport:
    """Embed the whole library into the next version of the model's collection, made
    with today's settings (model, HNSW, shards, on-disk), then move the alias to it.

    Searches keep reading the collection the alias names until the switch, and the new
    one right after: never a half-filled one. Photos indexed or deleted during the
    fill went to the old collection; they are caught up just before the switch and
    once more after it. The previous collection is dropped unless ``keep_previous``.
    Runs here, in the foreground, one rebuild per model at a time.
    """
    if not ctx.store.capabilities.aliases:
        raise aliases_unsupported()
    started = time.perf_counter()
    spec = ctx.collection_spec(key)
    physical = ctx.store.create_version(spec)
    fill = _writing_to(ctx, key, physical)
    with ctx.transaction() as session:
        ids = repo.asset_ids_to_embed(session, ctx.spec(key), force=True)
    report = RebuildReport(
        model=key, collection=spec.name, physical=physical, previous=None, planned=len(ids)
    )
    logger.info("rebuilding %s: filling %s with %d assets", spec.name, physical, len(ids))
    run = run_in_process(
        fill,
        key,
        ids,
        job_size=job_size,
        force=True,
        on_progress=progress(len(ids)) if progress else None,
    )
    failed = {UUID(f["asset_id"]) for f in run.failures}
    _count(report, run)
    if not run.aborted:
        _catch_up(fill, key, report, failed, job_size)
    if report.aborted:
        # Searches never saw the new collection: drop it; a re-run starts over.
        ctx.store.drop_collection(physical)
        report.seconds = round(time.perf_counter() - started, 3)
        return report
    report.previous = ctx.store.switch_alias(spec.name, physical)
    report.switched = True
    ctx.forget_verified(key)
    logger.info("alias %s now names %s (was %s)", spec.name, physical, report.previous)
    # Writes that went to the old collection between the catch-up and the switch.
    _catch_up(fill, key, report, failed, job_size)
    if report.previous is not None and not keep_previous:
        report.dropped_previous = ctx.store.drop_collection(report.previous)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _writing_to(ctx: ServiceContext, key: ModelKey, physical: str) -> ServiceContext:
    """``ctx`` with the model's collection replaced by ``physical`` (same store, DB and
    settings): the job body writes and checks there while searches read the alias."""
    return replace(
        ctx,
        specs={**ctx.specs, key: replace(ctx.spec(key), collection=physical)},
        collections={**ctx.collections, key: replace(ctx.collection_spec(key), name=physical)},
        _verified_until={},
        _verified_lock=threading.Lock(),
    )


def _catch_up(
    fill: ServiceContext, key: ModelKey, report: RebuildReport, failed: set[UUID], job_size: int
) -> None:
    """Make the new collection hold the library's assets again: add those indexed during
    the fill, remove those deleted. (A photo changed in place during the fill keeps the
    vector the fill made: docs/qdrant-cluster.md.)"""
    physical = fill.spec(key).collection
    with fill.transaction() as session:
        wanted = set(repo.asset_ids_to_embed(session, fill.spec(key), force=True))
    present = fill.store.point_ids(physical)
    gone = present - wanted
    if gone:
        fill.store.delete(physical, gone)
        report.removed += len(gone)
    missing = sorted(wanted - present - failed)
    if not missing:
        return
    run = run_in_process(fill, key, missing, job_size=job_size, force=True)
    failed.update(UUID(f["asset_id"]) for f in run.failures)
    report.caught_up += run.done
    _count(report, run)


def _count(report: RebuildReport, run: RunReport) -> None:
    report.done += run.done
    report.failed += run.failed
    report.aborted = report.aborted or run.aborted
