"""How many searches does each design need to find the better model? (docs/rollout.md)

Builds the simulated-user world of the experiment test (held-out 4.5:1 synthetic
pictures, both shipped demo models, the position-biased click model of
``image_search_service.demo.simulation``), asks the real search service once for each
model's top 10 per query (the answers are deterministic), then replays many simulated
experiments on those answers with the report's own tests:

- A/B: searches split evenly between the models; significant when the two-proportion
  z-test on click-through rate gives p < 0.05 in the right direction;
- interleaving: every search merged by team draft; significant when the sign test on
  per-search wins and losses gives p < 0.05 in the right direction.

It prints, for each number of searches, the share of replications that found the
better model (the power), and the ratio of searches each design needs for 80 % power.

    python scripts/simulate_experiment.py [--replications 200] [--seed 2026]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from image_search_service.context import open_context
from image_search_service.core.config import MODEL_KEYS, Settings
from image_search_service.demo.simulation import QUERIES, ClickModel, query_label, write_panoramas
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.rollout.interleaving import team_draft
from image_search_service.services.rollout.stats import sign_test, two_proportion_test
from image_search_service.services.search.service import SearchOptions, SearchService

SIZES = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400)
CLICKS = ClickModel()
# model -> query -> the top 10 as (path, shows the queried label)
Answers = dict[str, dict[str, list[tuple[str, bool]]]]


def answers(seed: int, pictures: int, aspect: float) -> Answers:
    """Per model and query: the top 10, and which show the queried label."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = write_panoramas(root / "photos", pictures, seed=seed, aspect=aspect)
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            clip_model_name="demo-clip",
            clip_pretrained="",
            siglip_model_name="demo-siglip",
            siglip_pretrained="",
            batch_size=32,
        )
        ctx = open_context(settings, encoders=EncoderRegistry(device="cpu"))
        try:
            index_paths(ctx, [root / "photos"], model_keys=list(MODEL_KEYS))
            search = SearchService(ctx)
            result: Answers = {}
            for model in MODEL_KEYS:
                search.text_cache.warm(ctx.encoder(model), list(QUERIES))
                result[model] = {}
                for query in QUERIES:
                    outcome = search.search_text(
                        query, model=model, options=SearchOptions(limit=10)
                    )
                    label = query_label(query)
                    result[model][query] = [
                        (h.path, label in labels[h.path]) for h in outcome.results
                    ]
            return result
        finally:
            ctx.close()


def better_model(lists: Answers) -> str:
    def expected_clicks(model: str) -> float:
        return sum(
            sum(
                CLICKS.examine**r * CLICKS.click_relevant
                for r, (_path, rel) in enumerate(ranked)
                if rel
            )
            for ranked in lists[model].values()
        )

    return max(MODEL_KEYS, key=expected_clicks)


def ab_finds(lists: Answers, n: int, best: str, rng: random.Random) -> bool:
    clicked = dict.fromkeys(MODEL_KEYS, 0)
    shown = dict.fromkeys(MODEL_KEYS, 0)
    for i in range(n):
        model = MODEL_KEYS[i % 2]
        shown[model] += 1
        ranked = lists[model][rng.choice(QUERIES)]
        clicked[model] += bool(CLICKS.clicks([rel for _path, rel in ranked], rng))
    a, b = MODEL_KEYS
    test = two_proportion_test(clicked[a], shown[a], clicked[b], shown[b])
    return test.significant and (test.difference > 0) == (best == b)


def interleaving_finds(lists: Answers, n: int, best: str, rng: random.Random) -> bool:
    a, b = MODEL_KEYS
    wins = losses = 0  # for b
    for _ in range(n):
        query = rng.choice(QUERIES)
        merged = team_draft(lists[a][query], lists[b][query], length=10, rng=rng)
        ranks = CLICKS.clicks([rel for rel, _team in merged], rng)
        credit = [sum(merged[r - 1][1] == team for r in ranks) for team in (0, 1)]
        wins += credit[1] > credit[0]
        losses += credit[1] < credit[0]
    test = sign_test(wins, losses)
    return test.p_value < 0.05 and (wins > losses) == (best == b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--pictures", type=int, default=200)
    parser.add_argument("--aspect", type=float, default=4.5)
    args = parser.parse_args()
    lists = answers(args.seed, args.pictures, args.aspect)
    best = better_model(lists)
    print(f"better model by expected clicks: {best}")
    rng = random.Random(args.seed)
    needed: dict[str, int | None] = {"A/B": None, "interleaving": None}
    print(f"{'searches':>9} {'A/B power':>10} {'interleaving power':>19}")
    for n in SIZES:
        powers = {}
        for name, finds in (("A/B", ab_finds), ("interleaving", interleaving_finds)):
            if needed[name] is not None and name == "interleaving" and n > 4 * (needed[name] or 0):
                powers[name] = 1.0
                continue
            hits = sum(finds(lists, n, best, rng) for _ in range(args.replications))
            powers[name] = hits / args.replications
            if needed[name] is None and powers[name] >= 0.8:
                needed[name] = n
        print(f"{n:>9} {powers['A/B']:>10.2f} {powers['interleaving']:>19.2f}")
        if needed["A/B"] is not None:
            break
    ab, il = needed["A/B"], needed["interleaving"]
    if ab and il:
        print(f"80 % power: A/B {ab} searches, interleaving {il}: ratio {ab / il:.0f}x")
    else:
        print(f"80 % power: A/B {ab or '>' + str(SIZES[-1])}, interleaving {il}")


if __name__ == "__main__":
    main()
