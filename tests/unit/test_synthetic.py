"""Tests of the synthetic picture generator used by the demo models and tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from image_search_service.demo.synthetic import (
    ALL_SPECS,
    COLOURS,
    SHAPES,
    ShapeSpec,
    caption_for,
    random_picture,
    render_picture,
    write_library,
)


def test_vocabulary() -> None:
    assert len(COLOURS) == 8
    assert len(SHAPES) == 5
    assert len(ALL_SPECS) == len(set(ALL_SPECS)) == 40


def test_random_picture_is_deterministic_given_the_seed() -> None:
    first = [random_picture(random.Random(7)) for _ in range(2)]
    assert first[0].caption == first[1].caption
    assert first[0].image.size == first[1].image.size
    assert first[0].image.tobytes() == first[1].image.tobytes()

    other = random_picture(random.Random(8))
    assert other.image.tobytes() != first[0].image.tobytes()


def test_captions_match_labels() -> None:
    rng = random.Random(3)
    pictures = [random_picture(rng, two_shape_probability=0.5) for _ in range(40)]
    assert {len(p.shapes) for p in pictures} == {1, 2}
    for picture in pictures:
        assert picture.caption == caption_for(picture.shapes)
        assert picture.labels == {f"{s.colour} {s.shape}" for s in picture.shapes}
        for label in picture.labels:
            assert label in picture.caption
        assert picture.image.mode == "RGB"


def test_caption_wording() -> None:
    assert caption_for([ShapeSpec("red", "circle")]) == "a red circle"
    assert caption_for([ShapeSpec("orange", "star")]) == "an orange star"
    assert (
        caption_for([ShapeSpec("red", "circle"), ShapeSpec("blue", "star")])
        == "a red circle and a blue star"
    )


def test_render_picture_uses_size_and_validates() -> None:
    picture = render_picture([ShapeSpec("blue", "cross")], rng=random.Random(0), size=(200, 120))
    assert picture.image.size == (200, 120)
    assert picture.labels == frozenset({"blue cross"})
    with pytest.raises(ValueError, match="colour"):
        ShapeSpec("pink", "circle")
    with pytest.raises(ValueError, match="one or two"):
        render_picture([], rng=random.Random(0))


def test_write_library_writes_valid_varied_jpegs(tmp_path: Path) -> None:
    written = write_library(tmp_path / "a", 12, seed=5)
    assert len(written) == 12
    sizes = set()
    for path, picture in written:
        assert path.suffix == ".jpg"
        for label in picture.labels:
            assert label.replace(" ", "-") in path.name
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == picture.image.size
            image.load()
            sizes.add(image.size)
    assert len(sizes) > 1
    assert len({path.parent for path, _ in written}) > 1

    again = write_library(tmp_path / "b", 12, seed=5)
    for (first, _), (second, _) in zip(written, again, strict=True):
        assert first.relative_to(tmp_path / "a") == second.relative_to(tmp_path / "b")
        assert first.read_bytes() == second.read_bytes()
