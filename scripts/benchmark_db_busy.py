"""Searches, clicks and an upload while another process holds the SQLite write lock.

Builds the demo library in a temporary DATA_DIR, serves it with ``image-search serve``
and measures, in one run, the latency of searches (and whether every click is counted)
first on a quiet database and then while a second process holds a write transaction
(``BEGIN IMMEDIATE``) for ``--hold`` seconds. Prints the ratios; figures go to
docs/performance.md.

    python scripts/benchmark_db_busy.py [--hold 30] [--searches 40] [--count 60]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

QUERIES = ("red circle", "blue square", "green triangle", "yellow star", "purple circle")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def demo_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "DATABASE_"))}
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "CLIP_MODEL_NAME": "demo-clip",
            "CLIP_PRETRAINED": "",
            "SIGLIP_MODEL_NAME": "demo-siglip",
            "SIGLIP_PRETRAINED": "",
            "API_KEY": "",
            "EXPERIMENT_RECORDING": "true",
        }
    )
    return env


def hold_write_lock(db: Path, seconds: float, started: threading.Event) -> None:
    """Another writer: a write transaction held open for ``seconds`` (a thread here, but
    its own sqlite3 connection, as another process would have)."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    started.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def search_and_click(client: httpx.Client, query: str, user: str) -> tuple[float, float, int]:
    """(search ms, click ms, click status)."""
    t0 = time.perf_counter()
    r = client.get(
        "/api/v1/search",
        params={"q": query, "limit": 5, "min_score": -1},
        headers={"X-User-Id": user},
    )
    search_ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    body = r.json()
    first = body["results"][0]
    t1 = time.perf_counter()
    c = client.post(
        "/api/v1/events",
        json={
            "search_id": body["search_id"],
            "asset_id": first["asset_id"],
            "type": "click",
            "rank": 1,
        },
    )
    return search_ms, (time.perf_counter() - t1) * 1000, c.status_code


def upload(client: httpx.Client, seed: int) -> tuple[float, int]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (seed * 60 % 256, 80, 160)).save(buf, "JPEG")
    t0 = time.perf_counter()
    r = client.post("/api/v1/assets", files={"file": (f"up{seed}.jpg", buf.getvalue())})
    return (time.perf_counter() - t0) * 1000, r.status_code


def phase(client: httpx.Client, n: int, seed: int) -> dict[str, Any]:
    searches, clicks, statuses = [], [], []
    for i in range(n):
        s, c, status = search_and_click(client, QUERIES[i % len(QUERIES)], f"user-{i % 7}")
        if max(s, c) > 1000:
            print(f"  slow: search {s:.0f} ms, click {c:.0f} ms -> {status}", file=sys.stderr)
        searches.append(s)
        clicks.append(c)
        statuses.append(status)
    up_ms, up_status = upload(client, seed)
    return {
        "search_p50": statistics.median(searches),
        "search_max": max(searches),
        "click_p50": statistics.median(clicks),
        "click_max": max(clicks),
        "clicks_ok": sum(1 for s in statuses if s == 200),
        "clicks": n,
        "upload_ms": up_ms,
        "upload_status": up_status,
    }


def clicks_in_db(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM experiment_events").fetchone()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the lock is held")
    parser.add_argument("--searches", type=int, default=40, help="searches per phase")
    parser.add_argument("--count", type=int, default=60, help="demo pictures")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "image_search_service.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [*cli, "demo", "--count", str(args.count)],
            env={**os.environ, "DATA_DIR": str(root)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data_dir = root / "demo"
        db = data_dir / "metadata.sqlite3"
        port = free_port()
        log = (root / "server.log").open("wb")
        server = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            env=demo_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit((root / "server.log").read_text())
                time.sleep(0.2)
            phase(client, 5, 1)  # warm: models loaded, first searches out of the way
            quiet = phase(client, args.searches, 2)
            started = threading.Event()
            holder = threading.Thread(
                target=hold_write_lock, args=(db, args.hold, started), daemon=True
            )
            holder.start()
            started.wait()
            t0 = time.monotonic()
            busy = phase(client, args.searches, 3)
            busy_span = time.monotonic() - t0
            holder.join()
            time.sleep(2.0)  # the log's writer drains its queue once the lock is gone
            expected = 5 + 2 * args.searches
            counted = clicks_in_db(db)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    print(f"lock held {args.hold:.0f} s; busy phase ran {busy_span:.1f} s inside it")
    for name, r in (("quiet", quiet), ("write lock held", busy)):
        print(
            f"{name:>16}: search p50 {r['search_p50']:7.1f} ms  max {r['search_max']:8.1f} ms"
            f" | click p50 {r['click_p50']:7.1f} ms  max {r['click_max']:8.1f} ms"
            f"  ok {r['clicks_ok']}/{r['clicks']}"
            f" | upload {r['upload_ms']:8.1f} ms -> {r['upload_status']}"
        )
    print(f"search p50 ratio busy/quiet: {busy['search_p50'] / quiet['search_p50']:.2f}")
    print(f"clicks counted in the DB after the lock: {counted}/{expected}")


if __name__ == "__main__":
    main()
