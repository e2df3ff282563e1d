"""Live library benchmark: how soon is a photo dropped into a watched folder
searchable, and how many index runs does a burst cost?

Starts the real app (uvicorn on loopback, in this process) with ``LIBRARY_PATHS`` on a
generated folder and the shipped demo models, then, for each ``LIBRARY_DEBOUNCE_MS``:
writes single photos one at a time and times each until it is the top hit of a search
by its own content, then writes a burst of files at once and counts the index runs it
caused (one per burst is the target, never one per file).

    python scripts/benchmark_watch.py [--debounce 300 1000] [--burst 200]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import cast

import httpx
import uvicorn

from image_search_service.api.app import create_app
from image_search_service.api.deps import AppServices
from image_search_service.core.config import Settings
from image_search_service.demo.run import demo_settings
from image_search_service.demo.synthetic import write_library
from image_search_service.services.library.background import index_status


def _serve(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str, AppServices]:
    app = create_app(settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}", cast(AppServices, app.state.services)


def _total(url: str) -> int:
    total: int = httpx.get(url + "/api/v1/assets", params={"limit": 1}).json()["total"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debounce", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()

    for debounce in args.debounce:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            library = root / "Pictures"
            write_library(library, 20, seed=1)
            settings = demo_settings(
                Settings(
                    data_dir=root,
                    device="cpu",
                    library_paths=[library],
                    library_debounce_ms=debounce,
                    _env_file=None,
                )
            )
            server, thread, url, services = _serve(settings)
            try:
                while _total(url) < 20:
                    time.sleep(0.1)
                services.dispatcher.wait_idle(120)
                extra = write_library(root / "extra", args.singles + args.burst, seed=2)
                latencies = []
                for i, (source, _) in enumerate(extra[: args.singles]):
                    target = library / f"single_{i}.jpg"
                    data = source.read_bytes()
                    started = time.perf_counter()
                    target.write_bytes(data)
                    while True:
                        hits = httpx.post(
                            url + "/api/v1/search/image",
                            data={"limit": 1},
                            files={"file": ("q.jpg", data, "image/jpeg")},
                        ).json()["results"]
                        if hits and hits[0]["path"] == str(target):
                            break
                        time.sleep(0.02)
                    latencies.append(time.perf_counter() - started)
                services.dispatcher.wait_idle(120)
                before = {(r.path, r.queued_at) for r in index_status(services.dispatcher).finished}
                started = time.perf_counter()
                (library / "import").mkdir()
                for i, (source, _) in enumerate(extra[args.singles :]):
                    (library / "import" / f"burst_{i}.jpg").write_bytes(source.read_bytes())
                written = time.perf_counter() - started
                expected = 20 + args.singles + args.burst
                while _total(url) < expected:
                    time.sleep(0.05)
                listed = time.perf_counter() - started
                services.dispatcher.wait_idle(120)
                runs = [
                    r
                    for r in index_status(services.dispatcher).finished
                    if (r.path, r.queued_at) not in before
                ]
                print(
                    f"LIBRARY_DEBOUNCE_MS={debounce}: a new photo searchable after "
                    f"median {statistics.median(latencies):.2f}s (max {max(latencies):.2f}s); "
                    f"{args.burst} files written in {written:.2f}s, all indexed "
                    f"{listed:.1f}s after the first, in {len(runs)} index run(s) "
                    f"({len(runs) / args.burst:.3f} runs per file)"
                )
            finally:
                server.should_exit = True
                thread.join(timeout=30)


if __name__ == "__main__":
    main()
