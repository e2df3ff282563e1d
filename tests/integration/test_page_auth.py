"""Signing in on the page, in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real uvicorn server whose API needs keys (``API_KEY`` and
``READ_API_KEY``) and serves a real indexed library.

The page asks for a key once, trades it for an HttpOnly, SameSite=Strict session cookie,
keeps no copy of it, loads photos from signed URLs, and shows the form again when the
API answers 401 (signed out, or the session ended)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from image_search_service.api.auth import SESSION_COOKIE
from image_search_service.core.config import Settings
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import tiny_model_settings
from tests.integration.browser_support import BROWSER_TESTS, DESKTOP, PHONE, BrowserTab
from tests.integration.live_server import LiveServer, live_server

pytest.importorskip("playwright.sync_api")

LIBRARY_SIZE = 12
ADMIN_KEY = "admin-key-for-the-page-test-0123456789"
READ_KEY = "read-key-for-the-page-test-0123456789"
READ_KEY_ONLY = "the admin page needs an admin key (API_KEY)"

pytestmark = BROWSER_TESTS


def _settings(root: Path, tiny_models: dict[str, Path], **overrides: Any) -> Settings:
    return tiny_model_settings(
        tiny_models,
        root / "data",
        batch_size=8,
        api_key=ADMIN_KEY,
        read_api_key=READ_KEY,
        **overrides,
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("page-auth")
    write_library(root / "photos", LIBRARY_SIZE, seed=23)
    # Room for the wrong keys these tests type (the throttle has its own test below).
    settings = _settings(root, tiny_models, auth_max_failures=1000)
    with live_server(settings, encoders=encoders) as live:
        report = index_paths(live.services.ctx, [root / "photos"], model_keys=["clip"])
        assert report.indexed == LIBRARY_SIZE, report.failures
        yield live


# -- helpers ---------------------------------------------------------------------------------
def _wait_for_form(page: Any) -> None:
    page.wait_for_selector("#signin-key", state="visible")
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.id === 'signin-key'"
    )


def _error_line(page: Any) -> str:
    text: str = page.inner_text("#signin-error")
    return text


def _sign_in(page: Any, key: str) -> None:
    """Type the key and press Enter (the form submits on Enter)."""
    _wait_for_form(page)
    page.fill("#signin-key", key)
    page.press("#signin-key", "Enter")


def _signed_in(page: Any) -> None:
    page.wait_for_selector("#signin", state="hidden")
    page.wait_for_selector("#account", state="visible")


def _wait_thumbnails_loaded(page: Any) -> None:
    page.wait_for_function(
        """() => {
            const imgs = Array.from(document.querySelectorAll('#grid img')).slice(0, 8);
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }"""
    )


def _tile_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#grid li.tile", "tiles => tiles.map(t => t.dataset.assetId)"
    )
    return ids


def _session_cookies(context: Any) -> list[dict[str, Any]]:
    return [c for c in context.cookies() if c["name"] == SESSION_COOKIE]


def _api_status(page: Any, path: str) -> int:
    """What the API answers this browser (its cookies, nothing else)."""
    status: int = page.evaluate("p => fetch(p).then(r => r.status)", path)
    return status


def _stored(page: Any) -> str:
    """Everything the page could have kept: web storage and the cookies a script sees."""
    stored: str = page.evaluate(
        """() => JSON.stringify({
            local: Object.entries(localStorage),
            session: Object.entries(sessionStorage),
            cookie: document.cookie,
        })"""
    )
    return stored


def _save(target: Path) -> None:
    """Keep a copy of a screenshot outside pytest's tmp folder, to look at."""
    assert target.stat().st_size > 5_000
    shutil.copy(target, Path("/tmp") / f"page-auth-{target.name}")
    out = os.environ.get("PAGE_SCREENSHOT_DIR")
    if out:
        shutil.copy(target, Path(out) / f"page-auth-{target.name}")


# -- the search page -----------------------------------------------------------------------
def test_the_read_key_signs_in_once_and_photos_load_from_signed_urls(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    page.goto(f"{server.url}/?q=red+circle")
    _wait_for_form(page)
    # Nothing of the library is shown, or even asked for, before signing in.
    assert tab.api_calls == ["/api/v1/auth/session"]
    assert page.is_hidden("#search-form")
    assert _tile_ids(page) == []
    assert page.get_attribute("#signin-key", "type") == "password"
    assert page.inner_text("label[for=signin-key]").strip() == "API key"

    _sign_in(page, "not-the-key")
    page.wait_for_function(
        "() => document.querySelector('#signin-error').textContent.includes('Wrong key')"
    )
    assert page.is_visible("#signin-key")

    _sign_in(page, READ_KEY)
    _signed_in(page)
    page.wait_for_selector("#grid li.tile img")
    _wait_thumbnails_loaded(page)
    assert page.input_value("#q") == "red circle"  # the search in the URL ran once signed in
    assert "read" in page.inner_text("#account-name")
    assert page.is_hidden("#upload-label")  # a read key cannot upload: no button for it
    expected = httpx.get(
        f"{server.url}/api/v1/search",
        params={"q": "red circle", "limit": 40},
        headers={"X-API-Key": READ_KEY},
    ).json()
    assert _tile_ids(page) == [hit["asset_id"] for hit in expected["results"]]

    # The thumbnails come from signed URLs: they load alone, without a key or a cookie,
    # and an altered signature is refused.
    src = page.get_attribute("#grid li.tile img", "src")
    assert src is not None
    url = urlparse(src)
    query = parse_qs(url.query)
    assert url.path.endswith("/thumbnail")
    assert query["size"] == ["256"]
    assert query["sig"]
    assert query["expires"]
    alone = httpx.get(server.url + src)
    assert alone.status_code == 200
    assert alone.headers["content-type"] == "image/jpeg"
    forged = src.replace("size=256", "size=512")
    assert httpx.get(server.url + forged).status_code == 403

    # The page kept no key: not in web storage, not in a cookie a script can read.
    stored = _stored(page)
    assert READ_KEY not in stored
    assert "not-the-key" not in stored
    assert SESSION_COOKIE not in page.evaluate("document.cookie")
    assert page.evaluate("localStorage.length") == 0
    # The session is a cookie the browser keeps: HttpOnly and SameSite=Strict.
    [cookie] = _session_cookies(tab.context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert READ_KEY not in cookie["value"]
    assert _api_status(page, "/api/v1/assets") == 200

    # A reload is still signed in: no form, the search shows again.
    page.reload()
    page.wait_for_selector("#grid li.tile img")
    _wait_thumbnails_loaded(page)
    assert page.locator("#signin-key").count() == 0 or page.is_hidden("#signin-key")
    assert page.is_visible("#sign-out")

    # Sign out: the server forgets the browser, the form is back, the photos are gone.
    page.click("#sign-out")
    _wait_for_form(page)
    assert "Signed out" in _error_line(page)
    assert _tile_ids(page) == []
    assert page.is_hidden("#search-form")
    assert _session_cookies(tab.context) == []
    assert _api_status(page, "/api/v1/assets") == 401
    assert _api_status(page, "/api/v1/auth/session") == 200
    session = page.evaluate("fetch('/api/v1/auth/session').then(r => r.json())")
    assert session["required"] is True
    assert session["signed_in"] is False


def test_a_401_from_the_api_shows_the_form_again_and_the_page_carries_on(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    page.goto(server.url + "/")
    _sign_in(page, READ_KEY)
    _signed_in(page)
    page.wait_for_selector("#grid li.tile")  # browsing the library
    # The session ends behind the page's back (expired, or its key revoked).
    tab.context.clear_cookies()
    page.fill("#q", "blue star")
    page.press("#q", "Enter")
    _wait_for_form(page)
    assert "session has ended" in _error_line(page)
    assert _tile_ids(page) == []
    _sign_in(page, READ_KEY)
    _signed_in(page)
    page.wait_for_url("**/?q=blue+star")
    page.wait_for_selector("#status[data-state=answered]")
    _wait_thumbnails_loaded(page)
    assert page.input_value("#q") == "blue star"


def test_the_admin_key_may_upload_from_the_page(
    tab: BrowserTab, server: LiveServer, tmp_path: Path
) -> None:
    [(photo, _)] = write_library(tmp_path / "new", 1, seed=99)
    page = tab.page
    page.goto(server.url + "/")
    _sign_in(page, ADMIN_KEY)
    _signed_in(page)
    page.wait_for_selector("#grid li.tile")
    assert "admin" in page.inner_text("#account-name")
    assert page.is_visible("#upload-label")
    before = len(_tile_ids(page))
    page.set_input_files("#upload-file", str(photo))
    page.wait_for_function(
        "n => document.querySelectorAll('#grid li.tile').length === n", arg=before + 1
    )
    assert "error" not in (page.get_attribute("#status", "class") or "")
    assert ADMIN_KEY not in _stored(page)


def test_too_many_wrong_keys_say_how_long_to_wait(
    tab: BrowserTab, tmp_path: Path, tiny_models: dict[str, Path], encoders: EncoderRegistry
) -> None:
    settings = _settings(tmp_path, tiny_models, auth_max_failures=2, auth_failure_window_s=600)
    with live_server(settings, encoders=encoders) as strict:
        page = tab.page
        page.goto(strict.url + "/")
        for _ in range(2):
            _wait_for_form(page)
            page.evaluate("document.querySelector('#signin-error').textContent = ''")
            _sign_in(page, "guess")
            page.wait_for_function(
                "() => document.querySelector('#signin-error').textContent.includes('Wrong key')"
            )
        _sign_in(page, READ_KEY)  # even the right key waits out the window
        page.wait_for_function(
            "() => /Too many tries, wait \\d+ s/.test("
            "document.querySelector('#signin-error').textContent)"
        )
        seconds = int(re.findall(r"wait (\d+) s", _error_line(page))[0])
        assert 0 < seconds <= 600
        assert page.is_disabled("#signin-submit")
        assert _session_cookies(tab.context) == []


# -- the admin page ------------------------------------------------------------------------
def test_admin_page_with_a_read_key_says_it_needs_the_admin_key(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    page.goto(server.url + "/admin")
    _sign_in(page, READ_KEY)
    _signed_in(page)
    page.wait_for_function(
        "t => document.querySelector('#status').textContent.includes(t)", arg=READ_KEY_ONLY
    )
    assert page.is_hidden("#charts-section")
    assert page.locator("#signin").count() == 1  # one sign-in form, however many calls
    # Signing out and in with the admin key opens the page.
    page.click("#sign-out")
    _sign_in(page, ADMIN_KEY)
    _signed_in(page)
    page.wait_for_function("() => document.querySelectorAll('#charts figure.chart').length === 6")
    assert re.search(r"recorded searches|No searches recorded yet", page.inner_text("#status"))
    assert READ_KEY_ONLY not in page.inner_text("body")
    assert ADMIN_KEY not in _stored(page)


def test_admin_page_signs_in_once_with_the_admin_key(tab: BrowserTab, server: LiveServer) -> None:
    page = tab.page
    page.goto(server.url + "/admin")
    _wait_for_form(page)
    assert page.is_hidden("#controls")
    _sign_in(page, ADMIN_KEY)
    _signed_in(page)
    page.wait_for_selector("#recommendation:not([hidden])")
    page.wait_for_function("() => document.querySelectorAll('#charts figure.chart').length === 6")
    # The session is shared with the search page: no second sign-in there.
    page.goto(server.url + "/")
    page.wait_for_selector("#grid li.tile")
    assert page.locator("#signin-key").count() == 0 or page.is_hidden("#signin-key")


# -- how it looks ----------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_sign_in_form_and_the_signed_in_page(
    browser: Any, server: LiveServer, tmp_path: Path, scheme: str
) -> None:
    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        tab = BrowserTab(browser, viewport=viewport, color_scheme=scheme)
        page = tab.page
        try:
            page.goto(f"{server.url}/?q=red+circle")
            _wait_for_form(page)
            page.fill("#signin-key", "not-the-key")
            page.press("#signin-key", "Enter")
            page.wait_for_function(
                "() => document.querySelector('#signin-error').textContent.includes('Wrong key')"
            )
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(tmp_path / f"signin-{name}-{scheme}.png"))
            _save(tmp_path / f"signin-{name}-{scheme}.png")

            _sign_in(page, READ_KEY)
            _signed_in(page)
            page.wait_for_selector("#grid li.tile img")
            _wait_thumbnails_loaded(page)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(tmp_path / f"signed-in-{name}-{scheme}.png"))
            _save(tmp_path / f"signed-in-{name}-{scheme}.png")
            page.click("#filters summary")  # the open filters beside the account line
            page.wait_for_selector("#people", state="visible")
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(tmp_path / f"filters-{name}-{scheme}.png"))
            _save(tmp_path / f"filters-{name}-{scheme}.png")

            page.goto(server.url + "/admin")
            page.wait_for_function(
                "t => document.querySelector('#status').textContent.includes(t)",
                arg=READ_KEY_ONLY,
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(tmp_path / f"admin-read-key-{name}-{scheme}.png"))
            _save(tmp_path / f"admin-read-key-{name}-{scheme}.png")

            page.click("#sign-out")
            _sign_in(page, ADMIN_KEY)
            _signed_in(page)
            page.wait_for_function(
                "() => document.querySelectorAll('#charts figure.chart').length === 6"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(tmp_path / f"admin-{name}-{scheme}.png"), full_page=True)
            _save(tmp_path / f"admin-{name}-{scheme}.png")
        finally:
            tab.close()
