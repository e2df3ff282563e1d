"""``image-search serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import click

from image_search_service.cli.remote import advertised
from image_search_service.core.config import load_settings

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


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
def serve(host: str | None, port: int, preload: bool | None) -> None:
    """Run the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from image_search_service.api.app import create_app

    # Flags are validated here, before anything opens: a bad value stops start-up.
    settings = load_settings(**({} if preload is None else {"preload_models": preload}))
    if settings.api_key is None:
        host = host or "127.0.0.1"
        click.echo(
            f"API_KEY is not set: uploads, deletes and /api/v1/admin need no key, so the "
            f"server binds to {host} only.",
            err=True,
        )
        if host not in _LOOPBACK:
            click.echo(
                f"warning: --host {host} without API_KEY lets anyone who can reach this "
                "address change the library; set API_KEY.",
                err=True,
            )
    else:
        host = host or "0.0.0.0"
    click.echo(f"serving on http://{host}:{port} (docs at /docs)", err=True)
    from image_search_service.api.serving import settings_for_host, uvicorn_limits

    settings = settings_for_host(settings, host)
    # The CLI finds this server in DATA_DIR and hands it the work on the store it holds.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    with advertised(settings, f"http://{_bracketed(local)}:{port}") as withdraw:
        uvicorn.run(
            create_app(settings, on_shutdown=withdraw),
            host=host,
            port=port,
            **uvicorn_limits(settings),
        )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


COMMANDS: list[click.Command] = [serve]
