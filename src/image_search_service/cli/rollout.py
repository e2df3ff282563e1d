"""``image-search experiment``: the rollout experiment's report, and pruning its log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from image_search_service.cli.common import echo_json
from image_search_service.core.config import load_settings

if TYPE_CHECKING:
    from image_search_service.services.rollout.report import ExperimentReport


@click.group()
def experiment() -> None:
    """The SigLIP rollout experiment: which model do users click more?"""


@experiment.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="only searches at or after this time (UTC)",
)
@click.option(
    "--min-effect",
    type=click.FloatRange(0.001, 0.5),
    default=0.02,
    show_default=True,
    help="absolute CTR change the sample size is computed for",
)
def report(as_json: bool, since: datetime | None, min_effect: float) -> None:
    """Per-arm metrics, differences with significance, and a recommendation."""
    from image_search_service.services.rollout.report import report_for
    from image_search_service.services.rollout.schemas import ExperimentReportOut

    when = since.replace(tzinfo=UTC) if since is not None else None
    result = report_for(load_settings(), since=when, min_effect=min_effect)
    if as_json:
        echo_json(ExperimentReportOut.model_validate(result).model_dump(mode="json"))
        return
    _print(result)


@experiment.command()
def prune() -> None:
    """Delete recorded searches and events older than EXPERIMENT_RETENTION_DAYS."""
    from image_search_service.services.rollout.report import prune_for

    removed = prune_for(load_settings(), now=datetime.now(UTC))
    click.echo(f"pruned {removed} searches")


def _print(result: ExperimentReport) -> None:
    # The live flags (stored in the DB wins over the environment), as the server routes.
    click.echo(
        f"live flags ({result.flags_source}): use_siglip={str(result.use_siglip).lower()} "
        f"siglip_rollout_percentage={result.siglip_rollout_percentage} "
        f"interleave_percentage={result.interleave_percentage}"
        + (
            f", changed {result.flags_changed_at.isoformat()} by {result.flags_changed_by}"
            if result.flags_changed_at
            else ""
        )
        + (f"; since {result.since.isoformat()}" if result.since else "")
    )
    header = (
        "arm", "searches", "CTR", "CTR@1", "CTR@5", "MRR", "zero", "aband", "reform",
        "p50ms", "p95ms",
    )  # fmt: skip
    click.echo(" ".join(f"{h:>11}" for h in header))
    for arm in result.arms.values():
        cells = [
            arm.arm,
            f"{arm.searches:,}",
            f"{arm.ctr:.1%}",
            f"{arm.ctr_at_1:.1%}",
            f"{arm.ctr_at_5:.1%}",
            f"{arm.mrr:.3f}",
            f"{arm.zero_result_rate:.1%}",
            f"{arm.abandonment_rate:.1%}",
            f"{arm.reformulation_rate:.1%}",
            "-" if arm.latency_p50_ms is None else f"{arm.latency_p50_ms:.0f}",
            "-" if arm.latency_p95_ms is None else f"{arm.latency_p95_ms:.0f}",
        ]
        click.echo(" ".join(f"{c:>11}" for c in cells))
    if not result.comparisons:
        click.echo("A/B: no comparison while an arm has no searches")
    for c in result.comparisons:
        click.echo(
            f"{c.metric}: {result.candidate} - {result.baseline} = {c.effect}, "
            f"p={c.p_value:.3g} ({c.method})"
        )
    il = result.interleaving
    share = (
        f", win share {il.win_share:.0%} [{il.win_share_ci_low:.0%}, {il.win_share_ci_high:.0%}]"
        if il.win_share is not None
        and il.win_share_ci_low is not None
        and il.win_share_ci_high is not None
        else ""
    )
    click.echo(
        f"interleaving: {il.searches} searches, {il.wins} wins / {il.losses} losses / "
        f"{il.ties} ties for {result.candidate}{share}, p={il.p_value:.3g} ({il.method})"
    )
    for g in result.guardrails:
        click.echo(f"guardrail {'BREACHED' if g.breached else 'ok'}: {g.text}")
    click.echo(f"recommendation: {result.recommendation.text}")


COMMANDS: list[click.Command] = [experiment]
