"""Experiment benchmark: the report over 1,000,000 recorded searches, and what
recording costs a search.

Fills a fresh SQLite metadata DB (made by the migrations) with synthetic searches
spread over 90 days - 45 % clip, 45 % siglip, 10 % interleaved; click-through and
first-click ranks drawn per arm; log-normal latencies; some reformulated, some
without results - then, in one run:

- times ``experiment_report`` (the admin endpoint's and the CLI's work) over all of
  them, and over the last 7 days (``--since``); target < 1 s; and the daily series of
  the last 30 days (``GET /api/v1/admin/experiment/daily``);
- times ``SearchLog.record`` as a search calls it (queue a record; a writer thread
  inserts in batches), against the time of the insert a synchronous design would pay.

Result lists are not generated (the report never reads them).

    python scripts/benchmark_experiment.py [--searches 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from image_search_service.core.config import Settings
from image_search_service.db.experiment_repository import latency_bucket
from image_search_service.db.models import ExperimentSearch
from image_search_service.db.session import make_engine, make_session_factory, upgrade_database
from image_search_service.services.rollout.report import experiment_daily, experiment_report
from image_search_service.services.rollout.router import RouteDecision
from image_search_service.services.search.log import SearchLog
from image_search_service.services.search.service import SearchHit, SearchOutcome

TARGET_S = 1.0
CHUNK = 50_000
ARMS = np.array(["clip", "siglip", "interleaved"])


def fill(url: str, count: int, seed: int = 0) -> float:
    engine = make_engine(url)
    upgrade_database(engine)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for offset in range(0, count, CHUNK):
            n = min(CHUNK, count - offset)
            arm = ARMS[rng.choice(3, size=n, p=[0.45, 0.45, 0.10])]
            ctr = np.where(arm == "siglip", 0.42, 0.40)
            clicked = rng.random(n) < ctr
            rank = np.minimum(rng.geometric(0.45, size=n), 20)
            latency = rng.lognormal(np.log(60), 0.6, size=n)
            zero = rng.random(n) < 0.03
            seconds = rng.uniform(0, 90 * 86400, size=n)
            credit_a = rng.integers(0, 3, size=n)
            credit_b = rng.integers(0, 3, size=n)
            rows = [
                {
                    "id": uuid.uuid4(),
                    "created_at": now - timedelta(seconds=float(seconds[i])),
                    "user_id": f"user-{int(rng.integers(0, 50_000))}",
                    "bucket": int(i % 100),
                    "arm": str(arm[i]),
                    "selected": str(arm[i]),
                    "fallback_code": None,
                    "kind": "text",
                    "result_count": 0 if zero[i] else 20,
                    "zero_results": bool(zero[i]),
                    "latency_ms": float(latency[i]),
                    "latency_bucket": latency_bucket(float(latency[i])),
                    "clicks": int(clicked[i] and not zero[i]),
                    "first_click_rank": int(rank[i]) if clicked[i] and not zero[i] else None,
                    "reformulated": bool(not clicked[i] and rng.random() < 0.2),
                    "credit_baseline": int(credit_a[i]) if arm[i] == "interleaved" else 0,
                    "credit_candidate": int(credit_b[i]) if arm[i] == "interleaved" else 0,
                }
                for i in range(n)
            ]
            conn.execute(insert(ExperimentSearch), rows)
            print(f"  {offset + n:,} rows", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    with engine.connect() as conn:  # fresh statistics for the planner, as after a while in use
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - start


def time_report(url: str, settings: Settings, since: datetime | None, runs: int = 5) -> list[float]:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    times = []
    for _ in range(runs):
        with factory() as session:
            start = time.perf_counter()
            report = experiment_report(session, settings, since=since)
            times.append(time.perf_counter() - start)
    engine.dispose()
    assert report.arms["clip"].searches > 0
    return times


def time_daily(url: str, days: int = 30, runs: int = 5) -> list[float]:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    times = []
    for _ in range(runs):
        with factory() as session:
            start = time.perf_counter()
            rows = experiment_daily(session, days=days, now=datetime.now(UTC))
            times.append(time.perf_counter() - start)
    engine.dispose()
    assert rows
    return times


def time_recording(settings: Settings, n: int = 2000) -> dict[str, float]:
    from image_search_service.context import open_context

    ctx = open_context(settings)
    decision = RouteDecision(
        model="clip", collection="c", selected="clip", user_id="u", bucket=1, rule="bench"
    )
    hits = [
        SearchHit(uuid.uuid4(), "/p.jpg", 0.5, None, 10, 10, "JPEG", None, "clip")
        for _ in range(20)
    ]
    outcome = SearchOutcome(hits, "clip", "c", 20, 0, 1.0)
    queued = SearchLog(ctx)
    direct = SearchLog(ctx, background=False)
    record_times: list[float] = []
    direct_times: list[float] = []
    try:
        for i in range(n):
            log = queued if i % 2 == 0 else direct
            start = time.perf_counter()
            log.record(
                search_id=uuid.uuid4(), decision=decision, outcome=outcome, kind="text",
                latency_ms=50.0,
            )  # fmt: skip
            (record_times if log is queued else direct_times).append(time.perf_counter() - start)
        queued.flush(timeout=120)
    finally:
        queued.close()
        ctx.close()
    assert queued.errors == 0
    assert direct.errors == 0
    q95 = float(np.percentile(record_times, 95)) * 1000
    d95 = float(np.percentile(direct_times, 95)) * 1000
    return {
        "queued_p50_ms": statistics.median(record_times) * 1000,
        "queued_p95_ms": q95,
        "synchronous_insert_p50_ms": statistics.median(direct_times) * 1000,
        "synchronous_insert_p95_ms": d95,
        "ratio_p95": q95 / d95,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--searches", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(_env_file=None, data_dir=data)
        url = settings.resolved_database_url
        fill_s = fill(url, args.searches)
        size_mb = (data / "metadata.sqlite3").stat().st_size / 1e6
        full = time_report(url, settings, since=None)
        week = time_report(url, settings, since=datetime.now(UTC) - timedelta(days=7))
        daily = time_daily(url)
        recording = time_recording(Settings(_env_file=None, data_dir=data / "rec"))
    result: dict[str, Any] = {
        "searches": args.searches,
        "fill_seconds": round(fill_s, 1),
        "db_mb": round(size_mb, 1),
        "report_all_s": {"min": round(min(full), 3), "median": round(statistics.median(full), 3)},
        "report_last_7_days_s": {
            "min": round(min(week), 3),
            "median": round(statistics.median(week), 3),
        },
        "daily_30_days_s": {
            "min": round(min(daily), 3),
            "median": round(statistics.median(daily), 3),
        },
        "report_vs_target": round(statistics.median(full) / TARGET_S, 2),
        "recording": {k: round(v, 3) for k, v in recording.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.searches:,} searches, filled in {fill_s:.0f} s, DB {size_mb:.0f} MB")
    print(
        f"report, all searches: median {statistics.median(full):.3f} s (min {min(full):.3f}); "
        f"last 7 days: median {statistics.median(week):.3f} s; target < {TARGET_S} s "
        f"-> ratio {result['report_vs_target']}"
    )
    print(f"daily series, last 30 days: median {statistics.median(daily):.3f} s")
    print(
        f"record() as a search pays it: p50 {recording['queued_p50_ms']:.3f} ms, "
        f"p95 {recording['queued_p95_ms']:.3f} ms; a synchronous insert: "
        f"p50 {recording['synchronous_insert_p50_ms']:.2f} ms, "
        f"p95 {recording['synchronous_insert_p95_ms']:.2f} ms "
        f"(ratio p95 {recording['ratio_p95']:.3f})"
    )


if __name__ == "__main__":
    main()
