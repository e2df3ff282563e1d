"""Team-draft interleaving: a fair merge whose teams are known."""

from __future__ import annotations

import hashlib
import random

from image_search_service.services.rollout.interleaving import draft_seed, team_draft


def _draft(a: list[str], b: list[str], length: int, seed: int) -> list[tuple[str, int]]:
    return team_draft(
        [(x, x) for x in a], [(x, x) for x in b], length=length, rng=random.Random(seed)
    )


def test_each_team_keeps_its_order_and_no_result_repeats() -> None:
    a = [f"a{i}" for i in range(10)] + ["shared"]
    b = ["shared"] + [f"b{i}" for i in range(10)]
    for seed in range(50):
        merged = _draft(a, b, 12, seed)
        items = [item for item, _ in merged]
        assert len(items) == len(set(items)) == 12
        for team, ranking in ((0, a), (1, b)):
            picked = [item for item, t in merged if t == team]
            assert picked == sorted(picked, key=ranking.index)
        counts = [sum(t == team for _, t in merged) for team in (0, 1)]
        assert abs(counts[0] - counts[1]) <= 1


def test_the_first_pick_is_a_fair_coin() -> None:
    firsts = [_draft(["x1", "x2"], ["y1", "y2"], 4, seed)[0][1] for seed in range(2000)]
    assert 900 < sum(firsts) < 1100


def test_identical_rankings_merge_to_the_same_ranking() -> None:
    ranking = [f"r{i}" for i in range(8)]
    merged = _draft(ranking, ranking, 8, seed=3)
    assert [item for item, _ in merged] == ranking


def test_a_short_list_leaves_the_rest_to_the_other_team() -> None:
    merged = _draft(["a1"], ["b1", "b2", "b3", "b4"], 10, seed=0)
    assert sorted(item for item, _ in merged) == ["a1", "b1", "b2", "b3", "b4"]
    assert [t for item, t in merged if item.startswith("b")] == [1, 1, 1, 1]
    assert _draft([], [], 5, seed=0) == []


def test_the_seed_is_stable_per_query() -> None:
    assert draft_seed("u1", "text", "a red circle") == draft_seed("u1", "text", "a red circle")
    assert draft_seed("u1", "text", "a red circle") != draft_seed("u2", "text", "a red circle")
    first = _draft(list("abcdef"), list("fedcba"), 6, draft_seed("u", "text", "q"))
    again = _draft(list("abcdef"), list("fedcba"), 6, draft_seed("u", "text", "q"))
    assert first == again


def test_results_are_told_apart_by_key_not_by_item() -> None:
    # The same asset as each model's hit: one key, two different result objects.
    first = [("k1", "clip:k1"), ("k2", "clip:k2")]
    second = [("k1", "siglip:k1"), ("k3", "siglip:k3")]
    for seed in range(20):
        merged = team_draft(first, second, length=4, rng=random.Random(seed))
        keys = [item.split(":")[1] for item, _ in merged]
        assert sorted(keys) == ["k1", "k2", "k3"]


def test_runs_of_taken_results_are_skipped() -> None:
    for seed in range(20):
        merged = _draft(["s", "t", "u", "a1"], ["b1", "s", "t", "u", "b2"], 10, seed)
        items = [item for item, _ in merged]
        assert sorted(items) == ["a1", "b1", "b2", "s", "t", "u"]


def test_an_empty_second_list_leaves_everything_to_the_first() -> None:
    assert _draft(["a1", "a2"], [], 5, seed=0) == [("a1", 0), ("a2", 0)]


def test_the_seed_is_the_first_8_bytes_of_sha256_of_the_parts() -> None:
    digest = hashlib.sha256(b"u1\x1ftext\x1fa red circle").digest()
    assert draft_seed("u1", "text", "a red circle") == int.from_bytes(digest[:8], "big")
    lone = hashlib.sha256("u\udcff".encode("utf-8", "surrogatepass")).digest()
    assert draft_seed("u\udcff") == int.from_bytes(lone[:8], "big")
