"""What every command shares: the group, JSON output, the opened context, progress."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from image_search_service.core.config import MODEL_KEYS, Settings, load_settings
from image_search_service.core.errors import ServiceError
from image_search_service.core.logging import configure_logging

if TYPE_CHECKING:
    from tqdm import tqdm

    from image_search_service.context import ServiceContext

MODEL_CHOICE = click.Choice(list(MODEL_KEYS))
FAILURES_SHOWN = 20


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def handing_off(url: str, quiet: bool = False) -> None:
    """Say (on stderr) that a running server does this command's work."""
    if not quiet:
        click.echo(f"a server is running on this DATA_DIR ({url}): asking it", err=True)


@contextmanager
def opened_context(settings: Settings | None = None) -> Iterator[ServiceContext]:
    """The settings, DB, vector store and encoders for one command, closed after it."""
    from image_search_service.context import open_context

    ctx = open_context(settings or load_settings())
    try:
        yield ctx
    finally:
        ctx.close()


class ProgressBar:
    """The one progress bar of the CLI (tqdm on stderr), shown only on a terminal.

    ``start`` fits the services' progress factories (total -> tick function); ``show``
    sets an absolute position for views that poll (``reembed status --watch``).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._bar: tqdm[Any] | None = None

    def start(self, total: int) -> Callable[[int], None]:
        self._open(total)
        return self.advance

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def show(self, position: int, total: int, note: str = "") -> None:
        self._open(total)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = position
            self._bar.set_postfix_str(note)
            self._bar.refresh()

    def _open(self, total: int) -> None:
        if self._bar is None and self.enabled and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="img", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def describe_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no recent progress)"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class _Group(click.Group):
    """Turns expected errors into one clear line and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ServiceError as exc:
            click.echo(f"error: {exc.detail}", err=True)
            sys.exit(1)
        except FileNotFoundError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default: LOG_LEVEL or INFO)")
def main(log_level: str | None) -> None:
    """Semantic search for your photo library (CLIP / SigLIP + Qdrant)."""
    configure_logging(log_level)
