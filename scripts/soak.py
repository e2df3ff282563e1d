"""Soak: a live library under churn, searched and clicked, re-embedded to SigLIP, its
rollout changed and its server SIGKILLed and restarted, and at the end nothing lost.

Runs a real ``image-search serve`` subprocess on the embedded default (SQLite and Qdrant
Edge under a temporary DATA_DIR, background work in the server) with the shipped demo
models, ``LIBRARY_PATHS`` on a folder of generated JPEGs, and for ``--minutes``:

- churn: photos added, re-written in place with other content, and deleted, at a steady
  rate (some in new sub-folders), with a ledger of what should exist; the library grows
  to ``--files`` and then keeps that size;
- 6 search clients (many user ids): text, similar, by-image searches, thumbnails and
  asset pages, and click events on returned results;
- at 10 % of the run a re-embedding to SigLIP (``POST /api/v1/admin/reembed``), at 20 %
  a live rollout change (SigLIP for 0 -> 50 % of users, ``PUT /api/v1/admin/rollout``),
  at 50 % a SIGKILL of the server and a restart on the same DATA_DIR (the kill window
  runs from the kill to the first successful ``/ready``; the re-embedding is submitted
  again after the restart, as the operations guide says to).

Once a minute (``--every``) one line: the server's RSS and open files (its process and
children, from /proc), requests done and errors. When the time is up the churn and the
clients stop, indexing is left to settle (bounded), and it checks:

1. the assets equal the files on disk: same paths, each active, with the content hash
   of the file as it is now (a re-written photo was re-indexed);
2. every asset finds itself by similarity, with each model: a search by the file's own
   bytes ranks the asset first (``/search/similar`` leaves the asset itself out, so the
   file is the query). A tie is allowed: another asset may come first only when its
   score is within ``TIE_COSINE`` of the asset's own and that is at least
   ``SELF_MIN_COSINE`` (an all but identical picture: the INT8 runtime's vectors agree
   to ~0.999, not bit for bit, so two near-copies may swap places);
3. per model, the collection's points equal the assets the DB records as embedded, and
   that is every asset (coverage 1, nothing pending or failed);
4. no request got a 5xx or a connection error outside the kill window, and no 4xx
   other than those that churn explains (a deleted or re-written photo);
5. RSS and open files do not grow: in each server life long enough to judge (past its
   warm-up and the last operator action), the last third against the first third, with
   the tolerance printed beside the figures;
6. the rollout change survived the restart, and the re-embedding and restart happened.

Any failed check is one line and exit status 1.

    python scripts/soak.py --minutes 30 [--seed 1] [--photos 100] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from image_search_service.demo.synthetic import (
    COLOURS,
    SHAPES,
    random_picture,
    write_library,
)

MODELS = ("clip", "siglip")
CLIENTS = 6
USERS = 200  # distinct X-User-Id values: a 50 % rollout splits them
TIE_COSINE = 0.005
SELF_MIN_COSINE = 0.99
RSS_TOLERANCE = 0.10  # growth allowed between the first and the last third of a life
RSS_SLACK_MIB = 16.0
FD_TOLERANCE = 10  # sockets in flight, an index run's open files
JUDGE_MIN_S = 120.0  # a life needs this long past its warm-up to be judged
WARMUP_S = 60.0
SAMPLE_EVERY_S = 2.0
START_TIMEOUT_S = 180.0
API = "/api/v1"

# 4xx a request may get because the library changes under it; any other is a failure.
CHURN_4XX: dict[str, frozenset[int]] = {
    "similar": frozenset({404}),  # the photo was deleted since its id was listed
    "thumbnail": frozenset({404, 409, 422}),  # deleted, re-written, or caught mid-write
}


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- what the checks judge (pure, tested in tests/unit/test_soak.py) --------------------
@dataclass(frozen=True)
class Incident:
    """A request that failed: a 5xx, a connection error or an unexpected 4xx."""

    started: float
    ended: float
    what: str
    outcome: str


@dataclass(frozen=True)
class Window:
    """From the SIGKILL to the first successful /ready after the restart."""

    killed: float
    ready: float

    def overlaps(self, incident: Incident) -> bool:
        return incident.started <= self.ready and incident.ended >= self.killed


def outside_windows(incidents: Iterable[Incident], windows: Sequence[Window]) -> list[Incident]:
    """The incidents no kill window explains: a request in flight at any moment of a
    window may fail."""
    return [i for i in incidents if not any(w.overlaps(i) for w in windows)]


def compare_library(ledger: dict[str, str], assets: Sequence[dict[str, Any]]) -> list[str]:
    """Failure lines: ``ledger`` maps each file that should exist to its SHA-256;
    ``assets`` is the API's listing (missing assets are not listed)."""
    failures = []
    by_path: dict[str, dict[str, Any]] = {}
    for asset in assets:
        if asset["path"] in by_path:
            failures.append(f"library: two assets for {asset['path']}")
        by_path[asset["path"]] = asset
    lost = sorted(set(ledger) - set(by_path))
    extra = sorted(set(by_path) - set(ledger))
    if lost:
        failures.append(f"library: {len(lost)} file(s) on disk have no asset, e.g. {lost[:3]}")
    if extra:
        failures.append(f"library: {len(extra)} asset(s) have no file on disk, e.g. {extra[:3]}")
    inactive = sorted(p for p, a in by_path.items() if p in ledger and a["status"] != "active")
    if inactive:
        first = by_path[inactive[0]]
        failures.append(
            f"library: {len(inactive)} asset(s) not active, e.g. {inactive[0]} is "
            f"{first['status']} ({first.get('error')})"
        )
    stale = sorted(p for p, a in by_path.items() if p in ledger and a["content_hash"] != ledger[p])
    if stale:
        failures.append(
            f"library: {len(stale)} asset(s) hold an older content than their file "
            f"(a re-write not re-indexed), e.g. {stale[:3]}"
        )
    return failures


def finds_itself(asset_id: str, hits: Sequence[dict[str, Any]]) -> bool:
    """Whether a search by an asset's own file finds it: first, or tied with the first
    (see the module's docstring)."""
    if not hits:
        return False
    if hits[0]["asset_id"] == asset_id:
        return True
    own = next((h for h in hits if h["asset_id"] == asset_id), None)
    return (
        own is not None
        and own["score"] >= SELF_MIN_COSINE
        and hits[0]["score"] - own["score"] <= TIE_COSINE
    )


def coverage_failures(status: dict[str, Any], expected_assets: int) -> list[str]:
    """Failure lines from ``GET /api/v1/admin/status``: per model, points = embedded =
    every asset."""
    failures = []
    if status["assets"] != expected_assets or status["failed"] or status["indexing"]:
        failures.append(
            f"status: {status['assets']} searchable assets ({status['failed']} failed, "
            f"{status['indexing']} indexing), {expected_assets} files on disk"
        )
    for key, model in sorted(status["models"].items()):
        if model["points"] != model["embedded"]:
            failures.append(
                f"{key}: {model['points']} points in {model['collection']} but "
                f"{model['embedded']} assets recorded as embedded"
            )
        if model["embedded"] != status["assets"] or model["pending"] or model["failed"]:
            failures.append(
                f"{key}: embedded {model['embedded']} of {status['assets']} assets "
                f"(coverage {model['coverage']}, pending {model['pending']}, "
                f"failed {model['failed']})"
            )
    return failures


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the soak started
    pid: int
    rss_mib: float
    open_files: int


@dataclass
class Growth:
    pid: int
    judged_from: float
    judged_to: float
    rss_first: float
    rss_last: float
    fds_first: int
    fds_last: int
    ok: bool
    note: str


def judge_growth(
    samples: Sequence[Sample], actions: Sequence[float], *, min_judged_s: float = JUDGE_MIN_S
) -> list[Growth]:
    """Per server life (a pid) long enough past its warm-up (``WARMUP_S`` or a quarter of
    the life, whichever is longer) and the last operator action in it (``actions``: times
    of the re-embedding, rollout change and restart, plus ``WARMUP_S``): the mean RSS and
    the most open files of the last third against the first third."""
    verdicts = []
    for pid in dict.fromkeys(s.pid for s in samples):
        life = [s for s in samples if s.pid == pid]
        start, end = life[0].at, life[-1].at
        settled = max(
            [start + max(WARMUP_S, (end - start) / 4)]
            + [a + WARMUP_S for a in actions if start <= a <= end]
        )
        judged = [s for s in life if s.at >= settled]
        if len(judged) < 6 or judged[-1].at - judged[0].at < min_judged_s:
            continue
        third = len(judged) // 3
        first, last = judged[:third], judged[-third:]
        rss_first = statistics.fmean(s.rss_mib for s in first)
        rss_last = statistics.fmean(s.rss_mib for s in last)
        fds_first = max(s.open_files for s in first)
        fds_last = max(s.open_files for s in last)
        rss_ok = rss_last <= rss_first * (1 + RSS_TOLERANCE) + RSS_SLACK_MIB
        fds_ok = fds_last <= fds_first + FD_TOLERANCE
        note = (
            f"pid {pid}, judged {judged[0].at / 60:.1f}-{judged[-1].at / 60:.1f} min: RSS "
            f"{rss_first:.0f} -> {rss_last:.0f} MiB (allowed +{RSS_TOLERANCE:.0%} "
            f"+{RSS_SLACK_MIB:.0f} MiB), open files {fds_first} -> {fds_last} "
            f"(allowed +{FD_TOLERANCE})"
        )
        verdicts.append(
            Growth(
                pid=pid,
                judged_from=judged[0].at,
                judged_to=judged[-1].at,
                rss_first=round(rss_first, 1),
                rss_last=round(rss_last, 1),
                fds_first=fds_first,
                fds_last=fds_last,
                ok=rss_ok and fds_ok,
                note=note,
            )
        )
    return verdicts


# -- the server --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def server_env(data_dir: Path, library: Path) -> dict[str, str]:
    """The embedded default with the demo models: this machine's store, database, queue,
    model and key settings left out."""
    dropped = ("QDRANT_", "DATABASE_", "REDIS_", "CLIP_", "SIGLIP_", "LIBRARY_", "USE_SIGLIP")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    for key in ("API_KEY", "READ_API_KEY", "SIGNING_SECRET", "INTERLEAVE_PERCENTAGE"):
        env.pop(key, None)
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "LIBRARY_PATHS": str(library),
            "CLIP_MODEL_NAME": "demo-clip",
            "SIGLIP_MODEL_NAME": "demo-siglip",
            "CLIP_PRETRAINED": "",
            "SIGLIP_PRETRAINED": "",
            "DEVICE": "cpu",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class Server:
    """``image-search serve`` in a child process, restarted on the same port and DATA_DIR."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.log = workdir / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "image_search_service.cli", "serve"]
                + ["--port", str(self.port)],
                env=self.env,
                cwd=self.workdir,  # no stray .env file from a checkout
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.started_at.append(time.monotonic())

    def wait_ready(self, client: httpx.Client) -> float:
        """The time of the first 200 from /ready; a port taken meanwhile is tried again
        on another."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                said = self.log.read_text(errors="replace")[-3000:]
                if "address already in use" not in said.lower():
                    raise SystemExit(f"the server stopped (rc {self.process.returncode}):\n{said}")
                self.port = free_port()
                self.start()
            try:
                if client.get(self.url + "/ready").status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    "the server did not become ready:\n" + self.log.read_text()[-3000:]
                )
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()  # reaped: a zombie would look alive to the next start's check

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def measure(root: int) -> tuple[float, int] | None:
    """RSS (MiB, VmRSS) and open files of ``root`` and its children; None once gone."""
    rss_kib, fds, seen = 0, 0, False
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):  # a zombie (killed, not yet reaped) has none
                rss_kib += int(line.split()[1])
                seen = True
    return (rss_kib / 1024, fds) if seen else None


# -- the load ----------------------------------------------------------------------------
class Tally:
    """Every request's outcome, counted; the failures kept with their times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.answered_by: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.incidents: list[Incident] = []
        self.done = 0

    def record(self, what: str, started: float, outcome: str, failure: str | None) -> None:
        with self.lock:
            self.done += 1
            self.outcomes[f"{what} {outcome}"] += 1
            if failure is not None:
                self.incidents.append(Incident(started, time.monotonic(), what, failure))


@dataclass
class Soak:
    server: Server
    library: Path
    rng: random.Random
    minutes: float
    every: float
    tally: Tally = field(default_factory=Tally)
    ledger: dict[str, str] = field(default_factory=dict)
    ledger_lock: threading.Lock = field(default_factory=threading.Lock)
    asset_ids: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    windows: list[Window] = field(default_factory=list)
    actions: list[float] = field(default_factory=list)  # seconds since t0
    samples: list[Sample] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    churn: Counter[str] = field(default_factory=Counter)
    threads: list[threading.Thread] = field(default_factory=list)
    t0: float = 0.0

    # -- requests ----------------------------------------------------------------------
    def call(
        self, client: httpx.Client, method: str, path: str, *, what: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, counted; the response when it succeeded."""
        started = time.monotonic()
        try:
            response = client.request(method, self.server.url + path, **kwargs)
        except httpx.HTTPError as exc:
            self.tally.record(what, started, type(exc).__name__, f"{type(exc).__name__}: {exc}")
            return None
        code = response.status_code
        expected = code < 400 or code in CHURN_4XX.get(what, frozenset())
        failure = None if expected else f"{code} {response.text[:300]}"
        self.tally.record(what, started, str(code), failure)
        return response if response.is_success else None

    def operator(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        """An operator's call: it must succeed."""
        response = self.call(client, method, path, what="admin", **kwargs)
        if response is None:
            self.failures.append(f"operator: {method} {path} failed (see the requests)")
            return None
        return response.json()

    def guarded(self, name: str, body: Callable[[], None]) -> None:
        """A part of the load; its crash ends the soak as a failure, not a silent thread."""
        try:
            body()
        except BaseException as exc:  # reported, and the soak stops
            self.failures.append(f"{name}: stopped by {type(exc).__name__}: {exc}")
            self.stop.set()

    # -- churn -------------------------------------------------------------------------
    def write_photo(self, path: Path) -> None:
        with self.ledger_lock:
            present = set(self.ledger.values())
        while True:  # the library dedupes by content: a copy of another file is no asset
            buffer = io.BytesIO()
            random_picture(self.rng).image.save(
                buffer, format="JPEG", quality=self.rng.randint(70, 95)
            )
            data = buffer.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in present:
                break
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)  # in place, as a camera import or an editor's save does
        with self.ledger_lock:
            self.ledger[str(path)] = digest

    def run_churn(self, per_second: float, most_files: int) -> None:
        """Add 50 %, re-write 30 %, delete 20 % until the library holds ``most_files``,
        then add and delete alike (35 % each): a library of steady size, whose memory
        should stay flat."""
        folders = ["album-1", "album-2", "album-2/more"]
        tick = time.monotonic()
        added = 0
        while not self.stop.is_set():
            with self.ledger_lock:
                existing = sorted(self.ledger)
            add, rewrite = (0.5, 0.8) if len(existing) < most_files else (0.35, 0.65)
            roll = self.rng.random()
            if roll < add or len(existing) < 20:
                added += 1
                if added % 50 == 0:  # a new sub-folder now and then: the watcher must follow
                    folders.append(f"new-{added // 50}")
                    folder = folders[-1]
                else:
                    folder = self.rng.choice(folders)
                self.write_photo(self.library / folder / f"soak_{added:05d}.jpg")
                self.churn["added"] += 1
            elif roll < rewrite:
                self.write_photo(Path(self.rng.choice(existing)))
                self.churn["modified"] += 1
            else:
                victim = self.rng.choice(existing)
                with self.ledger_lock:
                    del self.ledger[victim]
                Path(victim).unlink()
                self.churn["deleted"] += 1
            tick += 1 / per_second
            self.stop.wait(max(0.0, tick - time.monotonic()))

    # -- clients -----------------------------------------------------------------------
    def run_client(self) -> None:
        rng = random.Random(self.rng.random())
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                headers = {"X-User-Id": f"soak-user-{rng.randrange(USERS)}"}
                roll = rng.random()
                response: httpx.Response | None
                if roll < 0.45:
                    query = f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
                    params = {"q": query, "limit": 10}
                    if rng.random() < 0.2:
                        response = self.call(
                            client,
                            "POST",
                            f"{API}/search",
                            what="text",
                            json=params,
                            headers=headers,
                        )
                    else:
                        response = self.call(
                            client,
                            "GET",
                            f"{API}/search",
                            what="text",
                            params=params,
                            headers=headers,
                        )
                elif roll < 0.75 and self.asset_ids:
                    asset = rng.choice(self.asset_ids)
                    response = self.call(
                        client,
                        "GET",
                        f"{API}/search/similar/{asset}",
                        what="similar",
                        params={"limit": 10},
                        headers=headers,
                    )
                elif roll < 0.85:
                    buffer = io.BytesIO()
                    random_picture(rng).image.save(buffer, format="JPEG", quality=85)
                    response = self.call(
                        client,
                        "POST",
                        f"{API}/search/image",
                        what="image",
                        files={"file": ("query.jpg", buffer.getvalue(), "image/jpeg")},
                        data={"limit": "10"},
                        headers=headers,
                    )
                elif roll < 0.93 and self.asset_ids:
                    asset = rng.choice(self.asset_ids)
                    self.call(
                        client,
                        "GET",
                        f"{API}/assets/{asset}/thumbnail",
                        what="thumbnail",
                        params={"size": 128},
                    )
                    response = None
                else:
                    response = self.call(
                        client,
                        "GET",
                        f"{API}/assets",
                        what="assets",
                        params={"limit": 100, "offset": rng.randrange(0, 400)},
                    )
                    if response is not None:
                        ids = [a["id"] for a in response.json()["items"]]
                        self.asset_ids[:] = (self.asset_ids + ids)[-2000:]
                    response = None
                if response is not None:
                    self.after_search(client, rng, response.json())
                self.stop.wait(rng.uniform(0.05, 0.25))

    def after_search(self, client: httpx.Client, rng: random.Random, body: dict[str, Any]) -> None:
        with self.tally.lock:
            self.tally.answered_by[body["model"]] += 1
            if body.get("fallback_reason"):
                # The reason names counts ("has not embedded 2 of ..."): keep its words.
                reason = re.sub(r"\d+", "N", body["fallback_reason"].split(";")[0])
                self.tally.fallbacks[reason] += 1
        results = body["results"]
        if body.get("search_id") and results and rng.random() < 0.5:
            rank = rng.randrange(len(results))
            self.call(
                client,
                "POST",
                f"{API}/events",
                what="event",
                json={
                    "search_id": body["search_id"],
                    "asset_id": results[rank]["asset_id"],
                    "type": rng.choice(("click", "click", "open", "more_like_this")),
                    "rank": rank + 1,
                },
            )

    # -- the operator: re-embed, rollout, kill and restart -----------------------------
    def run_operator(self) -> None:
        total = self.minutes * 60
        with httpx.Client(timeout=60) as client:
            if not self.stop.wait(max(0.0, self.t0 + 0.10 * total - time.monotonic())):
                self.actions.append(time.monotonic() - self.t0)
                answer = self.operator(
                    client, "POST", f"{API}/admin/reembed", json={"model": "siglip"}
                )
                log(f"re-embedding to SigLIP started: {answer and answer.get('planned')} planned")
            if not self.stop.wait(max(0.0, self.t0 + 0.20 * total - time.monotonic())):
                self.actions.append(time.monotonic() - self.t0)
                answer = self.operator(
                    client, "PUT", f"{API}/admin/rollout", json={"siglip_rollout_percentage": 50}
                )
                if answer is not None and answer["siglip_rollout_percentage"] != 50:
                    self.failures.append(f"rollout: PUT answered {answer}")
                log("rollout: SigLIP for 50 % of users")
            if not self.stop.wait(max(0.0, self.t0 + 0.50 * total - time.monotonic())):
                self.kill_and_restart(client)

    def kill_and_restart(self, client: httpx.Client) -> None:
        killed = time.monotonic()
        self.actions.append(killed - self.t0)
        old = self.server.pid
        self.server.kill()
        self.server.start()
        ready = self.server.wait_ready(client)
        self.windows.append(Window(killed, ready))
        log(f"SIGKILL of pid {old}; pid {self.server.pid} ready {ready - killed:.1f} s later")
        rollout = self.operator(client, "GET", f"{API}/admin/rollout")
        if rollout is not None and (
            rollout["siglip_rollout_percentage"] != 50 or rollout["flags_source"] != "database"
        ):
            self.failures.append(
                "rollout: after the restart the flags are "
                f"{rollout['siglip_rollout_percentage']} % from {rollout['flags_source']}"
            )
        progress = self.operator(client, "GET", f"{API}/admin/reembed", params={"target": "siglip"})
        if progress is not None and not progress["complete"]:
            # The documented way to resume: submit again, the DB knows what is left.
            answer = self.operator(client, "POST", f"{API}/admin/reembed", json={"model": "siglip"})
            log(f"re-embedding resumed: {answer and answer.get('planned')} planned")
        self.actions.append(time.monotonic() - self.t0)

    # -- watching the server -----------------------------------------------------------
    def run_monitor(self) -> None:
        next_row = self.t0 + self.every
        last_done = 0
        while not self.stop.wait(SAMPLE_EVERY_S):
            pid = self.server.pid
            figures = measure(pid) if pid is not None else None
            now = time.monotonic()
            if pid is not None and figures is not None:
                self.samples.append(Sample(now - self.t0, pid, round(figures[0], 1), figures[1]))
            if now >= next_row and self.samples:
                next_row += self.every
                self.add_row(last_done)
                last_done = self.tally.done

    def add_row(self, last_done: int) -> None:
        sample = self.samples[-1]
        with self.tally.lock:
            done, errors = self.tally.done, len(self.tally.incidents)
        with self.ledger_lock:
            files = len(self.ledger)
        row = {
            "minute": round(sample.at / 60, 1),
            "pid": sample.pid,
            "rss_mib": sample.rss_mib,
            "open_files": sample.open_files,
            "requests": done,
            "requests_since": done - last_done,
            "errors": errors,
            "files": files,
        }
        self.rows.append(row)
        log(
            f"minute {row['minute']:5.1f}  pid {row['pid']}  RSS {row['rss_mib']:6.1f} MiB  "
            f"open files {row['open_files']:3d}  requests {done} (+{row['requests_since']})  "
            f"errors {errors}  files {files}"
        )


# -- settling and checking ---------------------------------------------------------------
def list_assets(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    assets: list[dict[str, Any]] = []
    while True:
        page = client.get(f"{url}{API}/assets", params={"limit": 500, "offset": len(assets)})
        page.raise_for_status()
        items = page.json()["items"]
        assets.extend(items)
        if not items or len(assets) >= page.json()["total"]:
            return assets


def settle(soak: Soak, client: httpx.Client, timeout: float) -> float:
    """Wait until indexing is idle, nothing is pending and the listing matches the
    ledger (twice in a row), or ``timeout``; the seconds it took."""
    started = time.monotonic()
    url = soak.server.url
    calm = 0
    while time.monotonic() - started < timeout:
        time.sleep(1.5)  # > the watcher's quiet period is reached after a few of these
        index = client.get(f"{url}{API}/admin/index").json()
        status = client.get(f"{url}{API}/admin/status").json()
        pending = sum(m["pending"] for m in status["models"].values())
        paths = {a["path"] for a in list_assets(client, url)}
        idle = not index["running"] and not index["queued"]
        calm = calm + 1 if idle and not pending and paths == set(soak.ledger) else 0
        if calm >= 2:
            break
    return time.monotonic() - started


def check_self_search(
    soak: Soak, client: httpx.Client, assets: Sequence[dict[str, Any]], sample: int
) -> tuple[int, list[str]]:
    chosen = list(assets) if len(assets) <= sample else soak.rng.sample(list(assets), sample)
    failures = []
    for key in MODELS:
        lost = []
        for asset in chosen:
            data = Path(asset["path"]).read_bytes()
            response = client.post(
                f"{soak.server.url}{API}/search/image",
                files={"file": ("self.jpg", data, "image/jpeg")},
                data={"limit": "5", "model": key, "min_score": "-1"},
            )
            hits = response.json()["results"] if response.is_success else []
            if not finds_itself(asset["id"], hits):
                top = [(h["path"].rsplit("/", 1)[-1], round(h["score"], 4)) for h in hits[:3]]
                lost.append(f"{asset['path']} (status {response.status_code}, top {top})")
        if lost:
            failures.append(
                f"{key}: {len(lost)} of {len(chosen)} assets do not find themselves, e.g. {lost[0]}"
            )
    return len(chosen), failures


def _terminate(signum: int, frame: object) -> None:
    # `timeout` signals the whole process group, so a second SIGTERM may follow: it must
    # not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="length of the load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--photos", type=int, default=100, help="photos in the library at start")
    parser.add_argument("--churn", type=float, default=1.0, help="file changes per second")
    parser.add_argument(
        "--files", type=int, help="the library grows to this many, then holds (2 x --photos)"
    )
    parser.add_argument("--every", type=float, default=60.0, help="seconds between lines")
    parser.add_argument("--sample", type=int, default=400, help="assets self-searched at most")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to settle at most")
    parser.add_argument("--json", action="store_true", help="a machine-readable summary")
    parser.add_argument("--keep", action="store_true", help="keep the temporary DATA_DIR")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be above 0")

    # A SIGTERM (CI's `timeout`) unwinds like Ctrl-C: the server is stopped, not orphaned.
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    library = workdir / "library"
    # Not the library's own seed: the same stream would re-draw its photos, byte for byte.
    rng = random.Random(f"soak-{args.seed}")
    server = Server(workdir, server_env(workdir / "data", library))
    soak = Soak(server=server, library=library, rng=rng, minutes=args.minutes, every=args.every)
    try:
        summary = run(soak, args)
    finally:
        soak.stop.set()
        for thread in soak.threads:  # the churn must not write into a removed folder
            thread.join(timeout=90)
        server.stop()
        if args.keep:
            log(f"kept {workdir} (server log: {server.log})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 1 if summary["failures"] else 0


def run(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    for path, _ in write_library(soak.library, args.photos, seed=args.seed):
        soak.ledger[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    soak.server.start()
    with httpx.Client(timeout=60) as client:
        soak.server.wait_ready(client)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the first index run: every photo embedded and its point stored
            clip = client.get(f"{soak.server.url}{API}/admin/status").json()["models"]["clip"]
            if clip["embedded"] >= args.photos and clip["points"] == clip["embedded"]:
                break
            if time.monotonic() > deadline:
                said = soak.server.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"the first index run did not finish:\n{said}")
            time.sleep(0.5)
        soak.asset_ids[:] = [a["id"] for a in list_assets(client, soak.server.url)]
        log(f"{args.photos} photos indexed; load for {args.minutes} min on {soak.server.url}")

        soak.t0 = time.monotonic()
        parts: list[tuple[str, Callable[[], None]]] = [
            ("churn", lambda: soak.run_churn(args.churn, args.files or 2 * args.photos)),
            ("operator", soak.run_operator),
            ("monitor", soak.run_monitor),
        ] + [(f"client-{i}", soak.run_client) for i in range(CLIENTS)]
        threads = soak.threads = [
            threading.Thread(target=soak.guarded, args=(name, body), name=name)
            for name, body in parts
        ]
        for thread in threads:
            thread.start()
        soak.stop.wait(args.minutes * 60)
        soak.stop.set()
        for thread in threads:
            thread.join()
        load_s = time.monotonic() - soak.t0
        if not soak.rows or soak.rows[-1]["requests"] != soak.tally.done:
            soak.add_row(soak.rows[-1]["requests"] if soak.rows else 0)

        settled_s = settle(soak, client, args.settle)
        log(f"settled in {settled_s:.1f} s; checking")
        assets = list_assets(client, soak.server.url)
        checks: dict[str, list[str]] = {}
        checks["library equals the files on disk"] = compare_library(soak.ledger, assets)
        checked, self_failures = check_self_search(soak, client, assets, args.sample)
        checks[f"every asset finds itself ({checked} assets x {len(MODELS)} models)"] = (
            self_failures
        )
        status = client.get(f"{soak.server.url}{API}/admin/status").json()
        checks["points per collection equal coverage"] = coverage_failures(status, len(soak.ledger))

    outside = outside_windows(soak.tally.incidents, soak.windows)
    checks["no 5xx, connection error or unexpected 4xx outside the kill window"] = [
        f"{i.what} at {(i.started - soak.t0) / 60:.2f} min: {i.outcome}" for i in outside[:10]
    ] + ([f"... and {len(outside) - 10} more"] if len(outside) > 10 else [])
    growth = judge_growth(soak.samples, soak.actions)
    flat = "RSS and open files flat" + ("" if growth else " (not judged: every life too short)")
    checks[flat] = [f"growth: {g.note}" for g in growth if not g.ok]
    operations = list(soak.failures)
    if not soak.windows:
        operations.append("restart: the server was never killed (run longer)")
    checks["re-embedding, rollout change, SIGKILL and restart"] = operations

    failures = [line for lines in checks.values() for line in lines]
    windows = [
        {"killed_min": round((w.killed - soak.t0) / 60, 2), "seconds": round(w.ready - w.killed, 2)}
        for w in soak.windows
    ]
    return {
        "minutes": args.minutes,
        "seed": args.seed,
        "load_seconds": round(load_s, 1),
        "settle_seconds": round(settled_s, 1),
        "photos_at_start": args.photos,
        "files_at_end": len(soak.ledger),
        "churn": dict(soak.churn),
        "requests": soak.tally.done,
        "outcomes": dict(sorted(soak.tally.outcomes.items())),
        "answered_by": dict(soak.tally.answered_by),
        "fallbacks": dict(soak.tally.fallbacks),
        "errors": len(soak.tally.incidents),
        "errors_outside_kill_window": len(outside),
        "kill_windows": windows,
        "rows": soak.rows,
        "growth": [asdict(g) for g in growth],
        "tolerance": (
            f"RSS +{RSS_TOLERANCE:.0%} +{RSS_SLACK_MIB:.0f} MiB, open files +{FD_TOLERANCE}, "
            f"last third against first third of each life judged (>= {JUDGE_MIN_S:.0f} s "
            f"past warm-up)"
        ),
        "status": {
            k: {f: m[f] for f in ("points", "embedded", "pending", "failed", "coverage")}
            for k, m in status["models"].items()
        },
        "checks": {name: not lines for name, lines in checks.items()},
        "failures": failures,
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"soak: {summary['minutes']} min (seed {summary['seed']}), settled in "
        f"{summary['settle_seconds']} s"
    )
    print("minute  pid      RSS MiB  open files  requests  errors  files")
    for row in summary["rows"]:
        print(
            f"{row['minute']:6.1f}  {row['pid']:<7d}  {row['rss_mib']:7.1f}  "
            f"{row['open_files']:10d}  {row['requests']:8d}  {row['errors']:6d}  {row['files']:5d}"
        )
    print(
        f"churn: {summary['churn']}; files {summary['photos_at_start']} -> "
        f"{summary['files_at_end']}"
    )
    print(
        f"requests: {summary['requests']}, answered by {summary['answered_by']}, "
        f"fallbacks {summary['fallbacks']}"
    )
    print(
        f"errors: {summary['errors']} ({summary['errors_outside_kill_window']} outside the "
        f"kill window); kill window(s): {summary['kill_windows']}"
    )
    print(f"outcomes: {summary['outcomes']}")
    print(f"status: {summary['status']}")
    print(f"growth ({summary['tolerance']}):")
    for verdict in summary["growth"]:
        print(f"  {'ok' if verdict['ok'] else 'GROWING'}: {verdict['note']}")
    if not summary["growth"]:
        print("  no server life long enough to judge (needs a few minutes past warm-up)")
    for name, ok in summary["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for line in summary["failures"]:
        print(f"FAILED: {line}")


if __name__ == "__main__":
    sys.exit(main())
