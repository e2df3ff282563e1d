"""Fusing the image, full-text and caption-space rankings (services/search/fusion.py)."""

from __future__ import annotations

from uuid import UUID

import pytest

from image_search_service.services.search.fusion import RRF_K, fuse, matched_by
from image_search_service.services.search.service import TEXT_CANDIDATES, caption_floor

A, B, C, D = (UUID(int=i) for i in range(1, 5))


def order(**kwargs: object) -> list[UUID]:
    return [f.asset_id for f in fuse(**kwargs)]  # type: ignore[arg-type]


def test_rrf_sums_one_over_k_plus_rank_per_list() -> None:
    fused = fuse(
        visual=[A, B],
        full_text=[B],
        caption=[(C, 0.9), (B, 0.8)],
        image_scores={A: 0.3, B: 0.2, C: 0.1},
    )
    scores = {f.asset_id: f.score for f in fused}
    assert scores[A] == pytest.approx(1 / (RRF_K + 1))
    assert scores[B] == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1) + 1 / (RRF_K + 2))
    assert scores[C] == pytest.approx(1 / (RRF_K + 1))
    assert [f.asset_id for f in fused] == [B, A, C]  # A and C tie: the image cosine decides
    assert {f.asset_id: f.spaces for f in fused} == {
        A: ("image",),
        B: ("image", "text", "caption"),
        C: ("caption",),
    }


def test_rrf_ties_fall_back_to_the_id() -> None:
    assert order(visual=[], full_text=[], caption=[(B, 0.5), (A, 0.5)], image_scores={}) == [B, A]
    assert order(visual=[B], full_text=[A], caption=[], image_scores={A: 0.1, B: 0.1}) == [A, B]


def test_weighted_follows_the_weighted_cosines() -> None:
    images = {A: 0.9, B: 0.5, C: 0.4}
    captions = [(C, 0.95), (B, 0.6)]
    # Mostly the image: 0.84 (A, outside the list: the floor 0.6), 0.52 (B), 0.51 (C).
    by_image = order(
        visual=[A, B, C],
        full_text=[],
        caption=captions,
        image_scores=images,
        method="weighted",
        caption_weight=0.2,
        caption_floor=0.6,
    )
    assert by_image == [A, B, C]
    # Mostly the caption: 0.895 (C), 0.63 (A), 0.59 (B).
    by_caption = order(
        visual=[A, B, C],
        full_text=[],
        caption=captions,
        image_scores=images,
        method="weighted",
        caption_weight=0.9,
        caption_floor=0.6,
    )
    assert by_caption == [C, A, B]


def test_weighted_still_joins_full_text_by_rank() -> None:
    fused = fuse(
        visual=[A, B],
        full_text=[D],
        caption=[],
        image_scores={A: 0.9, B: 0.8, D: 0.1},
        method="weighted",
    )
    assert [f.asset_id for f in fused] == [A, D, B]
    assert fused[1].spaces == ("text",)


@pytest.mark.parametrize(
    ("spaces", "expected"),
    [
        (("image",), "image"),
        (("text",), "text"),
        (("caption",), "text"),
        (("text", "caption"), "text"),
        (("image", "caption"), "both"),
        (("image", "text"), "both"),
    ],
)
def test_matched_by_says_picture_words_or_both(spaces: tuple[str, ...], expected: str) -> None:
    assert matched_by(spaces) == expected  # type: ignore[arg-type]


def test_the_caption_floor_bounds_what_a_missing_photo_scored() -> None:
    assert caption_floor(0.5, [(A, 0.9), (B, 0.7)]) == 0.5  # cut by the minimum score
    full = [(UUID(int=i), 1.0 - i / 1000) for i in range(TEXT_CANDIDATES)]
    assert caption_floor(0.5, full) == full[-1][1]  # cut by the candidate count
