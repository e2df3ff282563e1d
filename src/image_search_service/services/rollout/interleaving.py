"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008).

Two rankings are merged as two captains pick players: the team with fewer picks so
far picks next (a coin decides when they have as many), taking its highest-ranked
result not already picked. Each merged result remembers its team, so a click on it
credits the model that put it there, and a search whose clicks credit one team more
is a win for that team. Results both models rank equally high land in the list once,
credited to whichever team picked them first.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def team_draft(
    first: Sequence[tuple[K, T]],
    second: Sequence[tuple[K, T]],
    *,
    length: int,
    rng: random.Random,
) -> list[tuple[T, int]]:
    """Merge ``first`` and ``second`` (each a ranking of (key, item), best first) into
    at most ``length`` items, each with its team (0 = first, 1 = second)."""
    lists = (first, second)
    positions = [0, 0]
    picks = [0, 0]
    seen: set[K] = set()
    merged: list[tuple[T, int]] = []

    def next_from(team: int) -> tuple[K, T] | None:
        ranking = lists[team]
        while positions[team] < len(ranking) and ranking[positions[team]][0] in seen:
            positions[team] += 1
        return ranking[positions[team]] if positions[team] < len(ranking) else None

    while len(merged) < length:
        candidates = [next_from(0), next_from(1)]
        if candidates[0] is None and candidates[1] is None:
            break
        if candidates[0] is None:
            team = 1
        elif candidates[1] is None:
            team = 0
        elif picks[0] != picks[1]:
            team = 0 if picks[0] < picks[1] else 1
        else:
            team = rng.randrange(2)
        chosen = candidates[team]
        assert chosen is not None
        key, item = chosen
        seen.add(key)
        picks[team] += 1
        merged.append((item, team))
    return merged


def draft_seed(*parts: str) -> int:
    """A stable seed from the query's identity (user, kind, query), so paging through
    the same query sees the same merged order."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")
