"""``image-search serve``: the HTTP API under uvicorn (``--workers N``: N processes, on
stores they share); ``image-search watch``: the watched folders without the API."""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from image_search_service.cli.remote import advertised, running_server
from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ConfigError, ServiceError

logger = logging.getLogger(__name__)


@click.command()
@click.option(
    "--host",
    default=None,
    help="address to bind (default: 127.0.0.1 without API_KEY, 0.0.0.0 with one)",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--preload/--no-preload",
    default=None,
    help="load the models before accepting requests (default: PRELOAD_MODELS)",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help="listen beyond this machine with no API key (a trusted network only)",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="API processes; more than one needs DATABASE_URL (PostgreSQL) and QDRANT_URL (a "
    "Qdrant server)",
)
def serve(
    host: str | None,
    port: int,
    preload: bool | None,
    allow_unauthenticated: bool,
    workers: int,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    # Flags are validated here, before anything opens: a bad value stops start-up.
    settings = load_settings(**({} if preload is None else {"preload_models": preload}))
    run_server(
        settings,
        host=host,
        port=port,
        allow_unauthenticated=allow_unauthenticated,
        workers=workers,
    )


def run_server(
    settings: Settings,
    *,
    host: str | None,
    port: int,
    allow_unauthenticated: bool,
    workers: int = 1,
) -> None:
    """Serve ``settings``' library until stopped: the checks, server.json, uvicorn, and
    the models warmed up in the background. ``workers`` above 1: that many uvicorn
    worker processes, each building the app from the environment (shared stores only)."""
    import uvicorn

    from image_search_service.api.app import create_app
    from image_search_service.api.auth import KeyRing, exposed
    from image_search_service.api.serving import check_workers
    from image_search_service.context import ensure_writable

    check_workers(settings, workers)
    ensure_writable(settings.data_dir)  # one line, not a traceback from server.json
    other = running_server(settings)
    if other is not None:  # it holds the embedded store: a second one could not open it
        raise ServiceError(
            f"a server already runs on this DATA_DIR ({settings.data_dir}) at {other.url}; "
            "stop it first, or use that one"
        )
    if KeyRing(settings).configured():
        host = host or "0.0.0.0"
        click.echo("API keys are set: every route but /health needs one.", err=True)
    else:
        host = host or "127.0.0.1"
        if exposed(host) and not allow_unauthenticated:
            raise click.ClickException(
                f"--host {host} would show every photo to anyone who can reach it: set "
                "API_KEY (or READ_API_KEY, or `image-search keys create`), or pass "
                "--allow-unauthenticated on a network you trust."
            )
        if exposed(host):
            logger.warning(
                "serving %s with NO API KEY (--allow-unauthenticated): anyone who can reach "
                "it may read, change and delete the library",
                host,
            )
            click.echo(
                f"WARNING: --allow-unauthenticated: anyone who can reach {host} may read, "
                "change and delete this library.",
                err=True,
            )
        else:
            click.echo(
                f"no API key is set: the API is open, so the server binds to {host} only.",
                err=True,
            )
    click.echo(f"serving on http://{host}:{port} (docs at /docs)", err=True)
    from image_search_service.api.serving import (
        WORKER_APP,
        settings_for_host,
        uvicorn_limits,
        worker_environment,
    )

    settings = settings_for_host(settings, host)
    if workers > 1:
        # The stores are shared (checked above), so the CLI works on its own and there is
        # no server.json to write. uvicorn imports the app anew in each worker process.
        os.environ.update(worker_environment(settings))
        if settings.library_paths:
            click.echo(f"{workers} worker processes; one of them watches LIBRARY_PATHS", err=True)
        uvicorn.run(
            WORKER_APP,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            **uvicorn_limits(settings),
        )
        return
    # The CLI finds this server in DATA_DIR and hands it the work on the store it holds.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    with advertised(settings, f"http://{_bracketed(local)}:{port}") as withdraw:
        uvicorn.run(
            create_app(settings, on_shutdown=withdraw, warm_models=True),
            host=host,
            port=port,
            **uvicorn_limits(settings),
        )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@click.command()
def watch() -> None:
    """Index LIBRARY_PATHS, then keep them indexed as they change (no HTTP API).

    Beside API processes on one PostgreSQL database, one process watches (this one, or a
    server): the one holding the watcher lock; the others stand by to take over."""
    from image_search_service.context import open_context
    from image_search_service.jobs.dispatcher import Dispatcher
    from image_search_service.jobs.leader import LeaderLock
    from image_search_service.services.library.assets import AssetService
    from image_search_service.services.library.background import WATCHER_LOCK, LeaderDuties

    settings = load_settings()
    if not settings.library_paths:
        raise ConfigError("LIBRARY_PATHS is not set: there is no folder to watch")
    other = running_server(settings)
    if other is not None:  # it holds the embedded store, and watches the folders itself
        raise ServiceError(
            f"a server already runs on this DATA_DIR ({settings.data_dir}) at {other.url} "
            "and watches LIBRARY_PATHS itself"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ctx = open_context(settings)
    dispatcher = Dispatcher()
    duties = LeaderDuties(dispatcher, ctx, AssetService(ctx))
    lock = LeaderLock(
        ctx.engine,
        WATCHER_LOCK,
        retry_s=settings.watcher_lock_retry_s,
        on_acquired=duties.start,
        on_lost=duties.stop,
    )
    try:
        lock.start()
        if not lock.held:
            click.echo(
                f"{lock.holder() or 'another process'} watches now; this one takes over "
                "when it stops (Ctrl-C to quit)",
                err=True,
            )
        stop.wait()
    finally:
        lock.close()
        dispatcher.close()
        ctx.close()


COMMANDS: list[click.Command] = [serve, watch]
