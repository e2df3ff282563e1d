"""The search page in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real uvicorn server on loopback serving a real indexed library."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from sqlalchemy import select

from image_search_service.core.config import Settings
from image_search_service.db import repository as repo
from image_search_service.db.models import ExperimentEvent
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.watcher import LibraryWatcher
from tests.integration.api_support import tiny_model_settings
from tests.integration.browser_support import BROWSER_TESTS, DESKTOP, PHONE
from tests.integration.live_server import LiveServer, live_server

pytest.importorskip("playwright.sync_api")

LIBRARY_SIZE = 48  # more than one page of 40 results

pytestmark = BROWSER_TESTS


def _settings(root: Path, tiny_models: dict[str, Path], **overrides: Any) -> Settings:
    return tiny_model_settings(tiny_models, root / "data", batch_size=8, **overrides)


@pytest.fixture(scope="module")
def library_server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[tuple[LiveServer, list[Path]]]:
    root = tmp_path_factory.mktemp("page")
    pictures = [path for path, _ in write_library(root / "photos", LIBRARY_SIZE, seed=11)]
    with live_server(_settings(root, tiny_models), encoders=encoders) as server:
        report = index_paths(server.services.ctx, [root / "photos"], model_keys=["clip"])
        assert report.indexed == LIBRARY_SIZE, report.failures
        yield server, pictures


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], errors  # no uncaught JavaScript error in any test


def _tile_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#grid li.tile", "tiles => tiles.map(t => t.dataset.assetId)"
    )
    return ids


def _wait_thumbnails_loaded(page: Any) -> None:
    """Every thumbnail in the first screenful decoded to a real image."""
    page.wait_for_function(
        """() => {
            const imgs = Array.from(document.querySelectorAll('#grid img')).slice(0, 8);
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }"""
    )


def _asset_id(server: LiveServer, path: Path) -> str:
    with server.services.ctx.transaction() as session:
        asset = repo.asset_by_path(session, str(path))
        assert asset is not None
        return str(asset.id)


class TestPage:
    def test_is_served_at_root_without_any_external_asset(
        self, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        response = httpx.get(server.url + "/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "http://" not in response.text
        assert "https://" not in response.text
        for asset in ("/static/app.js", "/static/app.css"):
            assert asset in response.text
            assert httpx.get(server.url + asset).status_code == 200

    def test_query_in_url_shows_thumbnails_that_load(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(f"{server.url}/?q=red+circle")
        page.wait_for_selector("#grid li.tile img")
        _wait_thumbnails_loaded(page)
        assert page.input_value("#q") == "red circle"
        expected = httpx.get(
            f"{server.url}/api/v1/search", params={"q": "red circle", "limit": 40}
        ).json()
        assert _tile_ids(page) == [hit["asset_id"] for hit in expected["results"]]
        assert page.inner_text("#status") == "40+ photos"  # no model, score or timing
        src = page.get_attribute("#grid li.tile img", "src")
        assert src is not None
        assert src.endswith("/thumbnail?size=256")
        assert page.get_attribute("#grid li.tile img", "loading") == "lazy"

    def test_typing_a_query_puts_it_in_the_url(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(server.url + "/")
        page.wait_for_selector("#grid li.tile")  # the library is browsable before a search
        page.fill("#q", "blue star")
        page.press("#q", "Enter")
        page.wait_for_url("**/?q=blue+star")
        page.wait_for_selector("#status[data-state=answered]")
        assert len(_tile_ids(page)) == 40

    def test_scrolling_loads_the_next_page(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(f"{server.url}/?q=green")
        page.wait_for_selector("#grid li.tile")
        page.wait_for_function("() => document.querySelectorAll('#grid li.tile').length === 40")
        page.mouse.wheel(0, 20_000)
        page.wait_for_function(
            f"() => document.querySelectorAll('#grid li.tile').length === {LIBRARY_SIZE}"
        )
        assert len(set(_tile_ids(page))) == LIBRARY_SIZE  # no result shown twice

    def test_search_by_example_finds_the_same_photo_first(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, pictures = library_server
        example = pictures[5]
        page.goto(server.url + "/")
        page.wait_for_selector("#grid li.tile")
        page.set_input_files("#example-file", str(example))
        page.wait_for_function("() => !document.querySelector('#example').hidden")
        page.wait_for_selector("#status[data-state=answered]")
        _wait_thumbnails_loaded(page)
        assert _tile_ids(page)[0] == _asset_id(server, example)
        assert example.name in page.inner_text("#example-label")

    def test_dropping_a_photo_on_the_page_searches_by_it(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, pictures = library_server
        target = _asset_id(server, pictures[7])
        page.goto(server.url + "/")
        page.wait_for_selector("#grid li.tile")
        page.evaluate(
            """async (url) => {
                const blob = await (await fetch(url)).blob();
                const data = new DataTransfer();
                data.items.add(new File([blob], "dropped.jpg", { type: "image/jpeg" }));
                document.dispatchEvent(new DragEvent("dragenter", { dataTransfer: data }));
                document.dispatchEvent(new DragEvent("drop", { dataTransfer: data }));
            }""",
            f"/api/v1/assets/{target}/file",
        )
        page.wait_for_selector("#status[data-state=answered]")
        assert _tile_ids(page)[0] == target
        assert "dropped.jpg" in page.inner_text("#example-label")
        assert page.is_hidden("#dropzone")

    def test_date_filters_are_sent_with_the_last_day_included(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        with page.expect_request(lambda request: "/api/v1/search?" in request.url) as sent:
            page.goto(f"{server.url}/?q=red&after=2020-01-01&before=2020-12-31")
        query = parse_qs(urlparse(sent.value.url).query)
        assert query["taken_after"] == ["2020-01-01"]
        assert query["taken_before"] == ["2021-01-01"]  # "before" a day includes that day
        assert page.input_value("#taken-before") == "2020-12-31"
        # The generated pictures carry no capture date: nothing matches a date range.
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('No photos match')"
        )

    def test_more_like_this_searches_by_the_result(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(f"{server.url}/?q=yellow+square")
        page.wait_for_selector("#grid li.tile")
        source = _tile_ids(page)[2]
        page.click(f'#grid li.tile[data-asset-id="{source}"] button.similar')
        page.wait_for_url(f"**/?similar={source}")
        page.wait_for_selector("#status[data-state=answered]")
        expected = httpx.get(
            f"{server.url}/api/v1/search/similar/{source}", params={"limit": 40}
        ).json()
        shown = _tile_ids(page)
        assert shown == [hit["asset_id"] for hit in expected["results"]]
        assert source not in shown
        assert page.input_value("#q") == "yellow square"  # kept: the chip says what is shown

    def test_viewer_shows_the_photo_and_its_details_and_works_by_keyboard(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(f"{server.url}/?q=circle")
        page.wait_for_selector("#grid li.tile")
        page.focus("#grid li.tile button.open")
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer[open]")
        page.wait_for_function(
            "() => document.querySelector('#viewer-image').complete"
            " && document.querySelector('#viewer-image').naturalWidth > 0"
        )
        facts = page.inner_text("#viewer-facts")
        first = httpx.get(f"{server.url}/api/v1/assets/{_tile_ids(page)[0]}").json()
        assert first["path"] in facts
        assert "Taken" in facts
        assert "clip" not in facts  # the model is for operators: in the collapsed details
        details = page.text_content("#viewer-debug") or ""
        assert "clip" in details
        assert "image_assets" in details
        page.keyboard.press("ArrowRight")
        second = _tile_ids(page)[1]
        page.wait_for_function(
            f"() => document.querySelector('#viewer-image').src.includes('{second}')"
        )
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")

    def test_filters_travel_in_the_url_and_an_empty_result_says_so(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(f"{server.url}/?q=red&format=WEBP")  # the library holds JPEGs only
        page.wait_for_function("() => document.querySelector('#status').textContent.length > 0")
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('No photos match')"
        )
        assert _tile_ids(page) == []
        assert page.input_value("#format") == "WEBP"
        page.click("#clear-filters")
        page.wait_for_selector("#grid li.tile")
        assert parse_qs(urlparse(page.url).query) == {"q": ["red"]}

    def test_people_and_tags_filters_travel_in_the_url(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url) if "/api/v1/search" in r.url else None)
        page.goto(f"{server.url}/?q=circle&people=Pat,%20Jack&tags=holiday")
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('No photos match')"
        )
        assert page.input_value("#people") == "Pat, Jack"
        assert page.input_value("#tags") == "holiday"
        sent = parse_qs(urlparse(requests[-1]).query)
        assert (sent["people"], sent["tags"]) == (["Pat,Jack"], ["holiday"])
        page.click("#clear-filters")
        page.wait_for_selector("#grid li.tile")
        assert parse_qs(urlparse(page.url).query) == {"q": ["circle"]}

    def test_admin_page_shows_the_report_and_a_chart_per_metric(
        self, page: Any, library_server: tuple[LiveServer, list[Path]], tmp_path: Path
    ) -> None:
        server, _ = library_server
        for q in ("red", "blue circle", "star"):
            answer = httpx.get(f"{server.url}/api/v1/search", params={"q": q}).json()
            event = {
                "search_id": answer["search_id"],
                "asset_id": answer["results"][0]["asset_id"],
                "type": "click",
                "rank": 1,
            }
            assert httpx.post(f"{server.url}/api/v1/events", json=event).status_code == 200
        page.goto(f"{server.url}/admin")
        page.wait_for_selector("#charts figure.chart .series-clip")
        metrics = page.eval_on_selector_all(
            "#charts figure.chart", "figs => figs.map(f => f.dataset.metric)"
        )
        assert metrics == [
            "searches",
            "ctr",
            "ctr_at_1",
            "mrr",
            "zero_result_rate",
            "reformulation_rate",
        ]
        assert "clip" in page.inner_text("#arms")
        assert page.inner_text("#recommendation-text").strip()
        assert "recorded searches" in page.inner_text("#status")
        target = tmp_path / "admin.png"
        page.screenshot(path=str(target), full_page=True)
        out = os.environ.get("PAGE_SCREENSHOT_DIR")
        if out:
            shutil.copy(target, Path(out) / target.name)

    def test_report_event_hook_only_fires_with_a_search_id(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        page.goto(server.url + "/")
        assert page.evaluate("typeof window.reportEvent") == "function"
        assert page.evaluate("reportEvent(undefined, 'x', 'click', 1)") is False
        assert page.evaluate("reportEvent(null, 'x', 'click', 1)") is False

    def test_result_clicks_are_reported_to_the_experiment_log(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        """Opening a result and "more like this" reach POST /api/v1/events (sendBeacon),
        naming the search that showed the result and its rank in that response."""
        server, _ = library_server

        def events() -> Counter[tuple[str, str, int]]:
            with server.services.ctx.transaction() as session:
                rows = session.execute(
                    select(ExperimentEvent.asset_id, ExperimentEvent.type, ExperimentEvent.rank)
                ).all()
            return Counter((str(a), t, r) for a, t, r in rows)

        before = events()  # other tests of this module click too
        page.goto(f"{server.url}/?q=circle")
        page.wait_for_selector("#grid li.tile")
        ids = _tile_ids(page)
        page.click("#grid li.tile:nth-child(2) button.open")
        page.wait_for_selector("#viewer[open]")
        page.keyboard.press("Escape")
        page.click("#grid li.tile:nth-child(3) button.similar")
        page.wait_for_function("() => new URL(location.href).searchParams.has('similar')")
        expected = Counter([(ids[1], "click", 2), (ids[2], "more_like_this", 3)])
        deadline = time.monotonic() + 20
        while events() - before != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert events() - before == expected

    def test_indexing_problems_are_shown(
        self, page: Any, library_server: tuple[LiveServer, list[Path]]
    ) -> None:
        server, _ = library_server
        services = server.services
        # A watched folder on a disk that is not mounted: the watcher reports it.
        services.watcher = LibraryWatcher(lambda path, reason: None, [Path("/media/usb")])
        services.watcher.start()
        try:
            page.goto(server.url + "/")
            page.wait_for_selector("#index-status:not([hidden])")
            assert "/media/usb is unavailable" in page.inner_text("#index-status")
        finally:
            services.watcher.close()
            services.watcher = None

    def test_screenshots_at_phone_and_desktop_width(
        self, browser: Any, library_server: tuple[LiveServer, list[Path]], tmp_path: Path
    ) -> None:
        server, _ = library_server
        for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            context = browser.new_context(viewport=viewport)
            tab = context.new_page()
            tab.goto(f"{server.url}/?q=red+circle")
            tab.wait_for_selector("#grid li.tile img")
            _wait_thumbnails_loaded(tab)
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert tab.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            target = tmp_path / f"page-{name}.png"
            tab.screenshot(path=str(target))
            assert target.stat().st_size > 10_000
            out = os.environ.get("PAGE_SCREENSHOT_DIR")
            if out:
                shutil.copy(target, Path(out) / target.name)
            context.close()


def test_an_empty_library_says_nothing_is_indexed_yet(
    tmp_path: Path, tiny_models: dict[str, Path], encoders: EncoderRegistry, page: Any
) -> None:
    with live_server(_settings(tmp_path, tiny_models), encoders=encoders) as server:
        for url in ("/", "/?q=beach+sunset"):  # browsing, and a search before any index
            page.goto(server.url + url)
            page.wait_for_function(
                "() => document.querySelector('#status').textContent.includes('Nothing indexed')"
            )
            assert _tile_ids(page) == []
            assert "error" not in (page.get_attribute("#status", "class") or "")
