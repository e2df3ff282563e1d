"""``image-search duplicates``: groups of near-identical photos from the stored vectors."""

from __future__ import annotations

import click

from image_search_service.cli.common import MODEL_CHOICE, echo_json, opened_context
from image_search_service.core.config import ModelKey
from image_search_service.core.specs import BASELINE

GROUPS_SHOWN = 50


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
    """List groups of near-duplicate photos (re-saves, resizes, crops, bursts)."""
    from image_search_service.services.duplicates import find_duplicates

    with opened_context() as ctx:
        report = find_duplicates(ctx, model=model, threshold=threshold, limit=limit)
    if as_json:
        echo_json(report.as_dict())
        return
    click.echo(
        f"{report.total_groups} groups of near-duplicates among {report.scanned} photos "
        f"({report.model}, threshold {report.threshold:.3f}, {report.seconds:.1f}s)"
    )
    for number, group in enumerate(report.groups[:GROUPS_SHOWN], start=1):
        click.echo(f"group {number}: {len(group.members)} photos, min score {group.min_score:.3f}")
        for member in group.members:
            click.echo(f"  {member.asset_id}  {member.path}")
    if len(report.groups) > GROUPS_SHOWN:
        click.echo(f"... and {len(report.groups) - GROUPS_SHOWN} more groups (--json for all)")


COMMANDS: list[click.Command] = [duplicates]
