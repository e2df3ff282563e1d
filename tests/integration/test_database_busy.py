"""Another process holds the SQLite write lock: searches keep answering, every click on
them is accepted and, once the lock is gone, counted; writes wait their turn."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from image_search_service.db.models import ExperimentEvent, ExperimentSearch
from tests.integration.api_support import ClientFactory, services

# Another process: BEGIN IMMEDIATE takes the write lock until its stdin closes.
HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def _search_and_click(client: TestClient, query: str, user: str) -> dict[str, object]:
    body = client.get(
        "/api/v1/search", params={"q": query, "limit": 3}, headers={"X-User-Id": user}
    ).json()
    first = body["results"][0]
    response = client.post(
        "/api/v1/events",
        json={
            "search_id": body["search_id"],
            "asset_id": first["asset_id"],
            "type": "click",
            "rank": 1,
        },
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_clicks_on_searches_answered_during_a_write_lock_are_all_counted(
    make_indexed_client: ClientFactory,
) -> None:
    # A short busy timeout: the log's writer meets the lock, gives up its attempt and
    # retries, as it would after 30 s in production.
    with make_indexed_client(sqlite_busy_timeout_s=0.2) as client:
        app = services(client)
        database = Path(str(app.ctx.engine.url.database))
        queries = ["red", "blue square", "green", "a photo", "something yellow"]
        with write_lock_held(database):
            events = [_search_and_click(client, q, f"user-{i}") for i, q in enumerate(queries)]
            assert [e["recorded"] for e in events] == [True] * len(queries)
            # The user searches again (a reformulation, marked when written).
            again = _search_and_click(client, "red", "user-0")
            assert again["recorded"] is True
            with app.ctx.transaction() as session:
                assert session.scalar(select(func.count()).select_from(ExperimentSearch)) == 0
            # Held until the log's writer has met the lock and is retrying.
            deadline = time.monotonic() + 60
            while app.search_log.write_retries == 0:
                assert time.monotonic() < deadline, "the writer never met the lock"
                time.sleep(0.05)
        app.search_log.flush(timeout=60)
        with app.ctx.transaction() as session:
            searches = session.scalar(select(func.count()).select_from(ExperimentSearch))
            clicks = session.scalar(select(func.count()).select_from(ExperimentEvent))
            clicked = session.scalar(select(func.count()).where(ExperimentSearch.clicks > 0))
        assert (searches, clicks, clicked) == (6, 6, 6)
        assert app.search_log.errors == 0


def test_a_duplicate_click_on_a_queued_search_is_stored_once(
    make_indexed_client: ClientFactory,
) -> None:
    with make_indexed_client(sqlite_busy_timeout_s=0.2) as client:
        app = services(client)
        database = Path(str(app.ctx.engine.url.database))
        with write_lock_held(database):
            body = client.get("/api/v1/search", params={"q": "red", "limit": 3}).json()
            event = {
                "search_id": body["search_id"],
                "asset_id": body["results"][1]["asset_id"],
                "type": "open",
                "rank": 2,
            }
            first = client.post("/api/v1/events", json=event).json()
            second = client.post("/api/v1/events", json=event).json()
            wrong_rank = client.post("/api/v1/events", json={**event, "rank": 1})
        assert (first["recorded"], second["recorded"]) == (True, False)
        assert wrong_rank.status_code == 422
        app.search_log.flush(timeout=60)
        with app.ctx.transaction() as session:
            assert session.scalar(select(func.count()).select_from(ExperimentEvent)) == 1
