"""Fusing rankings from several spaces into one: the image space (cosine to the query),
full text (caption words), and the caption space (caption meaning).

Two ways, both measured by scripts/benchmark_quality.py (docs/performance.md):

- ``rrf``: reciprocal rank fusion (Cormack et al. 2009), 1 / (k + rank) per list. Needs
  no calibration between spaces, whose cosines live on different scales.
- ``weighted``: ``(1 - w) * image cosine + w * caption cosine`` for the two embedding
  spaces (a photo outside the caption list gets ``caption_floor``, a bound on what it
  would have scored), then joined with full text by rank as above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

# Reciprocal rank fusion constant (Cormack et al. 2009).
RRF_K = 60

Space = Literal["image", "text", "caption"]
FusionMethod = Literal["rrf", "weighted"]


@dataclass(frozen=True)
class Fused:
    asset_id: UUID
    score: float  # the fused score the order follows
    spaces: tuple[Space, ...]  # where it was found, in this order: image, text, caption


def _rrf(ranking: Sequence[UUID], into: dict[UUID, float]) -> None:
    for rank, asset_id in enumerate(ranking, start=1):
        into[asset_id] = into.get(asset_id, 0.0) + 1.0 / (RRF_K + rank)


def fuse(
    *,
    visual: Sequence[UUID],
    full_text: Sequence[UUID],
    caption: Sequence[tuple[UUID, float]],
    image_scores: Mapping[UUID, float],
    method: FusionMethod = "rrf",
    caption_weight: float = 0.5,
    caption_floor: float = 0.0,
) -> list[Fused]:
    """Every candidate, best first. ``visual`` is the image ranking; ``full_text`` and
    ``caption`` (with caption cosines) are rankings already restricted to photos that
    pass the filters; ``image_scores`` holds every candidate's image cosine (the tie
    breaker, and the weighted sum's image term); ``caption_floor`` bounds the caption
    cosine of a photo outside ``caption`` (where the list was cut)."""
    fused: dict[UUID, float] = {}
    if method == "rrf":
        _rrf(visual, fused)
        _rrf([asset_id for asset_id, _ in caption], fused)
    else:
        caption_scores = dict(caption)
        both = dict.fromkeys([*visual, *caption_scores])
        weighted = {
            i: (1.0 - caption_weight) * image_scores.get(i, 0.0)
            + caption_weight * caption_scores.get(i, caption_floor)
            for i in both
        }
        _rrf(sorted(weighted, key=lambda i: (-weighted[i], str(i))), fused)
    _rrf(full_text, fused)
    found: tuple[tuple[Space, set[UUID]], ...] = (
        ("image", set(visual)),
        ("text", set(full_text)),
        ("caption", {i for i, _ in caption}),
    )
    order = sorted(fused, key=lambda i: (-fused[i], -image_scores.get(i, -2.0), str(i)))
    return [
        Fused(
            asset_id=i,
            score=fused[i],
            spaces=tuple(space for space, ids in found if i in ids),
        )
        for i in order
    ]


def matched_by(spaces: Sequence[Space]) -> Literal["image", "text", "both"]:
    """The coarse answer the page shows: the picture, the words written about it (full
    text or caption space), or both."""
    words = "text" in spaces or "caption" in spaces
    if "image" in spaces:
        return "both" if words else "image"
    return "text"
