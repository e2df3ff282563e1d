"""``image-search search``: by text, example images, stored assets, with filters; here or
through a running server."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import click

from image_search_service.cli.common import (
    MODEL_CHOICE,
    echo_json,
    handing_off,
    opened_context,
)
from image_search_service.cli.remote import (
    running_server,
    search_via_server,
)
from image_search_service.core.config import ModelKey, Settings, load_settings
from image_search_service.core.errors import InvalidRequest, ServiceError
from image_search_service.core.specs import BASELINE
from image_search_service.images.loading import SUPPORTED_FORMATS

if TYPE_CHECKING:  # imported when a search runs: `image-search --help` stays light
    from image_search_service.services.search.schemas import SearchResponse


def _names(values: tuple[str, ...]) -> list[str]:
    """``--people Pat,Jack`` and ``--people Pat --people Jack`` mean the same."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


@click.command()
@click.argument("text", required=False)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="an example image (repeat for several; combines with TEXT)",
)
@click.option("--similar", "similar", multiple=True, help="asset id: photos like this one")
@click.option("--not", "negatives", multiple=True, help="text to push away from (repeatable)")
@click.option("--people", multiple=True, help="only photos with ALL these people (Pat,Jack)")
@click.option("--people-any", multiple=True, help="only photos with ANY of these people")
@click.option("--tags", multiple=True, help="only photos with ALL these tags")
@click.option("--text-weight", type=click.FloatRange(0, 10), default=1.0, show_default=True)
@click.option("--image-weight", type=click.FloatRange(0, 10), default=1.0, show_default=True)
@click.option("--not-weight", type=click.FloatRange(0, 10), default=1.0, show_default=True)
@click.option(
    "--literal", is_flag=True, help="embed TEXT as is: do not read person names out of it"
)
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0, 10_000), default=0)
@click.option(
    "--min-score",
    type=click.FloatRange(-1, 1),
    default=None,
    help="cosine floor (default: the model's relevance floor for a text search; -1: none)",
)
@click.option("--all", "show_all", is_flag=True, help="no relevance floor: rank the whole library")
@click.option("--model", type=MODEL_CHOICE, default=BASELINE, show_default=True)
@click.option("--format", "image_format", type=click.Choice(sorted(SUPPORTED_FORMATS)))
@click.option("--taken-after", type=click.DateTime(), help="EXIF capture time on or after")
@click.option("--taken-before", type=click.DateTime(), help="EXIF capture time before")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def search(
    text: str | None,
    images: tuple[Path, ...],
    similar: tuple[str, ...],
    negatives: tuple[str, ...],
    people: tuple[str, ...],
    people_any: tuple[str, ...],
    tags: tuple[str, ...],
    text_weight: float,
    image_weight: float,
    not_weight: float,
    literal: bool,
    limit: int,
    offset: int,
    min_score: float | None,
    show_all: bool,
    model: ModelKey,
    image_format: str | None,
    taken_after: datetime | None,
    taken_before: datetime | None,
    as_json: bool,
) -> None:
    """Search by TEXT, by example --image files, --similar to indexed assets, or any
    mix of them; --not pushes away from a text ("beach" --not "people", or "beach -people").

    Known person names in TEXT become filters: "Pat and Jack at the beach" finds photos
    with both Pat and Jack, ranked by "at the beach".

    While `image-search serve` runs on this DATA_DIR, the server answers.
    """
    if not (text or images or similar):
        raise click.UsageError("give TEXT, --image FILE or --similar ASSET_ID (or several)")
    for value in similar:
        try:
            UUID(value)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a valid asset id (UUID)", param_hint="--similar"
            ) from None
    for path in images:
        if not path.is_file():  # named in full: "photo.jpg" alone does not say where
            raise InvalidRequest(f"no such image file: {path.absolute()}")
    # The same form fields for the server and for this process (validated by the
    # server's own schema), so both read the options alike.
    fields: list[tuple[str, str]] = [
        ("text_weight", str(text_weight)),
        ("example_weight", str(image_weight)),
        ("not_weight", str(not_weight)),
        ("understand", str(not literal).lower()),
        ("limit", str(limit)),
        ("offset", str(offset)),
        ("model", model),
    ]
    fields += [("like", value) for value in similar]
    fields += [("not", value) for value in negatives]
    for name, values in (("people", people), ("people_any", people_any), ("tags", tags)):
        fields += [(name, value) for value in _names(values)]
    if show_all and min_score is not None:
        raise click.UsageError("give --all or --min-score, not both")
    if show_all:
        min_score = -1.0
    if min_score is not None:
        fields.append(("min_score", str(min_score)))
    if image_format:
        fields.append(("format", image_format))
    for name, moment in (("taken_after", taken_after), ("taken_before", taken_before)):
        if moment is not None:
            fields.append((name, moment.isoformat()))
    settings = load_settings()
    server = running_server(settings)
    if server is not None:
        sent = sum(path.stat().st_size for path in images)
        if sent > settings.max_upload_bytes:
            raise ServiceError(
                f"the --image files are {sent / 2**20:.1f} MiB together, over the upload "
                f"limit a server started with these settings has (MAX_UPLOAD_BYTES, "
                f"{settings.max_upload_bytes / 2**20:.1f} MiB): use smaller files, or stop "
                "the server to search with them here"
            )
        handing_off(server.url, as_json)
        response = search_via_server(server, text=text, images=list(images), fields=fields)
    else:
        response = _search_here(settings, text, images, fields, model)
    if as_json:
        echo_json(response.model_dump(mode="json"))
        return
    _print_search(response)


def _search_here(
    settings: Settings,
    text: str | None,
    images: tuple[Path, ...],
    fields: list[tuple[str, str]],
    model: ModelKey,
) -> SearchResponse:
    """The search in this process (no server holds the store): not routed and not
    recorded, so no ``search_id`` and no fallback."""
    from pydantic import ValidationError

    from image_search_service.api.errors import describe_validation_errors
    from image_search_service.services.search.schemas import (
        CombinedSearchParams,
        SearchResponse,
    )
    from image_search_service.services.search.service import (
        Example,
        SearchAnswer,
        SearchService,
    )

    form: dict[str, Any] = {"q": text}
    for name, value in fields:
        if name in _LIST_FIELDS:
            form.setdefault(name, []).append(value)
        else:
            form[name] = value
    try:
        params = CombinedSearchParams.model_validate(form)
    except ValidationError as exc:  # worded as the server words it (the same schema)
        raise InvalidRequest(describe_validation_errors(exc.errors())) from None
    query = params.combined(params.q)
    # Files stay paths here (read and bounded like indexed photos, not like uploads).
    files = tuple(Example(path, params.example_weight) for path in images)
    query = replace(query, examples=files + query.examples)
    with opened_context(settings) as ctx:
        outcome = SearchService(ctx).search_combined(query, model=model, options=params.options())
    return SearchResponse.model_validate(SearchAnswer(outcome, took_ms=outcome.took_ms))


_LIST_FIELDS = frozenset({"like", "not", "people", "people_any", "tags"})


_UNDERSTOOD_LISTS = (
    ("people", "people: all of "),
    ("people_any", "people: any of "),
    ("tags", "tags: "),
    ("negative", "not: "),
)


def _print_search(response: SearchResponse) -> None:
    if not response.close_matches:
        asked = response.understood.query if response.understood else None
        click.echo(
            f"No close matches for {asked!r}; the nearest few:"
            if asked
            else "No close matches; the nearest few:"
        )
    click.echo(
        f"{len(response.results)} results from {response.collection} ({response.model}) "
        f"in {response.took_ms:.0f} ms"
    )
    understood = response.understood
    if understood is not None:
        read = []
        if understood.concept is not None:
            read.append(f"concept {understood.concept!r}")
        for key, label in _UNDERSTOOD_LISTS:
            names: list[str] = getattr(understood, key)
            if names:
                read.append(f"{label}{', '.join(names)}")
        if understood.full_text:
            read.append("captions/tags matched")
        if read:
            click.echo("understood: " + "; ".join(read))
    for rank, hit in enumerate(response.results, start=response.offset + 1):
        calibrated = hit.calibrated_score
        shown = f"  p={calibrated:.3f}" if calibrated is not None else ""
        via = f"  ({hit.matched_by})" if hit.matched_by != "image" else ""
        click.echo(f"{rank:3d}. {hit.score:.4f}{shown}{via}  {hit.path}  [{hit.asset_id}]")
        if hit.people:
            click.echo(f"       people: {', '.join(p.name for p in hit.people)}")
        if hit.tags:
            click.echo(f"       tags: {', '.join(hit.tags)}")
        if hit.caption:
            click.echo(f"       caption: {hit.caption}")


COMMANDS: list[click.Command] = [search]
