"""Commands for model collections and migration: create-collection, reembed, worker.

``reembed`` picks its runner from the settings (see :mod:`services.migration`): RQ when
``REDIS_URL`` and ``QDRANT_URL`` are set (workers elsewhere do the work), otherwise the
in-process runner, here, with a progress bar. The job body is the same either way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from image_search_service.cli.common import (
    FAILURES_SHOWN,
    MODEL_CHOICE,
    ProgressBar,
    describe_eta,
    echo_json,
    handing_off,
    opened_context,
)
from image_search_service.cli.remote import RemoteServer, reembed_via_server, running_server
from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings, load_settings
from image_search_service.core.errors import ServiceError, VectorStoreLocked
from image_search_service.core.specs import model_spec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from image_search_service.context import ServiceContext
    from image_search_service.services.reembed.schemas import ReembedProgressOut


@contextmanager
def redis_errors(redis_url: str | None) -> Iterator[None]:
    """A Redis failure mid-command is one clear line naming REDIS_URL (no password)."""
    import redis

    from image_search_service.jobs.queue import QueueUnavailable, redact

    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise QueueUnavailable(f"Redis error (REDIS_URL={redact(redis_url or '')}): {exc}") from exc


# -- create-collection ---------------------------------------------------------------
@click.command("create-collection")
@click.option("--model", "key", type=MODEL_CHOICE, required=True, help="whose collection")
@click.option("--dry-run", is_flag=True, help="print what would be created; touch nothing")
@click.option("--check", is_flag=True, help="verify it exists and matches the settings")
@click.option("--drop", is_flag=True, help="delete the collection (asks first)")
@click.option("--yes", is_flag=True, help="with --drop: do not ask")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def create_collection(
    key: ModelKey, dry_run: bool, check: bool, drop: bool, yes: bool, as_json: bool
) -> None:
    """Create a model's collection from the settings (idempotent), or check or drop it.

    768-d for SigLIP by default, cosine, INT8 scalar quantization, HNSW from HNSW_M /
    HNSW_EF_CONSTRUCT, stamped with the model's identity. --check exits 1 when the
    collection is missing or differs from the settings.
    """
    from image_search_service.services.reembed import collections as svc

    if sum((dry_run, check, drop)) > 1:
        raise click.UsageError("give at most one of --dry-run, --check and --drop")
    settings = load_settings()
    if dry_run:
        plan = svc.planned_collection(settings, key)
        if as_json:
            echo_json({"dry_run": True, **plan})
        else:
            _print_plan(plan)
        return
    server = running_server(settings)
    if server is not None:
        # The server holds the embedded store; waiting for its lock would only time out.
        raise ServiceError(
            f"a server is running on this DATA_DIR ({server.url}) and holds the vector "
            f"store. `image-search reembed --to {key}` asks it to create the collection and "
            "fill it, `image-search status` shows what exists; to create, check or drop a "
            "collection on its own, stop the server first."
        )
    with opened_context(settings) as ctx:
        if drop:
            result = _drop(ctx, key, yes=yes)
            if as_json:
                echo_json(result)
            elif result["dropped"]:
                click.echo(
                    f"dropped collection {result['collection']!r} ({result['points_removed']} "
                    f"points); cleared {result['states_cleared']} per-asset {key} states"
                )
            else:
                click.echo(f"collection {result['collection']!r} does not exist; nothing dropped")
            return
        checked = svc.check_collection(ctx, key) if check else svc.create_collection(ctx, key)
    data = checked.model_dump(mode="json")
    if as_json:
        echo_json(data)
    else:
        _print_check(data)
    if not data["ok"]:
        sys.exit(1)


def _drop(ctx: ServiceContext, key: ModelKey, *, yes: bool) -> dict[str, Any]:
    from image_search_service.services.reembed.collections import drop_collection

    name = ctx.spec(key).collection
    info = ctx.store.collection_info(name)
    if info is not None and not yes:
        click.confirm(
            f"Drop collection {name!r} ({info.points} points of {key})? Its vectors are "
            "deleted; re-creating it means re-embedding every asset",
            abort=True,
            err=True,
        )
    return drop_collection(ctx, key)


def _print_plan(plan: dict[str, Any]) -> None:
    ident = plan["model_identity"]
    quant = plan["quantization"]
    click.echo(
        f"would create collection {plan['collection']!r} ({plan['model']}) in the "
        f"{plan['vector_store']} store at {plan['location']}, unless it exists:"
    )
    click.echo(
        f"  model:        {ident['model_name']} ({ident['pretrained'] or '-'}), {ident['dim']}-d"
    )
    click.echo(f"  distance:     {plan['distance']}")
    click.echo(
        f"  quantization: {quant['type']} scalar, quantile {quant['quantile']}, "
        f"always_ram={quant['always_ram']}"
    )
    click.echo(
        f"  HNSW:         m={plan['hnsw']['m']}, ef_construct={plan['hnsw']['ef_construct']}"
    )
    place = plan["placement"]
    click.echo(
        f"  placement:    {place['shards']} shard(s) x {place['replication_factor']} "
        f"cop(ies), write consistency {place['write_consistency']}, vectors "
        f"{'on disk' if place['on_disk'] else 'in RAM'}, payload "
        f"{'on disk' if place['on_disk_payload'] else 'in RAM'}"
    )
    click.echo("nothing was changed (--dry-run)")


def _print_check(data: dict[str, Any]) -> None:
    verdict = "OK" if data["ok"] else ("MISSING" if not data["exists"] else "MISMATCH")
    created = " (created now)" if data.get("created") else ""
    alias = f" -> {data['physical_collection']!r}" if data.get("physical_collection") else ""
    click.echo(
        f"collection {data['collection']!r}{alias} ({data['model']}, {data['vector_store']}): "
        f"{verdict}{created}"
    )
    if data["exists"]:
        ident = data["model_identity"] or {}
        hnsw = data["hnsw"] or {}
        click.echo(
            f"  points {data['points']}, {data['dim']}-d, {data['distance']}, "
            f"{data['quantization']}, HNSW m={hnsw.get('m')} "
            f"ef_construct={hnsw.get('ef_construct')}"
        )
        click.echo(
            f"  model {ident.get('model_name')} ({ident.get('pretrained') or '-'}, "
            f"{ident.get('dim')}-d)"
        )
    click.echo(f"  coverage {data['coverage']:.1%} ({data['embedded']} of {data['assets']} assets)")
    for problem in data["problems"]:
        click.echo(f"  problem: {problem}", err=True)


# -- reembed -------------------------------------------------------------------------
@click.group("reembed", invoke_without_command=True)
@click.option("--to", "target", type=MODEL_CHOICE, help="the model to embed with")
@click.option("--force", is_flag=True, help="also re-embed assets already done")
@click.option(
    "--job-size",
    type=click.IntRange(1, 10_000),
    default=64,
    show_default=True,
    help="asset ids per job",
)
@click.option("--in-process", is_flag=True, help="run the jobs here even when REDIS_URL is set")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def reembed(
    cctx: click.Context,
    target: ModelKey | None,
    force: bool,
    job_size: int,
    in_process: bool,
    as_json: bool,
) -> None:
    """Re-embed every asset not yet embedded by a model: `reembed --to siglip`.

    With REDIS_URL (and QDRANT_URL) set, jobs of --job-size asset ids go to the RQ queue
    for `image-search worker`; otherwise they run here. Idempotent: re-running skips
    finished assets and assets already queued. Assets that failed wait for
    `reembed retry-failed`; `reembed status` shows progress.
    """
    cctx.ensure_object(dict)
    cctx.obj.update(target=target, job_size=job_size, in_process=in_process)
    if cctx.invoked_subcommand is not None:
        return
    if target is None:
        raise click.UsageError("give the model to embed with: --to siglip (or --to clip)")
    _submit(
        target,
        force=force,
        only_failed=False,
        job_size=job_size,
        in_process=in_process,
        as_json=as_json,
    )


@reembed.command("retry-failed")
@click.option("--to", "target", type=MODEL_CHOICE, help="the model (default: reembed's --to)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def retry_failed(cctx: click.Context, target: ModelKey | None, as_json: bool) -> None:
    """Queue again every asset the model failed on (after its retries ran out)."""
    parent = cctx.obj or {}
    key = target or parent.get("target")
    if key is None:
        raise click.UsageError("give the model: --to siglip (or --to clip)")
    _submit(
        key,
        force=False,
        only_failed=True,
        job_size=parent.get("job_size", 64),
        in_process=parent.get("in_process", False),
        as_json=as_json,
    )


@reembed.command("rebuild")
@click.option("--to", "target", type=MODEL_CHOICE, help="the model (default: reembed's --to)")
@click.option("--keep-previous", is_flag=True, help="keep the collection the alias named")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def rebuild(
    cctx: click.Context, target: ModelKey | None, keep_previous: bool, as_json: bool
) -> None:
    """Embed the whole library into a new collection made with today's settings (model,
    HNSW, QDRANT_SHARDS ...), then move the collection's alias to it: searches read the
    old collection until that one step and the new one after. Needs a Qdrant server
    (QDRANT_URL); runs here, in the foreground (docs/qdrant-cluster.md).
    """
    from image_search_service.services.reembed.collections import rebuild_collection
    from image_search_service.services.reembed.schemas import CollectionRebuildOut
    from image_search_service.vector.base import aliases_unsupported

    parent = cctx.obj or {}
    key = target or parent.get("target")
    if key is None:
        raise click.UsageError("give the model: --to siglip (or --to clip)")
    settings = load_settings()
    if not settings.qdrant_url:
        raise aliases_unsupported()
    with opened_context(settings) as ctx, ProgressBar(f"rebuilding {key}") as bar:
        report = rebuild_collection(
            ctx,
            key,
            keep_previous=keep_previous,
            job_size=parent.get("job_size", 64),
            progress=bar.start,
        )
    out = CollectionRebuildOut.model_validate(report)
    if as_json:
        echo_json(out.model_dump(mode="json"))
    elif out.switched:
        click.echo(
            f"{out.collection!r} now names {out.physical!r} (was {out.previous!r}): "
            f"{out.done} assets embedded ({out.caught_up} caught up), {out.failed} failed, "
            f"{out.removed} removed, in {out.seconds:.1f}s"
            + ("; previous collection dropped" if out.dropped_previous else "")
        )
    if out.aborted:
        click.echo(
            f"error: stopped early: {out.aborted}; searches still read {out.collection!r} "
            "as before; run it again to start over",
            err=True,
        )
        sys.exit(1)


def _submit(
    key: ModelKey,
    *,
    force: bool,
    only_failed: bool,
    job_size: int,
    in_process: bool,
    as_json: bool,
) -> None:
    from image_search_service.services.reembed.schemas import ReembedSubmissionOut
    from image_search_service.services.reembed.submit import submit_reembed

    settings = load_settings()
    server = None if in_process else running_server(settings)
    if server is not None:
        _submit_to_server(
            server, key, force=force, only_failed=only_failed, job_size=job_size, as_json=as_json
        )
        return
    with (
        redis_errors(settings.redis_url),
        opened_context(settings) as ctx,
        ProgressBar(f"re-embedding with {key}") as bar,
    ):
        sub = submit_reembed(
            ctx,
            key,
            force=force,
            only_failed=only_failed,
            job_size=job_size,
            runner="in-process" if in_process else "auto",
            progress=bar.start,
        )
    if as_json:
        echo_json(ReembedSubmissionOut.model_validate(sub).model_dump(mode="json"))
    if sub.created_collection and not as_json:
        click.echo(f"created collection {ctx.spec(key).collection!r}", err=True)
    if sub.note and not as_json:
        click.echo(f"note: {sub.note}", err=True)
    if sub.enqueued is not None:
        if not as_json:
            report = sub.enqueued
            click.echo(
                f"queued {report.enqueued_assets} assets in {report.jobs} jobs on RQ queue "
                f"{report.queue!r} ({report.already_queued} were already queued) - run "
                "`image-search worker`; watch with `image-search reembed status --watch`"
            )
        return
    run = sub.run
    assert run is not None
    if not as_json:
        click.echo(
            f"re-embedded {run.done} assets with {key}, {run.failed} failed, "
            f"{run.skipped} skipped, in {run.seconds:.1f}s "
            f"({run.images_per_second:.1f} images/s)"
        )
        for failure in run.failures[:FAILURES_SHOWN]:
            click.echo(f"  failed: {failure['path']}: {failure['error']}", err=True)
        if run.failed:
            click.echo(
                f"  see `image-search reembed status`; retry with "
                f"`image-search reembed retry-failed --to {key}`",
                err=True,
            )
    if run.aborted:
        click.echo(f"error: stopped early: {run.aborted}; run it again to resume", err=True)
        sys.exit(1)


def _submit_to_server(
    server: RemoteServer,
    key: ModelKey,
    *,
    force: bool,
    only_failed: bool,
    job_size: int,
    as_json: bool,
) -> None:
    handing_off(server.url, as_json)
    with ProgressBar(f"re-embedding with {key}") as bar:
        submission, progress = reembed_via_server(
            server, key, force=force, only_failed=only_failed, job_size=job_size, show=bar.show
        )
    if as_json:
        echo_json({"submission": submission, "progress": progress})
        return
    click.echo(
        f"re-embedded with {key} by the server ({submission['runner']}): "
        f"{progress['done']}/{progress['total']} done, {progress['failed']} failed, "
        f"coverage {progress['coverage']:.1%}"
    )


@reembed.command("status")
@click.option("--model", "key", type=MODEL_CHOICE, help="headline model (default: the migration)")
@click.option("--watch", is_flag=True, help="refresh until the migration is complete")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON (one object per refresh)")
@click.pass_context
def status(
    cctx: click.Context, key: ModelKey | None, watch: bool, interval: float, as_json: bool
) -> None:
    """Progress - total, done, failed, rate, ETA - and the failed assets with reasons."""
    from image_search_service.db import repository as repo
    from image_search_service.db.session import database_alone, session_scope

    settings = load_settings()
    key = key or (cctx.obj or {}).get("target")
    server = running_server(settings)
    if server is not None:  # it holds the store: its reading includes the points
        handing_off(server.url, as_json)
    with database_alone(settings.resolved_database_url) as session_factory:
        if watch:
            _watch(settings, session_factory, key, interval=interval, as_json=as_json)
            return
        progress = _read_progress(settings, session_factory, key)
        spec = model_spec(settings, progress.target)
        with session_scope(session_factory) as session:
            items, count = repo.failed_embeddings(session, spec, limit=FAILURES_SHOWN)
        failures = {
            "model": progress.target,
            "count": count,
            "items": [
                {
                    "asset_id": str(i.asset_id),
                    "path": i.path,
                    "error": i.error,
                    "attempts": i.attempts,
                }
                for i in items
            ],
        }
        if as_json:
            echo_json({**_public(progress), "failures": failures})
        else:
            _print_progress(progress)
            _print_failures(failures)


def _read_progress(
    settings: Settings, session_factory: sessionmaker[Session], key: ModelKey | None
) -> ReembedProgressOut:
    """One reading: from the server that holds this DATA_DIR's store when one runs, else
    here. The vector store is opened only for the reading, and an embedded store in use
    by another process (a running `reembed`) is skipped, not waited for: the counts come
    from the DB either way."""
    from image_search_service.services.reembed.progress import collect_progress
    from image_search_service.services.reembed.schemas import ReembedProgressOut
    from image_search_service.vector.factory import open_vector_store

    server = running_server(settings)
    if server is not None:
        query = f"?target={key}" if key else ""
        return ReembedProgressOut.model_validate(
            server.call("GET", f"/api/v1/admin/reembed{query}")
        )
    store = None
    note = None
    try:
        store = open_vector_store(settings.model_copy(update={"embedded_lock_timeout_s": 0.0}))
    except VectorStoreLocked as exc:
        note = f"vector store not read: {exc.detail}"
    try:
        progress = collect_progress(
            session_factory=session_factory,
            specs={k: model_spec(settings, k) for k in MODEL_KEYS},
            store=store,
            redis_url=settings.redis_url,
            target=key,
            note=note,
        )
        return ReembedProgressOut.model_validate(progress)
    finally:
        if store is not None:
            store.close()


def _print_progress(progress: ReembedProgressOut, *, per_model: bool = True) -> None:
    head = progress  # the target model's figures are at the top level
    eta = describe_eta(head.eta_seconds) if head.pending else "-"
    click.echo(
        f"re-embedding with {progress.target}: {head.done}/{head.total} done, "
        f"{head.failed} failed, {head.pending} pending - coverage {head.coverage:.1%}, "
        f"rate {head.rate:.2f} assets/s, ETA {eta}" + ("  (complete)" if progress.complete else "")
    )
    if not per_model:
        return
    for key, entry in progress.models.items():
        points = "?" if entry.points is None else entry.points
        exists = " (no collection)" if entry.collection_exists is False else ""
        click.echo(
            f"  {key:7s} {entry.collection}{exists}: {entry.done} done, "
            f"{entry.failed} failed, {entry.pending} pending, {points} points, "
            f"{entry.rate:.2f}/s"
        )
    queue = progress.queue
    if queue is not None:
        if queue.error:
            click.echo(f"  queue {queue.name}: {queue.error}")
        else:
            click.echo(
                f"  queue {queue.name}: {queue.queued} queued, {queue.started} running, "
                f"{queue.scheduled_retries} waiting to retry, {queue.failed_jobs} failed "
                f"jobs, {queue.workers} workers"
            )
    if progress.note:
        click.echo(f"  note: {progress.note}")


def _print_failures(failures: dict[str, Any]) -> None:
    if not failures["count"]:
        return
    click.echo(f"failed assets ({failures['count']}, model {failures['model']}):")
    for item in failures["items"]:
        click.echo(f"  {item['path']}  [{item['asset_id']}]: {item['error']}")
    if failures["count"] > len(failures["items"]):
        click.echo(f"  ... and {failures['count'] - len(failures['items'])} more")
    click.echo(f"retry them with `image-search reembed retry-failed --to {failures['model']}`")


def _watch(
    settings: Settings,
    session_factory: sessionmaker[Session],
    key: ModelKey | None,
    *,
    interval: float,
    as_json: bool,
) -> None:
    with ProgressBar("re-embedding") as bar:
        while True:
            progress = _read_progress(settings, session_factory, key)
            key = progress.target
            head = progress
            if as_json:
                click.echo(json.dumps(_public(progress)))
            elif bar.enabled:
                eta = describe_eta(head.eta_seconds) if head.pending else "-"
                bar.label = f"re-embedding with {key}"
                bar.show(
                    head.done + head.failed,
                    head.total,
                    f"{head.failed} failed, {head.rate:.2f}/s, ETA {eta}",
                )
            else:
                _print_progress(progress, per_model=False)
            queue = progress.queue
            if progress.complete and not (
                queue is not None and (queue.queued or queue.started or queue.scheduled_retries)
            ):
                return
            time.sleep(interval)


# -- worker --------------------------------------------------------------------------
@click.command("worker")
@click.option("--burst", is_flag=True, help="exit when the queue is empty (and no retry waits)")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="exit after N jobs")
@click.option("--name", default=None, help="worker name (default: random)")
def worker(burst: bool, max_jobs: int | None, name: str | None) -> None:
    """Run an RQ worker for re-embedding jobs (needs REDIS_URL and QDRANT_URL).

    Loads the models whose collections exist once, then runs jobs without forking.
    """
    from image_search_service.jobs.queue import QUEUE_NAME, connect, redact
    from image_search_service.jobs.worker import check_worker_settings, preload, run_worker

    settings = load_settings()
    check_worker_settings(settings)
    assert settings.redis_url
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    with redis_errors(settings.redis_url):
        connection = connect(settings.redis_url)
        try:
            with opened_context(settings) as ctx:
                loaded = preload(ctx)
                click.echo(
                    f"worker: queue {QUEUE_NAME!r} at {redact(settings.redis_url)}, "
                    f"models loaded: {', '.join(loaded) or 'none yet'}",
                    err=True,
                )
                report = run_worker(
                    ctx,
                    connection,
                    burst=burst,
                    max_jobs=max_jobs,
                    name=name,
                    logging_level=level,
                )
        finally:
            connection.close()
    click.echo(f"worker: done, {report.jobs} jobs run", err=True)


COMMANDS: list[click.Command] = [create_collection, reembed, worker]


def _public(progress: ReembedProgressOut) -> dict[str, Any]:
    data: dict[str, Any] = progress.model_dump(mode="json")
    return data
