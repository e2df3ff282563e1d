"""Commands for the library: index, status, duplicates, demo, and migrate (the DB schema)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from image_search_service.cli.common import (
    FAILURES_SHOWN,
    MODEL_CHOICE,
    ProgressBar,
    echo_json,
    handing_off,
    opened_context,
)
from image_search_service.cli.remote import (
    index_via_server,
    running_server,
    status_via_server,
)
from image_search_service.core.config import MODEL_KEYS, ModelKey, load_settings
from image_search_service.core.specs import BASELINE

if TYPE_CHECKING:
    from image_search_service.services.library.indexing import ProgressFactory

GROUPS_SHOWN = 50


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--model",
    "model",
    type=click.Choice(["auto", "all", *MODEL_KEYS]),
    default="auto",
    show_default=True,
    help="auto = CLIP plus every model whose collection exists",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def index(paths: tuple[str, ...], model: str, as_json: bool) -> None:
    """Index image files (JPEG, PNG, WebP, HEIC, MPO, GIF, TIFF, AVIF) below PATHS,
    incrementally; other files are listed as unsupported.

    A path may be a folder, a file or an S3-compatible bucket prefix
    (s3://bucket/prefix/, configured by the standard AWS_* variables).

    While `image-search serve` runs on this DATA_DIR, the server does the work."""
    for raw in paths:
        if not raw.strip():  # an unset shell variable; Path("") would mean this folder
            raise click.BadParameter("a path is empty", param_hint="PATHS")
    settings = load_settings()
    server = running_server(settings)
    if server is not None:
        local = [Path(p) for p in paths]
        for raw, path in zip(paths, local, strict=True):
            # Checked here too, for the same message as without a server.
            if not raw.startswith("s3://") and not path.exists():
                raise FileNotFoundError(f"no such file or folder: {path.absolute()}")
        handing_off(server.url, as_json)
        try:
            with ProgressBar("indexing") as bar:
                data = index_via_server(server, local, model=model, show=bar.show)
        except KeyboardInterrupt:
            click.echo(
                f"\nstopped following; the server at {server.url} goes on indexing "
                "(`image-search status` shows how far it got)",
                err=True,
            )
            sys.exit(130)
        for error in data.pop("errors"):
            click.echo(f"error: {error}", err=True)
    else:
        from image_search_service.services.library.index import index_paths
        from image_search_service.services.library.indexing import models_to_index
        from image_search_service.services.library.schemas import IndexReportOut

        counted = _Counted()
        try:
            with opened_context(settings) as ctx, ProgressBar("indexing") as bar:
                keys = models_to_index(ctx, model)
                report = index_paths(
                    ctx, list(paths), model_keys=keys, progress=counted.wrap(bar.start)
                )
        except KeyboardInterrupt:
            # Work is committed per batch: what was done stays done, a rerun skips it.
            click.echo(
                f"\ninterrupted: {counted.done} of {counted.total or '?'} photos indexed so "
                "far are kept; run the same command again to resume",
                err=True,
            )
            sys.exit(130)
        data = IndexReportOut.model_validate(report).model_dump(mode="json")
    _print_index_report(data, as_json)


class _Counted:
    """Counts what a progress factory is told (for the message after a Ctrl-C)."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def wrap(self, factory: Callable[[int], Callable[[int], None]]) -> ProgressFactory:
        def start(total: int) -> Callable[[int], None]:
            self.total += total
            tick = factory(total)

            def advance(n: int) -> None:
                self.done += n
                tick(n)

            return advance

        return start


def _print_index_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(report)
        return
    click.echo(
        f"indexed {report['indexed']}, skipped {report['skipped']} "
        f"({report['duplicates']} duplicates), failed {report['failed']}, "
        f"missing {report['missing']} - {report['scanned']} files scanned in "
        f"{report['seconds']:.1f}s ({report['images_per_second']:.1f} images/s) "
        f"with {', '.join(report['models'])}"
    )
    unsupported = report.get("unsupported", 0)
    if unsupported:
        click.echo(f"  not indexed: {unsupported} files of unsupported formats", err=True)
        for path in report.get("unsupported_files", [])[:FAILURES_SHOWN]:
            click.echo(f"  unsupported: {path}", err=True)
    failures = report["failures"]
    for failure in failures[:FAILURES_SHOWN]:
        click.echo(f"  failed: {failure['path']}: {failure['error']}", err=True)
    if len(failures) > FAILURES_SHOWN:
        extra = len(failures) - FAILURES_SHOWN
        click.echo(f"  ... and {extra} more failures", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def status(as_json: bool) -> None:
    """Asset counts and, per model, collection, points, coverage and settings."""
    from image_search_service.services.library.schemas import LibraryStatusOut

    settings = load_settings()
    server = running_server(settings)
    if server is not None:
        handing_off(server.url, as_json)
        found: Any = status_via_server(server)
    else:
        from image_search_service.services.library.status import library_status

        with opened_context(settings) as ctx:
            found = library_status(ctx)
    data = LibraryStatusOut.model_validate(found).model_dump(mode="json")
    if as_json:
        echo_json(data)
        return
    echo_status(data)


def echo_status(data: dict[str, Any]) -> None:
    """``status`` as text, from the JSON shape (the same with or without a server)."""
    indexing = f", {data['indexing']} being indexed" if data.get("indexing") else ""
    click.echo(
        f"assets: {data['assets']} searchable{indexing}, {data['failed']} unreadable, "
        f"{data['missing']} missing  (vectors: {data['vector_store']}, db: {data['database']})"
    )
    captions = data.get("captions")
    if captions:
        click.echo(
            f"captions {captions['collection']} ({captions['embedder']}): "
            f"{captions['embedded']}/{captions['with_text']} embedded, "
            f"{captions['pending']} pending"
            + (f" ({captions['last_error']})" if captions["last_error"] else "")
        )
    disk = data.get("disk")
    if disk and disk["low"]:
        click.echo(
            f"disk: {disk['free_mb']} MB free on {disk['path']}, below the {disk['reserve_mb']} MB "
            "kept free (MIN_FREE_DISK_MB): uploads and indexing are refused until space is freed"
        )
    for key, entry in data["models"].items():
        if not entry["exists"]:
            click.echo(f"{key:7s} {entry['collection']}: not created")
        else:
            ident = entry["model_identity"] or {}
            click.echo(
                f"{key:7s} {entry['collection']}: {entry['points']} points, coverage "
                f"{entry['coverage']:.1%}, {entry['failed']} failed, {entry['quantization']}, "
                f"HNSW m={entry['hnsw']['m']} ef_construct={entry['hnsw']['ef_construct']}, "
                f"model {ident.get('model_name')} "
                f"({ident.get('pretrained') or '-'}, {ident.get('dim')}-d), "
                f"vectors by {', '.join(entry.get('runtimes') or ['-'])}"
                + ("" if entry["identity_matches"] else "  MISMATCH with settings")
            )
        # Which precision serves each tower, and why not INT8 (status never loads a model).
        towers = entry.get("precision")
        if towers:
            serving = ", ".join(f"{tower} {runtime}" for tower, runtime in towers.items())
        else:
            serving = f"{entry['configured_runtime']} configured"
        cpu = f" (CPU class {entry['cpu_isa']})" if entry.get("cpu_isa") else ""
        if not entry.get("model_loaded"):
            cpu += "; model not loaded in this process"
        elif entry.get("int8_refused"):
            cpu += f"; INT8 refused: {entry['int8_refused']}"
        click.echo(f"{'':7s} encoder: {serving}{cpu}")
        if entry.get("model_loaded") and entry.get("int8_decision"):
            # How INT8 was judged (recall@10 and cosine per method): why it serves or not.
            click.echo(f"{'':7s} INT8: {entry['int8_decision']}")


@click.command()
@click.option("--count", type=click.IntRange(20, 5000), default=240, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--serve", "serve_it", is_flag=True, help="then serve it on the search page (as `serve`)"
)
@click.option("--host", default=None, help="with --serve: the address to bind (as `serve`)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def demo(count: int, as_json: bool, serve_it: bool, host: str | None, port: int) -> None:
    """Offline demo: generate a picture library, index it with the shipped tiny
    models, and run example searches; with --serve, browse it on the search page."""
    from image_search_service.demo.run import DemoReportOut, demo_settings, run_demo

    settings = load_settings()
    if serve_it:
        from image_search_service.cli.server import run_server

        demo = demo_settings(settings)
        if running_server(demo) is None:  # else run_server says which one holds it
            click.echo(f"Indexing the demo under {demo.data_dir} (only what is new)", err=True)
            with ProgressBar("indexing") as bar:
                done = run_demo(settings, count=count, progress=bar.start, searches=False)
            click.echo(f"{done.indexed} new pictures indexed", err=True)
        run_server(demo, host=host, port=port, allow_unauthenticated=False)
        return
    if not as_json:
        click.echo(f"Generating and indexing {count} demo pictures under {settings.data_dir}/demo")
    with ProgressBar("indexing") as bar:
        report = run_demo(settings, count=count, progress=bar.start)
    if as_json:
        echo_json(DemoReportOut.model_validate(report).model_dump(mode="json"))
        return
    click.echo(
        f"Indexed {report.indexed} new pictures in {report.index_seconds:.1f}s "
        f"with demo-clip and demo-siglip (library: {report.library})\n"
    )
    for q in report.queries:
        click.echo(
            f"[{q.model}] {q.query!r}: {len(q.hits)} results in {q.took_ms:.0f} ms; "
            f"precision@{min(len(q.hits), q.relevant)} {q.precision:.0%} "
            f"({q.relevant} such pictures in the library)"
            + ("" if q.close_matches else "; no close matches, the nearest few:")
        )
        for hit in q.hits:
            calibrated = hit["calibrated_score"]
            extra = f"  p(match)={calibrated:.2f}" if calibrated is not None else ""
            click.echo(f"    {hit['score']:.3f}{extra}  {Path(hit['path']).name}")
    click.echo(
        "\nBrowse it on the search page:\n"
        "  image-search demo --serve              # then open http://127.0.0.1:8000\n"
        "\nThe demo models only know coloured shapes. To search your own photos with the real "
        "models:\n"
        "  image-search index ~/Pictures          # CLIP ViT-B-32 (downloads weights once)\n"
        '  image-search search "beach sunset with people"\n'
        "Offline, point CLIP_MODEL_NAME / CLIP_PRETRAINED at weights you have "
        "(see docs/configuration.md)."
    )


@click.command()
def migrate() -> None:
    """Apply database migrations (also done automatically at start)."""
    from image_search_service.db.session import make_engine, upgrade_database

    settings = load_settings()
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    engine.dispose()
    click.echo(f"database is at the latest schema ({engine.url.render_as_string()})")


@click.command()
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="cosine at or above which photos are near-duplicates (default: the model's, "
    "CLIP_DUPLICATE_THRESHOLD / SIGLIP_DUPLICATE_THRESHOLD)",
)
@click.option("--model", type=MODEL_CHOICE, default=BASELINE, show_default=True)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="groups"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def duplicates(threshold: float | None, model: ModelKey, limit: int, as_json: bool) -> None:
    """List groups of near-duplicate photos (re-saves, resizes, crops, bursts).

    While `image-search serve` runs on this DATA_DIR, the server answers."""
    from image_search_service.services.library.schemas import DuplicatesOut

    settings = load_settings()
    server = running_server(settings)
    if server is not None:
        handing_off(server.url, as_json)
        query = f"?model={model}&limit={limit}" + (
            f"&threshold={threshold}" if threshold is not None else ""
        )
        found: Any = server.call("GET", f"/api/v1/duplicates{query}")
    else:
        from image_search_service.services.library.duplicates import find_duplicates

        with opened_context(settings) as ctx:
            found = find_duplicates(ctx, model=model, threshold=threshold, limit=limit)
    report = DuplicatesOut.model_validate(found)
    if as_json:
        echo_json(report.model_dump(mode="json"))
        return
    click.echo(
        f"{report.total_groups} groups of near-duplicates among {report.scanned} photos "
        f"({report.model}, threshold {report.threshold:.3f}, {report.seconds:.1f}s)"
    )
    for number, group in enumerate(report.groups[:GROUPS_SHOWN], start=1):
        click.echo(f"group {number}: {group.size} photos, min score {group.min_score:.3f}")
        for member in group.assets:
            click.echo(f"  {member.asset_id}  {member.path}")
    if len(report.groups) > GROUPS_SHOWN:
        click.echo(f"... and {len(report.groups) - GROUPS_SHOWN} more groups (--json for all)")


COMMANDS: list[click.Command] = [index, status, duplicates, demo, migrate]
