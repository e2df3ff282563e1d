"""``image-search keys``: API keys kept in DATA_DIR (their digests, never the keys), picked
up by a running server within a second: keys are added, rotated and revoked without a
restart. ``API_KEY`` / ``READ_API_KEY`` in the environment keep working beside them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import click

from image_search_service.cli.common import echo_json
from image_search_service.core.config import load_settings


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (read: search and view; admin: everything)."""


@keys.command()
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "admin"]), default="read", show_default=True)
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="the key stops working after this many days (default: never)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def create(name: str, scope: str, expires_in_days: int | None, as_json: bool) -> None:
    """Make a key called NAME; it is printed once, and only its digest is kept."""
    from image_search_service.api.auth import (
        KEYS_FILE,
        ApiKey,
        digest,
        read_keys_file,
        write_keys_file,
    )

    settings = load_settings()
    path = settings.data_dir / KEYS_FILE
    existing = read_keys_file(path)
    if not name.strip() or any(k.name == name for k in existing):
        raise click.BadParameter(f"a key called {name!r} exists (or the name is empty)")
    key = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    write_keys_file(
        path,
        [*existing, ApiKey(name, "admin" if scope == "admin" else "read", digest(key), expires)],
    )
    if as_json:
        echo_json({"name": name, "scope": scope, "key": key, "expires_at": expires})
        return
    click.echo(key)
    click.echo(
        f"{scope} key {name!r} made{f', valid until {expires:%Y-%m-%d}' if expires else ''}; "
        "it is not shown again.",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def list_keys(as_json: bool) -> None:
    """The keys made here (names, scopes, expiry; never the keys)."""
    from image_search_service.api.auth import KEYS_FILE, read_keys_file

    settings = load_settings()
    found = read_keys_file(settings.data_dir / KEYS_FILE)
    now = datetime.now(UTC)
    rows = [
        {
            "name": k.name,
            "scope": k.scope,
            "expires_at": k.expires_at,
            "valid": k.valid(now),
        }
        for k in found
    ]
    if as_json:
        echo_json(
            {"keys": rows, "environment": _environment(settings.api_key, settings.read_api_key)}
        )
        return
    for row in rows:
        state = "valid" if row["valid"] else "expired"
        until = f" until {row['expires_at']:%Y-%m-%d}" if row["expires_at"] else ""
        click.echo(f"{row['name']:24s} {row['scope']:5s} {state}{until}")
    for line in _environment(settings.api_key, settings.read_api_key):
        click.echo(line)
    if not rows and not _environment(settings.api_key, settings.read_api_key):
        click.echo("no API keys: the API is open, and `serve` listens on this machine only")


def _environment(api_key: str | None, read_api_key: str | None) -> list[str]:
    lines = []
    if api_key:
        lines.append("API_KEY (environment): admin")
    if read_api_key:
        lines.append("READ_API_KEY (environment): read")
    return lines


@keys.command()
@click.argument("name")
def revoke(name: str) -> None:
    """Remove the key called NAME; its sessions end with it."""
    from image_search_service.api.auth import KEYS_FILE, read_keys_file, write_keys_file

    settings = load_settings()
    path = settings.data_dir / KEYS_FILE
    existing = read_keys_file(path)
    kept = [k for k in existing if k.name != name]
    if len(kept) == len(existing):
        raise click.ClickException(f"no key called {name!r} (see `image-search keys list`)")
    write_keys_file(path, kept)
    click.echo(f"revoked {name!r}", err=True)


COMMANDS: list[click.Command] = [keys]
