"""The search page's anonymous user id, in a real headless Chromium (Debian's
``chromium``, driven by Playwright) against a real uvicorn server on loopback (no keys)
with both models indexed and half the users on SigLIP.

The page keeps a random id in the browser (IndexedDB: web storage stays empty, which
test_page_auth checks) and sends it as ``X-User-Id`` with every search (text, by
example, more like this), so one person's searches land in one arm of the experiment;
"New anonymous id" replaces it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from image_search_service.db.models import ExperimentSearch
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import tiny_model_settings
from tests.integration.browser_support import BROWSER_TESTS, BrowserTab
from tests.integration.live_server import LiveServer, live_server

pytest.importorskip("playwright.sync_api")

LIBRARY_SIZE = 12
WAIT_S = 30
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Where the page keeps the id: IndexedDB database, object store, key.
ID_DB, ID_STORE, ID_KEY = "image-search", "anonymous", "user-id"

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def library_server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[tuple[LiveServer, list[Path]]]:
    root = tmp_path_factory.mktemp("page-user-id")
    pictures = [path for path, _ in write_library(root / "photos", LIBRARY_SIZE, seed=37)]
    settings = tiny_model_settings(
        tiny_models, root / "data", batch_size=8, siglip_rollout_percentage=50
    )
    with live_server(settings, encoders=encoders) as server:
        report = index_paths(server.services.ctx, [root / "photos"], model_keys=["clip", "siglip"])
        assert report.indexed == LIBRARY_SIZE, report.failures
        yield server, pictures


class SearchTab(BrowserTab):
    """A tab that reads the X-User-Id header of every search request it sent (``None``
    for a search sent without one)."""

    def __init__(self, browser: Any) -> None:
        super().__init__(browser, dialogs_allowed=True)

    @property
    def searches(self) -> list[tuple[str, str | None]]:
        return [
            (path, headers.get("x-user-id"))
            for path, headers in self.requests
            if path.startswith("/api/v1/search")
        ]

    def ids_since(self, start: int) -> list[str | None]:
        return [user for _, user in self.searches[start:]]


@pytest.fixture
def tab(browser: Any) -> Iterator[SearchTab]:
    opened = SearchTab(browser)
    yield opened
    opened.close()


def _search(tab: SearchTab, query: str) -> None:
    """Type a query and wait for its answer on the page."""
    page = tab.page
    before = len(tab.searches)
    page.fill("#q", query)
    page.press("#q", "Enter")
    page.wait_for_function("q => new URL(location.href).searchParams.get('q') === q", arg=query)
    page.wait_for_selector("#status[data-state=answered]")
    assert len(tab.searches) > before


def _stored_id(page: Any) -> str | None:
    """The id the page keeps in this browser (read straight from IndexedDB)."""
    stored: str | None = page.evaluate(
        """([name, store, key]) => new Promise((resolve, reject) => {
            const open = indexedDB.open(name);
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
                const db = open.result;
                if (!db.objectStoreNames.contains(store)) { db.close(); resolve(null); return; }
                const get = db.transaction(store).objectStore(store).get(key);
                get.onsuccess = () => { db.close(); resolve(get.result ?? null); };
                get.onerror = () => { db.close(); reject(get.error); };
            };
        })""",
        [ID_DB, ID_STORE, ID_KEY],
    )
    return stored


def _logged(server: LiveServer, user: str, expected: int) -> list[ExperimentSearch]:
    """The experiment log's searches of ``user``, once ``expected`` of them are written
    (the log writes in the background)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        server.services.search_log.flush()
        with server.services.ctx.transaction() as session:
            rows = list(
                session.scalars(select(ExperimentSearch).where(ExperimentSearch.user_id == user))
            )
            session.expunge_all()
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_one_id_across_searches_and_a_reload_a_new_one_after_reset(
    tab: SearchTab, library_server: tuple[LiveServer, list[Path]]
) -> None:
    server, pictures = library_server
    page = tab.page
    page.goto(server.url + "/")
    page.wait_for_selector("#grid li.tile")
    start = len(tab.searches)
    _search(tab, "red circle")
    _search(tab, "blue square")
    page.reload()
    page.wait_for_selector("#grid li.tile")
    page.wait_for_selector("#status[data-state=answered]")
    # More like this, and search by example: the same id.
    page.click("#grid li.tile:nth-child(2) button.similar")
    page.wait_for_function("() => new URL(location.href).searchParams.has('similar')")
    page.wait_for_selector("#status[data-state=answered]")
    page.set_input_files("#example-file", str(pictures[0]))
    page.wait_for_selector("#example:not([hidden])")
    page.wait_for_selector("#status[data-state=answered]")

    paths = [path for path, _ in tab.searches[start:]]
    assert "/api/v1/search" in paths
    assert "/api/v1/search/image" in paths
    assert any(p.startswith("/api/v1/search/similar/") for p in paths)
    ids = set(tab.ids_since(start))
    assert len(ids) == 1, tab.searches[start:]
    first = ids.pop()
    assert first is not None
    assert UUID.fullmatch(first), first
    assert _stored_id(page) == first
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0

    # "New anonymous id": the next searches carry another id, and it is kept.
    page.click("#filters summary")
    page.click("#reset-user-id")
    page.wait_for_function(
        "() => document.querySelector('#user-id-note').textContent.includes('New anonymous id')"
    )
    after_reset = len(tab.searches)
    _search(tab, "green triangle")
    page.reload()
    page.wait_for_selector("#grid li.tile")
    page.wait_for_selector("#status[data-state=answered]")
    new_ids = set(tab.ids_since(after_reset))
    assert len(new_ids) == 1, tab.searches[after_reset:]
    second = new_ids.pop()
    assert second is not None
    assert UUID.fullmatch(second), second
    assert second != first
    assert _stored_id(page) == second

    # The experiment log holds the searches under that id, all in one arm.
    logged = _logged(server, first, expected=5)
    assert len(logged) >= 5, [(r.kind, r.arm) for r in logged]
    assert {r.kind for r in logged} == {"text", "similar", "image"}
    assert len({r.arm for r in logged}) == 1, [(r.kind, r.arm) for r in logged]
    assert len({r.bucket for r in logged}) == 1
    assert len(_logged(server, second, expected=2)) >= 2


def test_a_new_browser_gets_its_own_id(
    browser: Any, library_server: tuple[LiveServer, list[Path]]
) -> None:
    server, _ = library_server
    ids = []
    for _ in range(2):
        tab = SearchTab(browser)
        try:
            tab.page.goto(f"{server.url}/?q=red")
            tab.page.wait_for_selector("#status[data-state=answered]")
            seen = set(tab.ids_since(0))
            assert len(seen) == 1, tab.searches
            assert None not in seen, tab.searches
            ids.append(seen.pop())
        finally:
            tab.close()
    assert ids[0] != ids[1]


def test_the_reformulation_of_one_page_user_is_detected(
    tab: SearchTab, library_server: tuple[LiveServer, list[Path]]
) -> None:
    """Two text searches without a click in between, from one page: the first counts as
    reformulated in the experiment log (which needs the user id)."""
    server, _ = library_server
    page = tab.page
    page.goto(server.url + "/")
    page.wait_for_selector("#grid li.tile")
    _search(tab, "yellow star")
    _search(tab, "yellow stars")
    user = tab.ids_since(0)[-1]
    assert user is not None
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = _logged(server, user, expected=2)
        if any(r.reformulated for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [r.reformulated for r in sorted(rows, key=lambda r: r.created_at)] == [True, False]
