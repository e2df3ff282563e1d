"""Index a list of folders, files and ``s3://bucket/prefix`` URIs: the one entry point
for the CLI, the API's background runs and watched folders."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from image_search_service.context import ServiceContext
from image_search_service.core.config import ModelKey
from image_search_service.images.s3 import as_s3_uri
from image_search_service.services.library.buckets import index_bucket
from image_search_service.services.library.folders import index_folders
from image_search_service.services.library.indexing import (
    IndexReport,
    ProgressFactory,
    check_or_renew_collection,
    prepare_collections,
)


def index_paths(
    ctx: ServiceContext,
    roots: Sequence[Path | str],
    *,
    model_keys: Sequence[ModelKey],
    progress: ProgressFactory | None = None,
) -> IndexReport:
    """Index folders, files and ``s3://bucket/prefix`` URIs (see ``buckets.py``)."""
    started = time.perf_counter()
    ctx.disk.check("index photos")
    report = IndexReport(models=list(model_keys))
    specs = [ctx.spec(k) for k in model_keys]
    local: list[Path] = []
    buckets: list[str] = []
    for root in roots:
        uri = as_s3_uri(root)
        if uri is not None:
            buckets.append(uri)
            continue
        path = Path(root)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path.absolute()}")
        local.append(path)
    for key in model_keys:
        # Before anything is written: a stamp mismatch stops the run with nothing changed.
        check_or_renew_collection(ctx, key)

    embedded = False
    if local:
        embedded = index_folders(
            ctx, local, model_keys=model_keys, report=report, progress=progress
        )
    if buckets:
        prepare_collections(ctx, model_keys, [])
        for uri in buckets:
            embedded |= index_bucket(ctx, uri, specs=specs, report=report, progress=progress)
    if not local and not buckets:
        prepare_collections(ctx, model_keys, [])
    if embedded:
        for spec in specs:
            ctx.store.optimize(spec.collection)
    report.seconds = round(time.perf_counter() - started, 3)
    report.images_per_second = round(report.indexed / report.seconds, 2) if report.seconds else 0.0
    return report
