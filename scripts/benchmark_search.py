"""Search benchmark: what does the HTTP API add on top of the text encoder?

Fills a collection with 100,000 synthetic normalised vectors (clustered, like real
embeddings) and as many real asset rows (inserted in bulk), starts the real server
(`image-search serve`, uvicorn, in a subprocess) with the ViT-B-32 architecture and
random weights (the same compute as trained ones), and reports from one run:

- p50/p95 of `GET /api/v1/search` end to end over HTTP with distinct queries (the text
  cache cannot hide the encoder), and with one repeated (cached) query;
- p50/p95 of the text encoder alone, measured in this process, interleaved with the
  HTTP requests so load on a shared machine hits both alike, for each runtime: PyTorch
  eager fp32, ONNX Runtime fp32 and INT8 (the server runs the default one);
- p50/p95 of `GET /api/v1/search/similar/{id}` (stored vector, no encoding);
- the same searches filtered to one person who is in 1% of the photos (the payload
  filter Qdrant applies inside the HNSW search): a cached text query naming the person
  ("Pat at the beach", read by query understanding) and `similar?people=pat`, each
  against its unfiltered twin, and whether every filtered answer was full (`limit`
  results, all of them the person's).

Targets on a 2-core machine: end-to-end text p95 <= 1.5x encoder-only p95 (same
runtime as the server); similar p95 <= 20 ms; the default runtime's text encoder p50
<= 0.5x PyTorch eager's; people-filtered p95 <= 2x unfiltered p95, with full results.

    python scripts/benchmark_search.py [--points 100000] [--queries 200] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import insert

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.core.specs import model_spec
from image_search_service.db.models import (
    Asset,
    AssetEmbedding,
    AssetPerson,
    AssetStatus,
    EmbeddingState,
    Person,
)
from image_search_service.encoders.base import Encoder
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.vector.base import VectorPoint
from image_search_service.vector.schema import label_payload, payload_timestamp

ENCODER_TARGET = 1.5  # end-to-end p95 / encoder-only p95
RUNTIME_TARGET = 0.5  # default runtime's text encoder p50 / PyTorch eager's
SIMILAR_TARGET_MS = 20.0
FILTER_TARGET = 2.0  # people-filtered p95 / unfiltered p95
PERSON_SHARE = 0.01  # the filtered person is in 1% of the photos

ADJECTIVES = "red old quiet snowy sunny crowded tiny golden misty wooden bright empty".split()
SUBJECTS = "dog bicycle lighthouse market child bridge boat castle cat train garden tree".split()
PLACES = [
    "at sunset", "in the rain", "by the sea", "in winter", "at night", "in a city",
    "on a hill", "in the forest", "at the beach", "in autumn", "indoors", "at dawn",
]  # fmt: skip


def distinct_queries(n: int, seed: int = 0) -> list[str]:
    combos = [
        f"a photo of a {a} {s} {p}" for a, s, p in itertools.product(ADJECTIVES, SUBJECTS, PLACES)
    ]
    random.Random(seed).shuffle(combos)
    if n > len(combos):
        raise SystemExit(f"at most {len(combos)} distinct queries")
    return combos[:n]


def fill(settings: Settings, points: int, seed: int = 0) -> tuple[list[uuid.UUID], set[uuid.UUID]]:
    """Bulk-insert ``points`` asset rows (embedded by CLIP) and their vectors; 1% of
    them have Pat in them (DB rows and payloads). Returns all ids and Pat's."""
    rng = np.random.default_rng(seed)
    ctx = open_context(settings)
    try:
        spec = ctx.spec("clip")
        ctx.store.ensure_collection(ctx.collection_spec("clip"))
        ids = [uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(points)]
        start = datetime(2015, 1, 1)
        now = datetime.now(UTC)
        taken = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 5_000_000, points)]
        with_pat = {ids[i] for i in rng.choice(points, int(points * PERSON_SHARE), replace=False)}
        started = time.perf_counter()
        chunk = 10_000
        for lo in range(0, points, chunk):
            rows = [
                {
                    "id": ids[i],
                    "path": f"/bench/photos/{i:07d}.jpg",
                    "content_hash": hashlib.sha256(str(i).encode()).hexdigest(),
                    "size_bytes": 2_000_000,
                    "mtime_ns": 0,
                    "status": AssetStatus.ACTIVE,
                    "width": 4000,
                    "height": 3000,
                    "format": "JPEG",
                    "taken_at": taken[i],
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(lo, min(points, lo + chunk))
            ]
            states = [
                {
                    "asset_id": row["id"],
                    "model_key": spec.key,
                    "state": EmbeddingState.DONE,
                    "attempts": 1,
                    "model_name": spec.model_name,
                    "pretrained": spec.pretrained,
                    "dim": spec.embedding_dim,
                    "updated_at": now,
                }
                for row in rows
            ]
            with ctx.session_factory() as session:
                session.execute(insert(Asset), rows)
                session.execute(insert(AssetEmbedding), states)
                session.commit()
        with ctx.session_factory() as session:
            session.add(Person(id=1, name="Pat", name_key="pat"))
            session.flush()
            session.execute(
                insert(AssetPerson), [{"asset_id": i, "person_id": 1} for i in with_pat]
            )
            session.commit()
        db_s = time.perf_counter() - started

        # Clustered unit vectors: real embeddings are not uniform on the sphere.
        centres = rng.standard_normal((512, spec.embedding_dim)).astype(np.float32)
        started = time.perf_counter()
        batch = 5_000
        for lo in range(0, points, batch):
            hi = min(points, lo + batch)
            vectors = centres[rng.integers(0, len(centres), hi - lo)]
            vectors = vectors + 0.6 * rng.standard_normal(vectors.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ctx.store.upsert(
                spec.collection,
                [
                    VectorPoint(
                        id=ids[i],
                        vector=vectors[i - lo],
                        payload={
                            "asset_id": str(ids[i]),
                            "format": "JPEG",
                            "taken_ts": payload_timestamp(taken[i]),
                            "width": 4000,
                            "height": 3000,
                            **label_payload(people=["pat"] if ids[i] in with_pat else [], tags=[]),
                        },
                    )
                    for i in range(lo, hi)
                ],
            )
        upsert_s = time.perf_counter() - started
        started = time.perf_counter()
        ctx.store.optimize(spec.collection)
        optimize_s = time.perf_counter() - started
        print(
            f"filled {points:,} assets: DB rows {db_s:.1f}s, upsert {upsert_s:.1f}s, "
            f"optimize {optimize_s:.1f}s",
            file=sys.stderr,
        )
        return ids, with_pat
    finally:
        ctx.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_server(
    env: dict[str, str], port: int, log: Path, cwd: Path, *, timeout_s: float = 300
) -> subprocess.Popen[bytes]:
    """``image-search serve`` on ``port``, returned once /health answers."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "image_search_service.cli", "serve", "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        while True:
            if process.poll() is not None:
                raise SystemExit("server exited:\n" + log.read_text())
            try:
                if client.get("/health").status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("server did not start:\n" + log.read_text())
            time.sleep(0.2)


def timed_ms(call: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> dict[str, float]:
    data = np.asarray(samples)
    return {
        "n": len(data),
        "p50_ms": round(float(np.percentile(data, 50)), 2),
        "p95_ms": round(float(np.percentile(data, 95)), 2),
    }


def get_ok(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    response = client.get(url, params=params)
    if response.status_code != 200:
        raise SystemExit(f"{url} -> {response.status_code}: {response.text}")
    return response


def main() -> None:
    import torch  # after the package set OMP_WAIT_POLICY (see its __init__)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="distinct text queries")
    parser.add_argument("--repeats", type=int, default=200, help="cached-query and similar runs")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "DATABASE_"))}
        env.update(
            {
                "DATA_DIR": str(root / "data"),
                "CLIP_MODEL_NAME": "ViT-B-32",
                "CLIP_PRETRAINED": "random",
                "SIGLIP_ROLLOUT_PERCENTAGE": "0",
                "USE_SIGLIP": "false",
                "DEVICE": "cpu",
                "PRELOAD_MODELS": "true",
                "API_KEY": "",
                "LOG_LEVEL": "WARNING",
            }
        )
        settings = Settings(
            data_dir=root / "data",
            clip_model_name="ViT-B-32",
            clip_pretrained="random",
            device="cpu",
            _env_file=None,
        )
        ids, with_pat = fill(settings, args.points)

        # The encoder alone, in this process: the same spec the server loads, in the
        # server's (default) runtime first, then the others.
        default = f"onnx-{settings.encoder_precision}"
        encoders: dict[str, Encoder] = {}
        for runtime, precision in (
            ("onnx", settings.encoder_precision),
            ("torch", "fp32"),
            ("onnx", "int8" if default == "onnx-fp32" else "fp32"),
        ):
            variant = settings.model_copy(
                update={"encoder_runtime": runtime, "encoder_precision": precision}
            )
            enc = EncoderRegistry.from_settings(variant).get(model_spec(variant, "clip"))
            torch.manual_seed(0)  # random weights, but the same in every runtime
            enc.load()
            encoders[enc.runtime] = enc

        port = free_port()
        server = start_server(env, port, root / "server.log", root)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                results = run(client, encoders, ids, args)
                results.update(run_people(client, ids, with_pat, args))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    results["points"] = args.points
    results["cpu_count"] = os.cpu_count()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print_report(results)


def run(
    client: httpx.Client,
    encoders: dict[str, Encoder],
    ids: list[uuid.UUID],
    args: argparse.Namespace,
) -> dict[str, Any]:
    search = "/api/v1/search"
    warm = distinct_queries(args.queries + 10, seed=1)[args.queries :]
    for q in warm:  # first requests pay for lazy paths (HNSW pages, SQLite cache)
        get_ok(client, search, q=q, limit=args.limit)
        for enc in encoders.values():
            enc.encode_text([q])

    default = next(iter(encoders))  # the server's runtime
    by_runtime: dict[str, list[float]] = {name: [] for name in encoders}
    e2e_ms: list[float] = []
    for q in distinct_queries(args.queries):
        # Interleaved: a burst of load from a neighbour slows every series alike. The
        # server's runtime goes last, right before the request: both then start with
        # caches the other runtimes just filled with their own weights.
        for name, enc in reversed(encoders.items()):
            by_runtime[name].append(timed_ms(enc.encode_text, [q]))
        e2e_ms.append(timed_ms(get_ok, client, search, q=q, limit=args.limit))
    encoder_ms = by_runtime[default]

    cached_query = "a photo of the same thing again"
    get_ok(client, search, q=cached_query, limit=args.limit)
    cached_ms = [
        timed_ms(get_ok, client, search, q=cached_query, limit=args.limit)
        for _ in range(args.repeats)
    ]

    rng = random.Random(2)
    similar_ms = [
        timed_ms(get_ok, client, f"/api/v1/search/similar/{asset_id}", limit=args.limit)
        for asset_id in rng.sample(ids, args.repeats)
    ]

    results: dict[str, Any] = {
        "text_search_e2e": summary(e2e_ms),
        "text_search_cached_e2e": summary(cached_ms),
        "text_encoder_only": summary(encoder_ms),
        # Each query's HTTP time minus its own encoder time: the pairs ran back to back,
        # so load from other processes mostly cancels out.
        "api_overhead_paired": summary([e - c for e, c in zip(e2e_ms, encoder_ms, strict=True)]),
        "similar_e2e": summary(similar_ms),
        "server_runtime": default,
        "text_encoder_by_runtime": {name: summary(v) for name, v in by_runtime.items()},
    }
    eager = results["text_encoder_by_runtime"]["torch-fp32"]["p50_ms"]
    results["text_encoder_p50_ratio_to_eager"] = {
        name: round(row["p50_ms"] / eager, 3)
        for name, row in results["text_encoder_by_runtime"].items()
    }
    e2e, enc = results["text_search_e2e"], results["text_encoder_only"]
    ratio = e2e["p95_ms"] / enc["p95_ms"]
    results["e2e_over_encoder_p95"] = round(ratio, 3)
    results["e2e_over_encoder_p50"] = round(e2e["p50_ms"] / enc["p50_ms"], 3)
    results["targets"] = {
        "e2e_over_encoder_p95<=1.5": ratio <= ENCODER_TARGET,
        "similar_p95<=20ms": results["similar_e2e"]["p95_ms"] <= SIMILAR_TARGET_MS,
        "default_text_encoder<=0.5x_eager": (
            results["text_encoder_p50_ratio_to_eager"][default] <= RUNTIME_TARGET
        ),
    }
    return results


def run_people(
    client: httpx.Client, ids: list[uuid.UUID], with_pat: set[uuid.UUID], args: argparse.Namespace
) -> dict[str, Any]:
    """Filtered against unfiltered, interleaved pair by pair so load hits both alike."""
    search = "/api/v1/search"
    plain_q, pat_q = "a photo at the beach", "Pat at the beach"
    for q in (plain_q, pat_q):  # warm the text cache: the encoder is not what is measured
        get_ok(client, search, q=q, limit=args.limit)
    pat_ids = {str(i) for i in with_pat}
    full = True
    text_plain: list[float] = []
    text_pat: list[float] = []
    similar_plain: list[float] = []
    similar_pat: list[float] = []
    rng = random.Random(3)
    for asset_id in rng.sample(ids, args.repeats):
        text_plain.append(timed_ms(get_ok, client, search, q=plain_q, limit=args.limit))
        started = time.perf_counter()
        body = get_ok(client, search, q=pat_q, limit=args.limit).json()
        text_pat.append((time.perf_counter() - started) * 1000)
        full &= len(body["results"]) == args.limit
        full &= all(r["asset_id"] in pat_ids for r in body["results"])
        url = f"/api/v1/search/similar/{asset_id}"
        similar_plain.append(timed_ms(get_ok, client, url, limit=args.limit))
        started = time.perf_counter()
        body = get_ok(client, url, limit=args.limit, people="pat").json()
        similar_pat.append((time.perf_counter() - started) * 1000)
        full &= len(body["results"]) == args.limit
        full &= all(r["asset_id"] in pat_ids for r in body["results"])
    results: dict[str, Any] = {
        "people_share": PERSON_SHARE,
        "text_cached_unfiltered": summary(text_plain),
        "text_cached_people": summary(text_pat),
        "similar_unfiltered": summary(similar_plain),
        "similar_people": summary(similar_pat),
        "people_filtered_full_results": full,
    }
    text_ratio = (
        results["text_cached_people"]["p95_ms"] / results["text_cached_unfiltered"]["p95_ms"]
    )
    similar_ratio = results["similar_people"]["p95_ms"] / results["similar_unfiltered"]["p95_ms"]
    results["people_over_unfiltered_p95"] = {
        "text": round(text_ratio, 3),
        "similar": round(similar_ratio, 3),
    }
    results["people_targets"] = {
        "people_p95<=2x_unfiltered": max(text_ratio, similar_ratio) <= FILTER_TARGET,
        "full_results": full,
    }
    return results


def print_report(results: dict[str, Any]) -> None:
    print(f"search benchmark: {results['points']:,} points, {results['cpu_count']} CPUs")
    print(f"{'':34s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s}")
    labels = {
        "text_search_e2e": "GET /api/v1/search (distinct q)",
        "text_search_cached_e2e": "GET /api/v1/search (cached q)",
        "text_encoder_only": "text encoder alone",
        "api_overhead_paired": "HTTP minus encoder, per query",
        "similar_e2e": "GET /api/v1/search/similar/{id}",
    }
    labels["text_encoder_only"] += f" ({results['server_runtime']})"
    for key, label in labels.items():
        row = results[key]
        print(f"{label:34s} {int(row['n']):5d} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f}")
    for name, row in results["text_encoder_by_runtime"].items():
        ratio_eager = results["text_encoder_p50_ratio_to_eager"][name]
        print(
            f"{'text encoder, ' + name:34s} {int(row['n']):5d} {row['p50_ms']:8.2f} "
            f"{row['p95_ms']:8.2f}  (p50 {ratio_eager:.2f}x PyTorch eager)"
        )
    ratio = results["e2e_over_encoder_p95"]
    ok = results["targets"]
    print(
        f"end-to-end / encoder p95 = {ratio:.2f} (target <= {ENCODER_TARGET}: "
        f"{'met' if ok['e2e_over_encoder_p95<=1.5'] else 'MISSED'}); "
        f"p50 = {results['e2e_over_encoder_p50']:.2f}"
    )
    print(
        f"similar p95 = {results['similar_e2e']['p95_ms']:.2f} ms (target <= "
        f"{SIMILAR_TARGET_MS:.0f} ms: {'met' if ok['similar_p95<=20ms'] else 'MISSED'})"
    )
    share = results["people_share"]
    print(f"\nfiltered to one person in {share:.0%} of the photos (interleaved pairs):")
    people_labels = {
        "text_cached_unfiltered": "search, cached q, no filter",
        "text_cached_people": "search 'Pat at the beach' (filter)",
        "similar_unfiltered": "similar/{id}, no filter",
        "similar_people": "similar/{id}?people=pat",
    }
    for key, label in people_labels.items():
        row = results[key]
        print(f"{label:34s} {int(row['n']):5d} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f}")
    ratios = results["people_over_unfiltered_p95"]
    targets = results["people_targets"]
    print(
        f"filtered / unfiltered p95: text {ratios['text']:.2f}, similar {ratios['similar']:.2f} "
        f"(target <= {FILTER_TARGET}: "
        f"{'met' if targets['people_p95<=2x_unfiltered'] else 'MISSED'}); full results: "
        f"{'yes' if targets['full_results'] else 'NO'}"
    )


if __name__ == "__main__":
    main()
