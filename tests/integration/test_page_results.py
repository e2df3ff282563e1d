"""The search page as a product (issue 20), in a real headless Chromium against a real
uvicorn server on loopback serving a demo library indexed with the shipped demo models
(they know colours and shapes, and their relevance floor is calibrated): results are
photos, a query with no close match says so, "Load more" only when there is more, "More
like this" keeps its reference, errors in plain words, a phone layout with swipe, and no
serious or critical axe-core violation on the home, results, viewer and /admin pages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from image_search_service.demo.run import DEMO_SEED, EXAMPLE_QUERIES
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.factories import demo_models_settings
from tests.integration.browser_support import (
    BROWSER_TESTS,
    PHONE,
    BrowserTab,
    axe_violations,
)
from tests.integration.live_server import LiveServer, live_server

pytest.importorskip("playwright.sync_api")

LIBRARY_SIZE = 48  # more than one page of 40
NONSENSE = "zebra on a beach"
NEAREST_FEW = 6

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, encoders: EncoderRegistry
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("page-results")
    write_library(root / "photos", LIBRARY_SIZE, seed=DEMO_SEED)
    with live_server(demo_models_settings(root / "data", batch_size=16), encoders=encoders) as live:
        report = index_paths(live.services.ctx, [root / "photos"], model_keys=["clip"])
        assert report.indexed == LIBRARY_SIZE, report.failures
        yield live


@pytest.fixture
def phone(browser: Any) -> Iterator[BrowserTab]:
    """A phone: 390 px wide, touch, dark."""
    opened = BrowserTab(browser, viewport=PHONE, has_touch=True, color_scheme="dark")
    yield opened
    opened.close()


def _tile_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#grid li.tile", "tiles => tiles.map(t => t.dataset.assetId)"
    )
    return ids


def _answered(page: Any) -> None:
    """The search (or browse) has been answered and drawn."""
    page.wait_for_selector("#status[data-state=answered]")


def _api_search(server: LiveServer, q: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(
        f"{server.url}/api/v1/search", params={"q": q, "limit": 40}
    ).json()
    return answer


@pytest.fixture(scope="module")
def good_query(demo_server: LiveServer) -> str:
    """One of the demo's example searches that has close matches in this library (which
    one depends on the demo model's calibrated floor)."""
    for query in EXAMPLE_QUERIES:
        answer = _api_search(demo_server, query)
        if answer["close_matches"] and answer["results"]:
            return query
    raise AssertionError("no example search has a close match in the demo library")


def _opacity(page: Any, selector: str) -> str:
    value: str = page.eval_on_selector(selector, "el => getComputedStyle(el).opacity")
    return value


def _wait_opacity(page: Any, selector: str, value: str) -> None:
    page.wait_for_function(
        "([sel, value]) => getComputedStyle(document.querySelector(sel)).opacity === value",
        arg=[selector, value],
    )


def _touch(cdp: Any, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": kind, "touchPoints": [{"x": x, "y": y} for x, y in points]},
    )


def _swipe(cdp: Any, box: dict[str, float], direction: int) -> None:
    """A finger across the middle of ``box``: direction -1 right to left, +1 left to right."""
    y = box["y"] + box["height"] / 2
    fractions = (0.8, 0.2) if direction < 0 else (0.2, 0.8)
    start, end = (box["x"] + box["width"] * f for f in fractions)
    _touch(cdp, "touchStart", [(start, y)])
    for step in range(1, 6):
        _touch(cdp, "touchMove", [(start + (end - start) * step / 5, y)])
    _touch(cdp, "touchEnd", [])


class TestResults:
    def test_results_are_photos_and_the_viewer_keeps_the_numbers_in_details(
        self, tab: BrowserTab, demo_server: LiveServer, good_query: str
    ) -> None:
        page = tab.page
        page.goto(f"{demo_server.url}/?q={quote_plus(good_query)}")
        _answered(page)
        expected = _api_search(demo_server, good_query)
        assert expected["close_matches"] is True
        assert _tile_ids(page) == [hit["asset_id"] for hit in expected["results"]]
        count = len(expected["results"])
        assert page.inner_text("#status") == f"{count} photo{'' if count == 1 else 's'}"
        # No score, model or timing on the page itself.
        assert page.query_selector_all("#grid .score") == []
        for hit in expected["results"]:
            assert f"{hit['score']:.2f}" not in page.inner_text("body")
        # The tile's action hides until the tile has the keyboard focus (or a hover).
        similar = "#grid li.tile:nth-child(1) button.similar"
        assert _opacity(page, similar) == "0"
        page.focus("#grid li.tile:nth-child(1) button.open")
        _wait_opacity(page, similar, "1")
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer[open]")
        assert page.is_hidden("#viewer-debug")  # the details panel starts collapsed
        details = page.text_content("#viewer-debug") or ""
        first = expected["results"][0]
        assert "clip" in details
        assert f"{first['score']:.4f}" in details
        assert f"{expected['relevance_floor']:.4f}" in details
        assert "image_assets" in details
        assert f"Found in{' + '.join(first['spaces'])}" in details
        page.click("#viewer-details summary")
        assert page.is_visible("#viewer-debug")
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")

    def test_a_query_with_no_close_match_offers_the_nearest_few_as_such(
        self, tab: BrowserTab, demo_server: LiveServer, good_query: str
    ) -> None:
        page = tab.page
        page.goto(f"{demo_server.url}/?q={quote_plus(NONSENSE)}")
        _answered(page)
        expected = _api_search(demo_server, NONSENSE)
        assert expected["close_matches"] is False
        assert page.inner_text("#status").startswith(f"No close matches for \u201c{NONSENSE}\u201d")
        shown = _tile_ids(page)
        assert 1 <= len(shown) <= NEAREST_FEW
        assert shown == [hit["asset_id"] for hit in expected["results"]]
        assert page.is_hidden("#more")
        page.mouse.wheel(0, 5_000)  # nothing more to load below "the nearest few"
        page.fill("#q", good_query)
        page.press("#q", "Enter")
        # Answered and drawn, not merely past "No close" (it reads "Searching..." between).
        page.wait_for_function(
            "() => { const s = document.querySelector('#status');"
            " return s.dataset.state === 'answered' && !s.textContent.includes('No close'); }"
        )
        assert len(_tile_ids(page)) == len(_api_search(demo_server, good_query)["results"])

    def test_load_more_shows_only_while_there_is_more(
        self, tab: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = tab.page
        page.set_viewport_size({"width": 1280, "height": 400})  # the button below the fold
        page.goto(demo_server.url + "/")
        _answered(page)
        assert page.inner_text("#status") == f"{LIBRARY_SIZE} photos"
        assert len(_tile_ids(page)) == 40
        page.wait_for_function(
            f"() => document.querySelectorAll('#grid li.tile').length === {LIBRARY_SIZE}"
            " || !document.querySelector('#more').hidden"
        )
        if len(_tile_ids(page)) < LIBRARY_SIZE:
            assert page.is_visible("#more")
            # Scrolling it into view may load the rest first (and hide it): no waiting
            # for it to be clickable.
            page.dispatch_event("#more", "click")
        page.wait_for_function(
            f"() => document.querySelectorAll('#grid li.tile').length === {LIBRARY_SIZE}"
        )
        assert page.is_hidden("#more")  # after the last result
        page.goto(f"{demo_server.url}/?q=red&format=WEBP")  # a library of JPEGs: none
        page.wait_for_selector("#status[data-state=empty]")
        assert _tile_ids(page) == []
        assert page.is_hidden("#more")
        page.goto(f"{demo_server.url}/?similar={uuid.uuid4()}")  # an error
        page.wait_for_selector("#status.error")
        assert page.is_hidden("#more")

    def test_more_like_this_keeps_the_photo_it_started_from(
        self, tab: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = tab.page
        page.goto(f"{demo_server.url}/?q={quote_plus(NONSENSE)}")
        _answered(page)
        source = _tile_ids(page)[1]
        name = httpx.get(f"{demo_server.url}/api/v1/assets/{source}").json()["path"]
        name = Path(name).name
        page.hover("#grid li.tile:nth-child(2)")
        page.click("#grid li.tile:nth-child(2) button.similar")
        page.wait_for_url(f"**/?similar={source}")
        _answered(page)
        assert page.is_visible("#example")
        assert page.inner_text("#example-label") == f"Photos like {name}"
        assert source in (page.get_attribute("#example-preview", "src") or "")
        assert page.input_value("#q") == NONSENSE  # the box keeps its words
        assert source not in _tile_ids(page)
        # Opened from a link, the chip names the photo too.
        page.reload()
        page.wait_for_function(
            "name => document.querySelector('#example-label').textContent.includes(name)",
            arg=name,
        )
        # Its "x" returns to what the box says (here, after the reload: the library).
        page.fill("#q", NONSENSE)
        page.click("#example-clear")
        page.wait_for_url(f"**/?q={quote_plus(NONSENSE)}")
        _answered(page)
        assert page.is_hidden("#example")

    def test_errors_are_said_in_plain_words(self, tab: BrowserTab, demo_server: LiveServer) -> None:
        page = tab.page
        cases = {
            "/?q=" + "a" * 1001: "That search is too long (1000 characters at most).",
            "/?similar=not-a-photo": "That photo was not found in the library.",
            f"/?similar={uuid.uuid4()}": "That photo was not found in the library.",
            "/?q=red&people=" + ",".join(f"p{n}" for n in range(30)): (
                "The people filter lists too many names (20 at most)."
            ),
        }
        for url, text in cases.items():
            page.goto(demo_server.url + url)
            page.wait_for_selector("#status.error")
            status = page.inner_text("#status")
            assert text in status, (url, status)
            assert ":" not in status.split("\n")[0].replace("(", "")  # no "field: message"
            assert "String should" not in status
            assert "UUID" not in status

    def test_a_rejected_upload_says_which_files_can_be_added(
        self, tab: BrowserTab, demo_server: LiveServer, tmp_path: Path
    ) -> None:
        page = tab.page
        page.goto(demo_server.url + "/")
        _answered(page)
        not_a_photo = tmp_path / "notes.jpg"
        not_a_photo.write_text("shopping: milk, eggs")
        page.set_input_files("#upload-file", str(not_a_photo))
        page.wait_for_selector("#status.error")
        status = page.inner_text("#status")
        assert status.startswith("notes.jpg was not added: That file is not a photo")
        assert "JPEG, PNG, WebP, HEIC" in status
        assert "Pillow" not in status

    def test_tiles_hold_their_place_until_the_thumbnail_comes_and_when_it_cannot(
        self, tab: BrowserTab, encoders: EncoderRegistry, tmp_path: Path
    ) -> None:
        """A neutral square before the thumbnail arrives, and a quiet picture icon (not
        the browser's broken image) when it cannot: here, a file gone from its folder."""
        pictures = [path for path, _ in write_library(tmp_path / "photos", 2, seed=DEMO_SEED)]
        settings = demo_models_settings(tmp_path / "data")
        with live_server(settings, encoders=encoders) as server:
            index_paths(server.services.ctx, [tmp_path / "photos"], model_keys=["clip"])
            gone = pictures[0]
            gone.unlink()
            page = tab.page
            page.goto(server.url + "/")
            _answered(page)
            placeholder = page.eval_on_selector(
                "#grid li.tile", "t => getComputedStyle(t).backgroundColor"
            )
            assert placeholder not in ("rgba(0, 0, 0, 0)", "transparent")
            page.wait_for_selector("#grid li.tile.broken")
            page.wait_for_selector("#grid li.tile.loaded")
            broken = page.eval_on_selector(
                "#grid li.tile.broken",
                """t => ({
                    img: getComputedStyle(t.querySelector('img')).display,
                    icon: getComputedStyle(t.querySelector('button.open')).backgroundImage,
                })""",
            )
            assert broken["img"] == "none"  # no broken-image icon
            assert broken["icon"].startswith('url("data:image/svg+xml')
            assert page.eval_on_selector("#grid li.tile.loaded img", "i => i.naturalWidth") > 0


class TestPhone:
    def test_three_or_more_columns_a_compact_header_and_a_placeholder_that_fits(
        self, phone: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = phone.page
        page.goto(demo_server.url + "/")
        _answered(page)
        columns = page.evaluate(
            "() => new Set([...document.querySelectorAll('#grid li.tile')].slice(0, 8)"
            ".map(t => t.getBoundingClientRect().left)).size"
        )
        assert columns >= 3
        header = page.evaluate("document.querySelector('header').getBoundingClientRect().height")
        assert header < 100
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        # The placeholder's text is narrower than the box that shows it.
        fits = page.evaluate(
            """() => {
                const q = document.querySelector('#q');
                const style = getComputedStyle(q);
                const ctx = document.createElement('canvas').getContext('2d');
                ctx.font = `${style.fontSize} ${style.fontFamily}`;
                const room = q.clientWidth - parseFloat(style.paddingLeft)
                    - parseFloat(style.paddingRight);
                return ctx.measureText(q.placeholder).width <= room;
            }"""
        )
        assert fits

    def test_swipe_steps_through_the_photos_in_the_viewer(
        self, phone: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = phone.page
        page.goto(demo_server.url + "/")
        _answered(page)
        ids = _tile_ids(page)
        page.tap("#grid li.tile:nth-child(1) button.open")
        page.wait_for_selector("#viewer[open]")
        cdp = page.context.new_cdp_session(page)
        box = page.locator("#viewer .viewer-stage").bounding_box()
        shows = "id => document.querySelector('#viewer-image').src.includes(id)"
        _swipe(cdp, box, -1)  # right to left: the next photo
        page.wait_for_function(shows, arg=ids[1])
        _swipe(cdp, box, -1)
        page.wait_for_function(shows, arg=ids[2])
        _swipe(cdp, box, +1)  # left to right: back
        page.wait_for_function(shows, arg=ids[1])

    def test_a_long_press_shows_the_tile_actions(
        self, phone: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = phone.page
        page.goto(demo_server.url + "/")
        _answered(page)
        similar = "#grid li.tile:nth-child(2) button.similar"
        assert _opacity(page, similar) == "0"
        page.tap("#status")  # a tap on a tile would open the viewer; a tap elsewhere nothing
        cdp = page.context.new_cdp_session(page)
        box = page.locator("#grid li.tile:nth-child(2)").bounding_box()
        centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        _touch(cdp, "touchStart", [centre])
        page.wait_for_selector("#grid li.tile:nth-child(2).actions")
        _touch(cdp, "touchEnd", [])
        _wait_opacity(page, similar, "1")
        assert not page.is_visible("#viewer")  # the press opened nothing
        page.tap("#status")
        page.wait_for_selector("#grid li.tile.actions", state="detached")


class TestServerState:
    def test_the_demo_says_so_and_the_note_can_be_dismissed(
        self, tab: BrowserTab, demo_server: LiveServer
    ) -> None:
        page = tab.page
        about = httpx.get(f"{demo_server.url}/api/v1/about").json()
        assert about["demo"] is True
        page.goto(demo_server.url + "/")
        page.wait_for_selector("#demo-note:not([hidden])")
        assert page.inner_text("#demo-note-text") == about["demo_note"]
        page.click("#demo-note-close")
        assert page.is_hidden("#demo-note")

    def test_a_search_waiting_for_its_model_says_so(
        self, tab: BrowserTab, demo_server: LiveServer
    ) -> None:
        """What the page says follows /about's model states (the warm-up itself and
        its states are tested with the server, tests/integration/test_demo_serve.py)."""
        page = tab.page
        page.goto(demo_server.url + "/")
        _answered(page)
        said = page.evaluate(
            """() => {
                about.models = [{ key: 'clip', name: 'demo-clip', state: 'loading', error: null }];
                const loading = searchingText();
                about.models = [{ key: 'clip', name: 'demo-clip', state: 'ready', error: null }];
                return [loading, searchingText()];
            }"""
        )
        assert said == ["Loading the search model...", "Searching..."]


class TestAccessibility:
    @pytest.mark.parametrize("scheme", ["light", "dark"])
    def test_no_serious_violation_on_home_results_viewer_and_admin(
        self, browser: Any, demo_server: LiveServer, good_query: str, scheme: str
    ) -> None:
        opened = BrowserTab(browser, color_scheme=scheme)
        page = opened.page
        try:
            found: dict[str, list[str]] = {}
            page.goto(demo_server.url + "/")
            _answered(page)
            found["home"] = axe_violations(page)
            page.goto(f"{demo_server.url}/?q={quote_plus(good_query)}")
            _answered(page)
            page.focus("#grid li.tile:nth-child(1) button.open")  # its action shows
            found["results"] = axe_violations(page)
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth")
            page.click("#viewer-details summary")
            found["viewer"] = axe_violations(page)
            page.goto(demo_server.url + "/admin")
            page.wait_for_function(
                "() => !document.querySelector('#status').textContent.startsWith('Loading')"
            )
            found["admin"] = axe_violations(page)
            assert found == {"home": [], "results": [], "viewer": [], "admin": []}
        finally:
            opened.close()
