"""What hostile images cost now, and what the HTTP parser choice costs (issue 9).

Prints, measured in one run (ratios, since the machines are shared and noisy):

1. decode + the model's preprocessing (ViT-B-32's real transform, 224 px) of
   - a 472-byte 1x100000 PNG: refused from the header (the old path resized it to
     224 x 22,400,000: seconds per request);
   - a large PNG (default 6000x4000), which has no reduced decoding: the image is now
     reduced by a whole factor right after decoding, so preprocessing handles a small
     image; compared with preprocessing the full-size decode (the old path);
2. resident memory around decoding a 10950x10950 PNG (the issue's +470 MB): the peak,
   and what is left once the result is dropped;
3. ``GET /health`` latency on uvicorn with the h11 parser (what ``serve`` uses now:
   the only parser with a header-size limit) against httptools, both with uvloop,
   interleaved request by request.

    PYTHONPATH=src python scripts/benchmark_hostile.py [--png-size 6000x4000] [--requests 400]
"""

from __future__ import annotations

import argparse
import gc
import io
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import open_clip
import uvicorn
from PIL import Image

from image_search_service.api.app import create_app
from image_search_service.core.config import Settings
from image_search_service.core.errors import ImageShapeRefused
from image_search_service.images.loading import load_image

MODEL_INPUT = 224
MAX_PIXELS = 120_000_000


def _png(size: tuple[int, int], *, noisy: bool) -> bytes:
    image = Image.effect_noise(size, 40).convert("RGB") if noisy else Image.new("L", size, 128)
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=not noisy, compress_level=1 if noisy else 9)
    return buf.getvalue()


def _best_of(n: int, fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def decode_costs(png_size: tuple[int, int]) -> None:
    transform = open_clip.image_transform(MODEL_INPUT, is_train=False)
    strip = _png((1, 100_000), noisy=False)

    def refuse() -> None:
        try:
            load_image(strip, max_pixels=MAX_PIXELS, min_side=MODEL_INPUT)
        except ImageShapeRefused:
            return
        raise AssertionError("the strip was not refused")

    refused_s = _best_of(20, refuse)
    print(f"1x100000 PNG ({len(strip)} bytes): refused in {refused_s * 1000:.2f} ms")

    big = _png(png_size, noisy=True)

    def now() -> None:
        transform(load_image(big, max_pixels=MAX_PIXELS, min_side=MODEL_INPUT).image)

    def before() -> None:  # the old path: full-size decode, the model resizes it all
        transform(load_image(big, max_pixels=MAX_PIXELS).image)

    reduced = load_image(big, max_pixels=MAX_PIXELS, min_side=MODEL_INPUT).image.size
    now_s, before_s = _best_of(3, now), _best_of(3, before)
    print(
        f"{png_size[0]}x{png_size[1]} PNG ({len(big) / 1e6:.1f} MB): decode+preprocess "
        f"{now_s * 1000:.0f} ms now (reduced to {reduced[0]}x{reduced[1]} before the "
        f"model's resize) vs {before_s * 1000:.0f} ms full size; ratio {before_s / now_s:.2f}"
    )


def _rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def memory_cost(side: int = 10950) -> None:
    # Written by a child process, so that making it does not set this process's peak.
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "big.png"
        make = (
            "import sys; from PIL import Image; "
            f"Image.new('RGB', ({side}, {side}), (10, 200, 30)).save(sys.argv[1], compress_level=1)"
        )
        subprocess.run([sys.executable, "-c", make, str(target)], check=True)
        data = target.read_bytes()
    gc.collect()
    base = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    loaded = load_image(data, max_pixels=MAX_PIXELS, min_side=MODEL_INPUT)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    size = loaded.image.size
    del loaded
    gc.collect()
    after = _rss_mb()
    print(
        f"{side}x{side} PNG ({len(data) / 1e6:.1f} MB): peak +{peak - max(base, peak_before)} MB "
        f"while decoding (reduced to {size[0]}x{size[1]}), +{after - base} MB once dropped"
    )


def _serve(app: object, http: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=http, log_level="warning")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def parser_costs(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # One data folder per app: each lifespan opens (and locks) its embedded store.
        servers = {
            http: _serve(create_app(Settings(data_dir=Path(tmp) / http, _env_file=None)), http)
            for http in ("h11", "httptools")
        }
        samples: dict[str, list[float]] = {http: [] for http in servers}
        clients = {http: httpx.Client(base_url=url) for http, (_, _, url) in servers.items()}
        for _ in range(20):  # warm up
            for client in clients.values():
                client.get("/health")
        for _ in range(requests):
            for http, client in clients.items():
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                samples[http].append(time.perf_counter() - started)
        for client in clients.values():
            client.close()
        for server, thread, _ in servers.values():
            server.should_exit = True
            thread.join(timeout=10)
    p50 = {http: statistics.median(s) * 1000 for http, s in samples.items()}
    print(
        f"GET /health p50 over {requests} requests: h11 {p50['h11']:.2f} ms, httptools "
        f"{p50['httptools']:.2f} ms; ratio h11/httptools {p50['h11'] / p50['httptools']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png-size", default="6000x4000")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    width, height = (int(v) for v in args.png_size.split("x"))
    memory_cost()  # first: the process peak must not come from another step
    decode_costs((width, height))
    parser_costs(args.requests)


if __name__ == "__main__":
    main()
