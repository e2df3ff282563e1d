"""Calibrate a model's relevance floor: the cosine that unrelated prompts rarely reach.

A text search shows only results at or above the model's floor (core/specs.py,
docs/configuration.md "Relevance floor"). This script measures one on an indexed library:
the cosine between every photo and a set of prompts unrelated to it, and prints its
percentiles. The floor is the 99th percentile (1 % of unrelated pairs pass it), rounded up
to two places; the 95th is printed beside it for a looser choice.

Which pairs are unrelated:
- ``--demo``: the demo library (run ``image-search demo`` first). File names say which
  shapes a picture shows, so a pair is unrelated when the prompt's label is not in the
  picture; the script also prints what a floor keeps of the related pairs, and the
  highest score of each ``UNRELATED_PROMPTS`` prompt (words the demo models never saw
  all map to the same few vectors, which some pictures happen to match well).
- otherwise: your library under DATA_DIR and the model settings of the environment, with
  prompts that are unlikely to describe any of your photos (``UNRELATED_PROMPTS``, or
  ``--prompts FILE``, one a line). Look at the photos above the figure before trusting it.

For a model trained with a sigmoid loss (SigLIP) the floor can come from its calibrated
probability instead; the script prints the cosine of p = 0.5 and p = 0.01 for comparison.

    python scripts/calibrate_floor.py --demo --model clip
    python scripts/calibrate_floor.py --model siglip --prompts my-unrelated.txt
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from image_search_service.context import open_context
from image_search_service.core.config import ModelKey, Settings, load_settings
from image_search_service.db import repository as repo
from image_search_service.db.models import AssetStatus

# Things a photo library rarely shows: the 99th percentile of these is the noise level.
UNRELATED_PROMPTS = (
    "zebra on a beach",
    "a spreadsheet of quarterly tax figures",
    "an x-ray of a broken femur",
    "a circuit diagram of a radio receiver",
    "the periodic table of elements",
    "a jellyfish in a microwave",
    "handwritten calculus homework",
    "a submarine in a desert",
    "a blank white page",
    "qwzx plorb fendish vark",
    "a barcode",
    "a screenshot of a terminal window",
    "an astronaut riding a camel on the moon",
    "a close-up of a printed circuit board",
    "a weather map of the north atlantic",
    "an empty parking garage at night",
)
LABEL_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
LABEL_SHAPES = ("circle", "square", "triangle", "star", "cross")


def library_vectors(settings: Settings, model: ModelKey) -> tuple[list[str], np.ndarray]:
    """The paths and stored vectors of every active asset the model embedded."""
    ctx = open_context(settings)
    try:
        with ctx.transaction() as session:
            assets, _total = repo.list_assets(session, limit=1_000_000, offset=0)
            active = {a.id: a.path for a in assets if a.status == AssetStatus.ACTIVE}
        stored = ctx.store.retrieve_vectors(ctx.spec(model).collection, list(active))
        paths = [active[i] for i in stored]
        matrix = np.stack([np.asarray(stored[i], dtype=np.float32) for i in stored])
    finally:
        ctx.close()
    return paths, matrix


def encode_prompts(settings: Settings, model: ModelKey, prompts: list[str]) -> np.ndarray:
    ctx = open_context(settings)
    try:
        encoder = ctx.encoder(model)
        vectors = np.asarray(encoder.encode_text(prompts), dtype=np.float32)
        for p in (0.5, 0.01):
            cosine = encoder.cosine_at(p)
            if cosine is not None:
                print(f"calibrated probability {p}: cosine {cosine:.4f}")
    finally:
        ctx.close()
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("clip", "siglip"), default="clip")
    parser.add_argument("--demo", action="store_true", help="the demo library and models")
    parser.add_argument("--prompts", type=Path, help="unrelated prompts, one a line")
    parser.add_argument(
        "--try-floor", type=float, action="append", default=[], help="--demo: also report this"
    )
    args = parser.parse_args()
    model: ModelKey = args.model
    settings = load_settings()
    if args.demo:
        from image_search_service.demo.run import demo_settings

        settings = demo_settings(settings)
        prompts = [f"a {c} {s}" for c in LABEL_COLOURS for s in LABEL_SHAPES]
    elif args.prompts:
        prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    else:
        prompts = list(UNRELATED_PROMPTS)
    paths, photos = library_vectors(settings, model)
    texts = encode_prompts(settings, model, prompts)
    cosines = photos @ texts.T  # photos x prompts
    if args.demo:
        nonsense = photos @ encode_prompts(settings, model, list(UNRELATED_PROMPTS)).T
        for prompt, top in sorted(
            zip(UNRELATED_PROMPTS, nonsense.max(axis=0), strict=True), key=lambda x: -x[1]
        ):
            print(f"highest score of {prompt!r}: {top:.4f}")
        labels = [p.removeprefix("a ").replace(" ", "-") for p in prompts]
        related = np.array([[label in Path(path).name for label in labels] for path in paths])
        unrelated = cosines[~related]
    else:
        related = None
        unrelated = cosines.ravel()
    p95, p99 = (float(np.percentile(unrelated, q)) for q in (95, 99))
    floor = math.ceil(p99 * 100) / 100
    print(
        f"{model}: {len(paths)} photos x {len(prompts)} prompts, {unrelated.size} unrelated pairs"
    )
    print(f"unrelated cosine: mean {unrelated.mean():.4f}, p95 {p95:.4f}, p99 {p99:.4f}")
    if related is not None:
        matching = cosines[related]
        print(
            f"related cosine: mean {matching.mean():.4f}, p5 "
            f"{float(np.percentile(matching, 5)):.4f}"
        )
        for candidate in sorted({floor, *args.try_floor}):
            kept = (cosines >= candidate) & related
            print(
                f"floor {candidate:.2f} keeps {float((matching >= candidate).mean()):.1%} of "
                f"related pairs; labels with no close match: "
                f"{int(((kept.sum(axis=0) == 0) & (related.sum(axis=0) > 0)).sum())}"
            )
    print(f"floor (p99, rounded up): {floor:.2f}")


if __name__ == "__main__":
    main()
