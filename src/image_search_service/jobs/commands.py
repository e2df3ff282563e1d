"""CLI commands for collections, re-embedding and workers (registered by cli.py).

``reembed`` picks its runner from the settings: RQ when ``REDIS_URL`` and ``QDRANT_URL``
are set (workers elsewhere do the work), otherwise the in-process runner, here, with a
progress bar. The job body is the same either way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import redis

from image_search_service.core.config import MODEL_KEYS, ModelKey, Settings, load_settings
from image_search_service.core.errors import VectorStoreLocked
from image_search_service.core.specs import model_spec
from image_search_service.db.session import make_engine, make_session_factory, upgrade_database
from image_search_service.services.context import ServiceContext, open_context

MODEL_CHOICE = click.Choice(list(MODEL_KEYS))
_FAILURES_SHOWN = 20


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def _opened(settings: Settings) -> Iterator[ServiceContext]:
    ctx = open_context(settings)
    try:
        yield ctx
    finally:
        ctx.close()


@contextmanager
def _redis_errors() -> Iterator[None]:
    from image_search_service.jobs.queue import QueueUnavailable, redact

    try:
        yield
    except redis.exceptions.RedisError as exc:
        url = redact(os.environ.get("REDIS_URL", ""))
        raise QueueUnavailable(f"Redis error (REDIS_URL={url}): {exc}") from exc


def _progress_bar(total: int, label: str) -> tuple[Callable[[int], None] | None, Any]:
    if not sys.stderr.isatty() or total == 0:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="img", file=sys.stderr)

    def tick(n: int) -> None:
        bar.update(n)

    return tick, bar


def _describe_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no recent progress)"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


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
    from image_search_service.services import collections as svc

    if sum((dry_run, check, drop)) > 1:
        raise click.UsageError("give at most one of --dry-run, --check and --drop")
    settings = load_settings()
    if dry_run:
        plan = svc.planned_collection(settings, key)
        if as_json:
            _echo_json({"dry_run": True, **plan})
        else:
            _print_plan(plan)
        return
    with _opened(settings) as ctx:
        if drop:
            result = _drop(ctx, key, yes=yes)
            if as_json:
                _echo_json(result)
            elif result["dropped"]:
                click.echo(
                    f"dropped collection {result['collection']!r} ({result['points_removed']} "
                    f"points); cleared {result['states_cleared']} per-asset {key} states"
                )
            else:
                click.echo(f"collection {result['collection']!r} does not exist; nothing dropped")
            return
        if check:
            data = svc.check_collection(ctx, key).as_dict()
        else:
            data = svc.create_collection(ctx, key)
    if as_json:
        _echo_json(data)
    else:
        _print_check(data)
    if not data["ok"]:
        sys.exit(1)


def _drop(ctx: ServiceContext, key: ModelKey, *, yes: bool) -> dict[str, Any]:
    from image_search_service.services.collections import drop_collection

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
    click.echo("nothing was changed (--dry-run)")


def _print_check(data: dict[str, Any]) -> None:
    verdict = "OK" if data["ok"] else ("MISSING" if not data["exists"] else "MISMATCH")
    created = " (created now)" if data.get("created") else ""
    click.echo(
        f"collection {data['collection']!r} ({data['model']}, {data['vector_store']}): "
        f"{verdict}{created}"
    )
    if data["exists"]:
        ident = data.get("model_identity") or {}
        hnsw = data.get("hnsw") or {}
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


def _submit(
    key: ModelKey,
    *,
    force: bool,
    only_failed: bool,
    job_size: int,
    in_process: bool,
    as_json: bool,
) -> None:
    from image_search_service.services.reembed import plan_asset_ids, reset_failed

    settings = load_settings()
    use_rq = bool(settings.redis_url) and not in_process
    if use_rq and not settings.qdrant_url:
        click.echo(
            "note: REDIS_URL is set but the vector store is embedded (QDRANT_URL unset); a "
            "worker in another process could not open it, so the jobs run here.",
            err=True,
        )
        use_rq = False
    with _opened(settings) as ctx:
        if ctx.store.ensure_collection(ctx.collection_spec(key)):
            click.echo(f"created collection {ctx.spec(key).collection!r}", err=True)
        spec = ctx.spec(key)
        with ctx.session_factory() as session:
            ids = plan_asset_ids(session, spec, force=force, only_failed=only_failed)
            if only_failed:
                reset_failed(session, spec, ids)  # counted as pending again, not failed
                session.commit()
        if use_rq:
            _enqueue(
                settings,
                key,
                ids,
                job_size=job_size,
                force=force,
                only_failed=only_failed,
                as_json=as_json,
            )
        else:
            _run_here(ctx, key, ids, job_size=job_size, force=force, as_json=as_json)


def _enqueue(
    settings: Settings,
    key: ModelKey,
    ids: list[Any],
    *,
    job_size: int,
    force: bool,
    only_failed: bool,
    as_json: bool,
) -> None:
    from image_search_service.jobs.queue import (
        clear_failed_jobs,
        connect,
        enqueue_reembed,
        reembed_queue,
    )

    assert settings.redis_url
    with _redis_errors():
        connection = connect(settings.redis_url)
        try:
            queue = reembed_queue(connection)
            if only_failed:
                clear_failed_jobs(queue, key)
            report = enqueue_reembed(queue, key, ids, job_size=job_size, force=force)
        finally:
            connection.close()
    if as_json:
        _echo_json({"runner": "rq", **report.as_dict()})
        return
    click.echo(
        f"queued {report.enqueued_assets} assets in {report.jobs} jobs on RQ queue "
        f"{report.queue!r} ({report.already_queued} were already queued) - run "
        "`image-search worker`; watch with `image-search reembed status --watch`"
    )


def _run_here(
    ctx: ServiceContext,
    key: ModelKey,
    ids: list[Any],
    *,
    job_size: int,
    force: bool,
    as_json: bool,
) -> None:
    from image_search_service.jobs.runner import run_in_process

    tick, bar = _progress_bar(len(ids), f"re-embedding with {key}")
    try:
        report = run_in_process(ctx, key, ids, job_size=job_size, force=force, on_progress=tick)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        _echo_json({"runner": "in-process", **report.as_dict()})
    else:
        click.echo(
            f"re-embedded {report.done} assets with {key}, {report.failed} failed, "
            f"{report.skipped} skipped, in {report.seconds:.1f}s "
            f"({report.images_per_second:.1f} images/s)"
        )
        for failure in report.failures[:_FAILURES_SHOWN]:
            click.echo(f"  failed: {failure['path']}: {failure['error']}", err=True)
        if report.failed:
            click.echo(
                f"  see `image-search reembed status`; retry with "
                f"`image-search reembed retry-failed --to {key}`",
                err=True,
            )
    if report.aborted:
        click.echo(f"error: stopped early: {report.aborted}; run it again to resume", err=True)
        sys.exit(1)


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
    from image_search_service.services.reembed import failed_assets

    settings = load_settings()
    key = key or (cctx.obj or {}).get("target")
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade_database(engine)
        session_factory = make_session_factory(engine)
        if not watch:
            data = _read_progress(settings, session_factory, key)
            spec = model_spec(settings, data["target"])
            with session_factory() as session:
                items, count = failed_assets(session, spec, limit=_FAILURES_SHOWN)
            data["failures"] = {"model": data["target"], "count": count, "items": items}
            if as_json:
                _echo_json(data)
            else:
                _print_progress(data)
            return
        _watch(settings, session_factory, key, interval=interval, as_json=as_json)
    finally:
        engine.dispose()


def _read_progress(
    settings: Settings, session_factory: Any, key: ModelKey | None
) -> dict[str, Any]:
    """One reading. The vector store is opened only for the reading, and an embedded store
    in use by another process (the API, a running `reembed`) is skipped, not waited for:
    the counts come from the DB either way."""
    from image_search_service.services.reembed import collect_progress
    from image_search_service.vector.factory import open_vector_store

    store = None
    note = None
    try:
        store = open_vector_store(settings.model_copy(update={"embedded_lock_timeout_s": 0.0}))
    except VectorStoreLocked as exc:
        note = f"vector store not read: {exc.detail}"
    try:
        data = collect_progress(
            session_factory=session_factory,
            specs={k: model_spec(settings, k) for k in MODEL_KEYS},
            store=store,
            redis_url=settings.redis_url,
            target=key,
        )
    finally:
        if store is not None:
            store.close()
    data["note"] = note
    return data


def _print_progress(data: dict[str, Any]) -> None:
    eta = _describe_eta(data["eta_seconds"]) if data["pending"] else "-"
    click.echo(
        f"re-embedding with {data['target']}: {data['done']}/{data['total']} done, "
        f"{data['failed']} failed, {data['pending']} pending - coverage {data['coverage']:.1%}, "
        f"rate {data['rate']:.2f} assets/s, ETA {eta}"
        + ("  (complete)" if data["complete"] else "")
    )
    for key, entry in data["models"].items():
        points = "?" if entry["points"] is None else entry["points"]
        exists = {True: "", False: " (no collection)", None: ""}[entry["collection_exists"]]
        click.echo(
            f"  {key:7s} {entry['collection']}{exists}: {entry['done']} done, "
            f"{entry['failed']} failed, {entry['pending']} pending, {points} points, "
            f"{entry['rate']:.2f}/s"
        )
    queue = data.get("queue")
    if queue:
        if queue.get("error"):
            click.echo(f"  queue {queue['name']}: {queue['error']}")
        else:
            click.echo(
                f"  queue {queue['name']}: {queue['queued']} queued, {queue['started']} running, "
                f"{queue['scheduled_retries']} waiting to retry, {queue['failed_jobs']} failed "
                f"jobs, {queue['workers']} workers"
            )
    if data.get("note"):
        click.echo(f"  note: {data['note']}")
    failures = data.get("failures") or {}
    if failures.get("count"):
        click.echo(f"failed assets ({failures['count']}, model {failures['model']}):")
        for item in failures["items"]:
            click.echo(f"  {item['path']}  [{item['asset_id']}]: {item['error']}")
        if failures["count"] > len(failures["items"]):
            click.echo(f"  ... and {failures['count'] - len(failures['items'])} more")
        click.echo(f"retry them with `image-search reembed retry-failed --to {failures['model']}`")


def _watch(
    settings: Settings,
    session_factory: Any,
    key: ModelKey | None,
    *,
    interval: float,
    as_json: bool,
) -> None:
    bar = None
    try:
        while True:
            data = _read_progress(settings, session_factory, key)
            key = data["target"]
            queue = data.get("queue") or {}
            busy = bool(
                queue.get("queued") or queue.get("started") or queue.get("scheduled_retries")
            )
            finished = data["complete"] and not busy
            if as_json:
                click.echo(json.dumps(data, default=str))
            elif sys.stderr.isatty():
                from tqdm import tqdm

                if bar is None:
                    bar = tqdm(
                        total=data["total"],
                        desc=f"re-embedding with {key}",
                        unit="img",
                        file=sys.stderr,
                    )
                bar.total = data["total"]
                bar.n = data["done"] + data["failed"]
                bar.set_postfix_str(
                    f"{data['failed']} failed, {data['rate']:.2f}/s, "
                    f"ETA {_describe_eta(data['eta_seconds']) if data['pending'] else '-'}"
                )
                bar.refresh()
            else:
                _print_progress({**data, "models": {}, "failures": None})
            if finished:
                break
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()


# -- worker --------------------------------------------------------------------------
@click.command("worker")
@click.option("--burst", is_flag=True, help="exit when the queue is empty (and no retry waits)")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="exit after N jobs")
@click.option("--name", default=None, help="worker name (default: random)")
def worker(burst: bool, max_jobs: int | None, name: str | None) -> None:
    """Run an RQ worker for re-embedding jobs (needs REDIS_URL and QDRANT_URL).

    Loads the models whose collections exist once, then runs jobs without forking.
    """
    from image_search_service.jobs.queue import connect, redact
    from image_search_service.jobs.worker import check_worker_settings, preload, run_worker
    from image_search_service.services.reembed import QUEUE_NAME

    settings = load_settings()
    check_worker_settings(settings)
    assert settings.redis_url
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    with _redis_errors():
        connection = connect(settings.redis_url)
        try:
            with _opened(settings) as ctx:
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
