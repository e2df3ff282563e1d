"""Several API processes on one deployment: real ``image-search serve`` processes on
one PostgreSQL database and one Redis, each with its own in-process Qdrant
(``QDRANT_URL=:memory:``, standing in for a Qdrant server, which these machines lack).

What crosses processes through PostgreSQL and Redis is tested here: the rollout flags,
the search log and its click events, the watcher lock (one process watches, another
takes over when it dies), ``serve --workers 2`` and the hand-off of re-embedding to an
RQ worker in another process. What only a real Qdrant server can show is not: each
process here searches its own store, so vectors written by one process (an index run,
a worker's batch) are not searchable in another (docs/operations.md, "Several
processes and hosts").
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from image_search_service.context import open_context
from image_search_service.core.config import Settings
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.jobs.leader import lock_key
from image_search_service.services.library.background import WATCHER_LOCK
from tests.integration.api_support import write_library
from tests.integration.live_server import ServeProcess, serve_process, tiny_model_env
from tests.integration.reembed_support import cli_command, invoke, settings_env, subprocess_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT_S = 120  # generous on a busy machine; no timing is asserted
# Eager PyTorch: no ONNX export per process and DATA_DIR (the runtime is not under test).
FAST_START = {"ENCODER_RUNTIME": "torch"}


def eventually(check: Callable[[], Any], what: str, *processes: ServeProcess) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        result = check()
        if result:
            return result
        logs = "\n".join(p.log.read_text()[-3000:] for p in processes)
        assert time.monotonic() < deadline, f"never: {what}\n{logs}"
        time.sleep(0.1)


class Deployment:
    """API processes sharing one PostgreSQL database and one Redis."""

    def __init__(
        self, root: Path, tiny_models: dict[str, Path], postgres_url: str, redis_url: str
    ) -> None:
        self.root = root
        self.tiny_models = tiny_models
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.stack = ExitStack()

    def env(self, name: str, **extra: str) -> dict[str, str]:
        env = tiny_model_env(self.tiny_models, self.root / name / "data")
        env.update(
            {
                "DATABASE_URL": self.postgres_url,
                "REDIS_URL": self.redis_url,
                "QDRANT_URL": ":memory:",  # each process its own: no Qdrant server here
                "WATCHER_LOCK_RETRY_S": "0.2",
                **FAST_START,
                **extra,
            }
        )
        return env

    def start(self, name: str, *args: str, **extra: str) -> ServeProcess:
        """``image-search serve`` as process ``name`` (its own DATA_DIR and log), once
        it answers /health."""
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        return self.stack.enter_context(serve_process(workdir, self.env(name, **extra), *args))

    def watcher_holder(self) -> str | None:
        """The ``application_name`` of the session holding the watcher lock, from
        PostgreSQL itself."""
        unsigned = lock_key(WATCHER_LOCK) & 0xFFFFFFFFFFFFFFFF
        engine = create_engine(self.postgres_url)
        try:
            with engine.connect() as connection:
                row = connection.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "JOIN pg_database d ON d.oid = l.database "
                        "WHERE l.locktype = 'advisory' AND l.granted "
                        "AND d.datname = current_database() "
                        "AND l.classid::text::bigint = :high AND l.objid::text::bigint = :low"
                    ),
                    {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF},
                ).first()
        finally:
            engine.dispose()
        return None if row is None else str(row[0])


@pytest.fixture
def deployment(
    tmp_path: Path, tiny_models: dict[str, Path], postgres_url: str, redis_url: str
) -> Iterator[Deployment]:
    setup = Deployment(tmp_path, tiny_models, postgres_url, redis_url)
    with setup.stack:
        yield setup


def index_status(process: ServeProcess) -> dict[str, Any]:
    body: dict[str, Any] = process.client.get("/api/v1/admin/index").json()
    return body


def runs(process: ServeProcess) -> list[tuple[str, str, str]]:
    """(path, reason, phase) of every index run the process knows of."""
    status = index_status(process)
    every = status["finished"] + status["queued"] + [status["current"]]
    return [(r["path"], r["reason"], r["phase"]) for r in every if r is not None]


def index_on(process: ServeProcess, folder: Path) -> None:
    queued = process.client.post("/api/v1/admin/index", json={"path": str(folder)})
    assert queued.status_code == 202, queued.text

    def finished() -> bool:
        status = index_status(process)
        return not status["running"] and not status["queued"] and bool(status["finished"])

    eventually(finished, f"{folder} indexed", process)
    report = index_status(process)["finished"][0]
    assert report["phase"] == "done", report


def clicked_clip_arm(process: ServeProcess) -> dict[str, Any] | None:
    """The experiment report's CLIP arm, once it counts an event."""
    arm: dict[str, Any] | None = (
        process.client.get("/api/v1/admin/experiment").json()["arms"].get("clip")
    )
    return arm if arm and arm["events"] else None


def test_flags_and_click_events_cross_api_processes(deployment: Deployment, tmp_path: Path) -> None:
    a = deployment.start("a")
    b = deployment.start("b")
    photos = write_library(tmp_path / "photos")
    index_on(a, photos[0].parent)

    # A search answered by A, its click sent at once to B: B never saw the search and
    # finds it in the database (A's log writer may not have written it yet).
    search = a.client.get("/api/v1/search", params={"q": "red", "limit": 3})
    assert search.status_code == 200, search.text
    body = search.json()
    assert body["results"], body
    click = {
        "search_id": body["search_id"],
        "asset_id": body["results"][0]["asset_id"],
        "type": "click",
        "rank": 1,
    }
    event = b.client.post("/api/v1/events", json=click)
    assert event.status_code == 200, event.text
    assert event.json()["recorded"] is True
    assert b.client.post("/api/v1/events", json=click).json()["recorded"] is False  # once

    for process in (a, b):  # both report the search and its click, from the one database
        clip = eventually(partial(clicked_clip_arm, process), "the click reported", a, b)
        assert (clip["searches"], clip["clicked_searches"], clip["events"]) == (1, 1, 1)

    # A flag change through A is in force in B within ROLLOUT_REFRESH_S.
    put = a.client.put("/api/v1/admin/rollout", json={"siglip_rollout_percentage": 60})
    assert put.status_code == 200, put.text

    def in_force_on_b() -> bool:
        flags = b.client.get("/api/v1/admin/rollout").json()
        return bool(
            flags["siglip_rollout_percentage"] == 60 and flags["flags_source"] == "database"
        )

    eventually(in_force_on_b, "the flag change in force on B", a, b)
    history = b.client.get("/api/v1/admin/rollout/history").json()
    assert [c["new_siglip_rollout_percentage"] for c in history["changes"]] == [60]


def test_one_process_watches_and_another_takes_over_when_it_dies(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "Pictures"
    write_library(folder)
    watched = {"LIBRARY_PATHS": str(folder), "LIBRARY_DEBOUNCE_MS": "200"}
    a = deployment.start("a", **watched)
    b = deployment.start("b", **watched)
    resolved = str(folder.resolve())

    eventually(lambda: (resolved, "start", "done") in runs(a), "A indexes the folder", a, b)
    assert f":{a.process.pid}" in (deployment.watcher_holder() or "")
    # Both say who watches for the deployment (B looked it up when it started).
    for process in (a, b):
        watched_by = process.client.get("/api/v1/admin/index").json()["watched_by"]
        assert f":{a.process.pid}" in watched_by
    # A change is indexed by the watcher, A; B, started while A held the lock, never
    # indexed anything.
    write_library(folder / "more", seed=7)
    eventually(lambda: (resolved, "watch", "done") in runs(a), "A indexes a change", a, b)
    assert runs(b) == []

    a.process.kill()  # no clean-up: a crash, or the OOM killer
    a.process.wait(timeout=30)
    eventually(lambda: (resolved, "start", "done") in runs(b), "B takes over", b)
    assert f":{b.process.pid}" in (deployment.watcher_holder() or "")
    assert f":{b.process.pid}" in b.client.get("/api/v1/admin/index").json()["watched_by"]


def test_serve_workers_refuses_the_embedded_stores(make_settings: Any) -> None:
    env = settings_env(make_settings())
    refused = invoke(env, "serve", "--workers", "2", ok=False)
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert "\n" not in line, line
    assert line.startswith("error: --workers 2 needs stores that several processes share")
    assert "DATABASE_URL=postgresql" in line
    assert "QDRANT_URL=http" in line
    assert "REDIS_URL" in line
    on_postgres = {**env, "DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/db"}
    in_process = invoke(
        {**on_postgres, "QDRANT_URL": ":memory:"}, "serve", "--workers", "2", ok=False
    )
    assert in_process.exit_code == 1
    assert "QDRANT_URL=http://HOST:6333 (now :memory:, in-process)" in in_process.output
    assert "DATABASE_URL" not in in_process.output


def test_serve_workers_two_processes_one_watcher(
    deployment: Deployment, tmp_path: Path, unreachable_url: str
) -> None:
    """``serve --workers 2`` on PostgreSQL and a Qdrant server URL (nothing listens
    there: the workers start, serve /health and compete for the watcher lock all the
    same; searches would answer 503)."""
    folder = tmp_path / "Pictures"
    folder.mkdir()
    served = deployment.start(
        "workers", "--workers", "2", QDRANT_URL=unreachable_url, LIBRARY_PATHS=str(folder)
    )
    log = served.log
    eventually(lambda: log.read_text().count("Application startup complete") == 2, "2 workers")
    holder = eventually(deployment.watcher_holder, "a worker holds the watcher lock", served)
    pid = int(holder.rsplit(":", 1)[1])
    assert pid != served.process.pid  # a worker, not uvicorn's parent process
    assert log.read_text().count("holds the watcher lock") == 1

    served.process.send_signal(15)  # uvicorn stops both workers; the holder gives it up
    served.process.wait(timeout=60)
    assert "stopped watching" in log.read_text()
    # PostgreSQL frees the lock once the backend has seen its client go.
    eventually(lambda: deployment.watcher_holder() is None, "the lock freed")


def test_an_rq_worker_in_another_process_re_embeds_for_an_api_process(
    deployment: Deployment,
    make_settings: Any,
    encoders: EncoderRegistry,
    tmp_path: Path,
) -> None:
    """An API process queues a re-embedding run on Redis; a worker process elsewhere
    does it, and the API process sees it done through PostgreSQL. The worker's vectors
    go to its own store here (a Qdrant server would share them)."""
    api = deployment.start("api")
    photos = write_library(tmp_path / "photos")
    index_on(api, photos[0].parent)
    # The worker's store: with a Qdrant server this is the API's store, where the run
    # made the collection; here it is made for the worker beforehand.
    worker_settings: Settings = make_settings(
        database_url=deployment.postgres_url,
        redis_url=deployment.redis_url,
        qdrant_url=f"path:{tmp_path / 'worker-qdrant'}",
    )
    ctx = open_context(worker_settings, encoders=encoders)
    try:
        ctx.ensure_collection("siglip")
    finally:
        ctx.close()

    submitted = api.client.post("/api/v1/admin/reembed", json={"model": "siglip", "job_size": 2})
    assert submitted.status_code == 202, submitted.text
    submission = submitted.json()
    assert (submission["runner"], submission["planned"]) == ("rq", len(photos))

    worker = subprocess.run(
        cli_command("worker", "--burst"),
        env={**subprocess_env(settings_env(worker_settings)), **FAST_START},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    progress = api.client.get("/api/v1/admin/reembed", params={"target": "siglip"}).json()
    assert (progress["done"], progress["failed"], progress["pending"]) == (len(photos), 0, 0)
    assert progress["complete"] is True
    ctx = open_context(worker_settings, encoders=encoders)
    try:
        assert ctx.store.count(ctx.spec("siglip").collection) == len(photos)
    finally:
        ctx.close()


def test_watch_stands_by_for_a_server_and_takes_over(
    deployment: Deployment, tmp_path: Path
) -> None:
    """``image-search watch`` beside an API process that watches: it waits, takes the
    folders over when that process dies, and gives them up when stopped."""
    folder = tmp_path / "Pictures"
    write_library(folder)
    watched = {"LIBRARY_PATHS": str(folder), "LIBRARY_DEBOUNCE_MS": "200"}
    api = deployment.start("api", **watched)
    assert f":{api.process.pid}" in (deployment.watcher_holder() or "")
    log = tmp_path / "watch.log"
    with log.open("wb") as sink:
        watcher = subprocess.Popen(
            cli_command("watch"),
            env={**deployment.env("watch", **watched), "LOG_LEVEL": "INFO"},
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: "takes over when it stops" in log.read_text(), "watch stands by")
        api.process.kill()
        api.process.wait(timeout=30)
        eventually(
            lambda: f":{watcher.pid}" in (deployment.watcher_holder() or ""),
            "watch takes the lock over",
        )
        eventually(lambda: "watching " in log.read_text(), "watch watches the folder")
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)
    assert watcher.returncode == 0, log.read_text()
    # PostgreSQL frees the lock once the backend has seen its client go.
    eventually(lambda: deployment.watcher_holder() is None, "the lock freed")
