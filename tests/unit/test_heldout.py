"""The held-out evaluation set (demo/heldout.py): reproducible, independent captions."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from image_search_service.demo.heldout import write_heldout
from image_search_service.demo.ollama_standin import words
from image_search_service.images.metadata import read_metadata


def test_the_set_is_reproducible_and_captions_use_other_words(tmp_path: Path) -> None:
    first = write_heldout(tmp_path / "a", 60, seed=7)
    again = write_heldout(tmp_path / "b", 60, seed=7)
    assert [(p.labels, p.caption) for p in first] == [(p.labels, p.caption) for p in again]
    assert [p.path.read_bytes() for p in first] == [p.path.read_bytes() for p in again]
    captioned = [p for p in first if p.caption]
    assert 0 < len(captioned) < len(first)  # some photos have no caption at all
    # Most captions name the shape in other words than the label, so full text misses
    # them; the synonym table maps every word back.
    literal = sum(any(label in (p.caption or "") for label in p.labels) for p in captioned)
    assert literal < len(captioned) / 4
    for photo in captioned:
        meant = set(words(photo.caption or ""))
        assert any(set(label.split()[1:]) <= meant for label in photo.labels), photo.caption
    with Image.open(first[0].path) as image:
        assert image.format == "JPEG"
    assert read_metadata(captioned[0].path).caption == captioned[0].caption
