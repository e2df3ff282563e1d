"""``image-search serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import logging

import click

from image_search_service.cli.remote import advertised, running_server
from image_search_service.core.config import Settings, load_settings
from image_search_service.core.errors import ServiceError

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
def serve(host: str | None, port: int, preload: bool | None, allow_unauthenticated: bool) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    # Flags are validated here, before anything opens: a bad value stops start-up.
    settings = load_settings(**({} if preload is None else {"preload_models": preload}))
    run_server(settings, host=host, port=port, allow_unauthenticated=allow_unauthenticated)


def run_server(
    settings: Settings, *, host: str | None, port: int, allow_unauthenticated: bool
) -> None:
    """Serve ``settings``' library until stopped: the checks, server.json, uvicorn, and
    the models warmed up in the background."""
    import uvicorn

    from image_search_service.api.app import create_app
    from image_search_service.api.auth import KeyRing, exposed
    from image_search_service.context import ensure_writable

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
    from image_search_service.api.serving import settings_for_host, uvicorn_limits

    settings = settings_for_host(settings, host)
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


COMMANDS: list[click.Command] = [serve]
