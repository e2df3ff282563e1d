"""Simulated users for the rollout experiment, on pictures whose content is known.

Used by the simulated-user test (``tests/integration/test_experiment_simulation.py``)
and ``scripts/simulate_experiment.py``. Users search for one of the 40 colour-shape
labels and click by a position-biased model: rank r (from 1) is looked at with
probability ``examine ** (r - 1)``, and a looked-at result is clicked with probability
``click_relevant`` when the picture shows the label, ``click_other`` when not.

The pictures are held out (their own seed, never seen in training) and shaped like
panoramas and portraits (``aspect``:1): there the shipped demo models differ, because
demo-clip centre-crops (the shapes lie in the centred square) while demo-siglip
squashes the whole picture to a square.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from image_search_service.demo.synthetic import ALL_SPECS, file_stem, render_picture

QUERIES: tuple[str, ...] = tuple(f"a {spec.label}" for spec in ALL_SPECS)


def query_label(query: str) -> str:
    return query.removeprefix("a ")


def write_panoramas(
    root: Path, count: int, *, seed: int, aspect: float = 4.5
) -> dict[str, frozenset[str]]:
    """Write ``count`` JPEGs (70 % one shape, 30 % two) and return resolved path ->
    labels."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels: dict[str, frozenset[str]] = {}
    for index in range(count):
        short = rng.randint(90, 140)
        long = int(short * aspect)
        size = (long, short) if rng.random() < 0.5 else (short, long)
        shapes = rng.sample(ALL_SPECS, 1 if rng.random() < 0.7 else 2)
        picture = render_picture(shapes, rng=rng, size=size)
        path = root / f"{file_stem(index, picture)}.jpg"
        picture.image.save(path, "JPEG", quality=rng.randint(55, 95))
        labels[str(path.resolve())] = picture.labels
    return labels


@dataclass(frozen=True)
class ClickModel:
    examine: float = 0.8
    click_relevant: float = 0.6
    click_other: float = 0.02

    def clicks(self, relevant: Sequence[bool], rng: random.Random) -> list[int]:
        """The 1-based ranks clicked, given which results are relevant."""
        ranks = []
        for rank, is_relevant in enumerate(relevant, start=1):
            looked = rng.random() < self.examine ** (rank - 1)
            chance = self.click_relevant if is_relevant else self.click_other
            if looked and rng.random() < chance:
                ranks.append(rank)
        return ranks
