"""What does reading the experiment report at any time cost? (docs/rollout.md)

The report's tests are sequential (mSPRT, ``services/rollout/stats.py``): valid however
often they are read. This prints

1. searches per arm each test needs to detect a real CTR change with 80 % power: the
   fixed-horizon z-test (valid only when read once, at that size) against the mSPRT
   read once at its size, and the mSPRT read after every 100 searches per arm
   (simulated: the median number of searches at which it stops);
2. the false alarms of each when A/A traffic (two identical arms) is read 30 times;
3. a worked example: a simulated rollout read once a day, with the report's decision.

    python scripts/sequential_sample_sizes.py [--seed 2026]
"""

from __future__ import annotations

import argparse

import numpy as np

from image_search_service.core.specs import BASELINE, CANDIDATE
from image_search_service.services.rollout.flags import RolloutState
from image_search_service.services.rollout.report import (
    DEFAULT_MIN_EFFECT,
    SEQUENTIAL_METHOD,
    ComparisonOut,
    PowerOut,
    _interleaving,
    _points,
    decide,
)
from image_search_service.services.rollout.stats import (
    CTR_MIXING_SD,
    sample_size_two_proportions,
    sequential_sample_size,
    sequential_two_proportions,
    two_proportion_test,
)

CASES = ((0.10, 0.02), (0.30, 0.02), (0.30, 0.03), (0.30, 0.05), (0.50, 0.05), (0.50, 0.10))


def stopping_median(p: float, effect: float, rng: np.random.Generator, runs: int = 200) -> int:
    """Median searches per arm at which the mSPRT, read every 100, first finds the
    change (runs that never do within 20x the fixed size count as that cap)."""
    fixed = sample_size_two_proportions(p, effect) or 0
    cap = 20 * fixed
    stops = []
    for _ in range(runs):
        a = np.cumsum(rng.random(cap) < p)
        b = np.cumsum(rng.random(cap) < p + effect)
        stop = cap
        for n in range(100, cap + 1, 100):
            if sequential_two_proportions(int(a[n - 1]), n, int(b[n - 1]), n).significant:
                stop = n
                break
        stops.append(stop)
    return int(np.median(stops))


def false_alarms(rng: np.random.Generator, experiments: int = 200, looks: int = 30) -> None:
    step, p = 200, 0.3
    fixed = seq = 0
    for _ in range(experiments):
        a = np.cumsum(rng.random(looks * step) < p)
        b = np.cumsum(rng.random(looks * step) < p)
        hit_fixed = hit_seq = False
        for n in range(step, looks * step + 1, step):
            x, y = int(a[n - 1]), int(b[n - 1])
            hit_fixed |= two_proportion_test(x, n, y, n).significant
            hit_seq |= sequential_two_proportions(x, n, y, n).significant
        fixed += hit_fixed
        seq += hit_seq
    print(
        f"A/A, CTR {p:.0%} in both arms, read every {step} searches per arm, {looks} times, "
        f"{experiments} experiments:"
    )
    print(f"  fixed-horizon z-test: 'significant' in {fixed / experiments:.1%}")
    print(f"  mSPRT (sequential):   'significant' in {seq / experiments:.1%}")


def worked_example(rng: np.random.Generator) -> None:
    """Clip clicked in 30 % of searches, SigLIP in 33 %; SigLIP wins 58 % of the
    decided interleaved searches. 10 % of users on each arm, 600 searches a day each,
    interleaving 150 a day (of which about 40 % decided)."""
    flags = RolloutState(False, 10, "database", 10)
    clicks = {BASELINE: 0, CANDIDATE: 0}
    tally = {"win": 0, "loss": 0, "tie": 0, "no_click": 0}
    n = 0
    print("Worked example: true CTR 30.0 % (clip) vs 33.0 % (siglip), win share 58 %;")
    print("10 % on siglip, 10 % interleaved, 600 searches per arm and day, read daily.")
    last = None
    for day in range(1, 31):
        n += 600
        clicks[BASELINE] += int(rng.binomial(600, 0.30))
        clicks[CANDIDATE] += int(rng.binomial(600, 0.33))
        decided = int(rng.binomial(150, 0.4))
        wins = int(rng.binomial(decided, 0.58))
        tally["win"] += wins
        tally["loss"] += decided - wins
        tally["no_click"] += 150 - decided
        ctr = sequential_two_proportions(clicks[BASELINE], n, clicks[CANDIDATE], n)
        ab = ComparisonOut.of(
            "ctr", ctr, SEQUENTIAL_METHOD, unit="percentage points", effect=_points(ctr, "CTR")
        )
        needed = sequential_sample_size(clicks[BASELINE] / n, DEFAULT_MIN_EFFECT) or 0
        power = PowerOut(DEFAULT_MIN_EFFECT, 0.05, 0.8, needed, n, max(0, needed - n))
        rec = decide(ab, _interleaving(tally), power, [], flags)
        if rec.action != last or ab.significant or day == 30:
            print(f"day {day:2d}: {rec.text}")
        last = rec.action
        if ab.significant:  # the A/B measure itself now decides
            break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"mixing sd tau = {CTR_MIXING_SD} (two CTR points), alpha 0.05, power 80 %")
    print(
        f"{'baseline CTR':>12} {'change':>7} {'fixed, 1 look':>14} {'mSPRT, 1 look':>14} "
        f"{'ratio':>6} {'mSPRT every 100: median stop':>29}"
    )
    for p, effect in CASES:
        fixed = sample_size_two_proportions(p, effect) or 0
        seq = sequential_sample_size(p, effect) or 0
        print(
            f"{p:>12.0%} {effect * 100:>+6.0f}pt {fixed:>14,} {seq:>14,} {seq / fixed:>6.2f} "
            f"{stopping_median(p, effect, rng):>29,}"
        )
    print()
    false_alarms(rng)
    print()
    worked_example(rng)


if __name__ == "__main__":
    main()
