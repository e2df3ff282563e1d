"""The rollout page (/admin) in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real uvicorn server on loopback without keys, with both models
indexed and an experiment under way: the verdict first, the evidence, the live flags and
their source, changing them through the page's control (with its confirmation), the
history, coverage per model, MRR as a number, and how it looks on a phone and a desktop,
light and dark."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from image_search_service.db.models import ExperimentSearch
from image_search_service.demo.synthetic import write_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import tiny_model_settings
from tests.integration.browser_support import BROWSER_TESTS, DESKTOP, PHONE, BrowserTab
from tests.integration.live_server import LiveServer, live_server

pytest.importorskip("playwright.sync_api")

LIBRARY_SIZE = 12
USERS = 40
WAIT_S = 30
API = "/api/v1/admin"

pytestmark = BROWSER_TESTS


@contextmanager
def _experiment_server(
    root: Path, tiny_models: dict[str, Path], encoders: EncoderRegistry
) -> Iterator[LiveServer]:
    """Both models indexed (the candidate may serve), 30 % of users on SigLIP and 20 %
    interleaved, and searches with clicks from many users: every arm has data."""
    write_library(root / "photos", LIBRARY_SIZE, seed=31)
    settings = tiny_model_settings(
        tiny_models,
        root / "data",
        batch_size=8,
        siglip_rollout_percentage=30,
        interleave_percentage=20,
    )
    with live_server(settings, encoders=encoders) as live:
        report = index_paths(live.services.ctx, [root / "photos"], model_keys=["clip", "siglip"])
        assert report.indexed == LIBRARY_SIZE, report.failures
        with httpx.Client(base_url=live.url, timeout=60) as client:
            for n in range(USERS):
                headers = {"X-User-Id": f"admin-page-user-{n}"}
                for q in ("red circle", "blue square"):
                    answer = client.get("/api/v1/search", params={"q": q}, headers=headers)
                    assert answer.status_code == 200, answer.text
                    body = answer.json()
                    if n % 3 and body["results"]:
                        rank = 1 + n % 2
                        event = {
                            "search_id": body["search_id"],
                            "asset_id": body["results"][rank - 1]["asset_id"],
                            "type": "click",
                            "rank": rank,
                        }
                        sent = client.post("/api/v1/events", json=event)
                        assert sent.status_code == 200, sent.text
        live.services.search_log.flush()
        yield live


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[LiveServer]:
    with _experiment_server(tmp_path_factory.mktemp("admin-page"), tiny_models, encoders) as live:
        yield live


@pytest.fixture
def multi_day_server(
    tmp_path: Path, tiny_models: dict[str, Path], encoders: EncoderRegistry
) -> Iterator[LiveServer]:
    """The same experiment spread over three UTC days (searches moved back in time)."""
    with _experiment_server(tmp_path, tiny_models, encoders) as live:
        now = datetime.now(UTC)
        with live.services.ctx.transaction() as session:
            for days_back, users in ((2, range(0, 14)), (1, range(14, 27))):
                session.execute(
                    update(ExperimentSearch)
                    .where(ExperimentSearch.user_id.in_([f"admin-page-user-{n}" for n in users]))
                    .values(created_at=now - timedelta(days=days_back))
                )
        yield live


def _api(server: LiveServer, path: str) -> Any:
    response = httpx.get(server.url + API + path, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _open(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/admin")
    page.wait_for_selector("#recommendation:not([hidden])")
    page.wait_for_function("() => document.querySelectorAll('#charts figure.chart').length === 6")


def _wait_until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _history_rows(page: Any) -> int:
    rows: int = page.evaluate("() => document.querySelectorAll('#history tbody tr').length")
    return rows


def _no_sideways_scroll(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_the_verdict_comes_first_coloured_by_its_action(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    _open(page, server)
    report = _api(server, "/experiment")
    # The first thing shown in the page's main part is the verdict line.
    first = page.evaluate(
        """() => Array.from(document.querySelector('main').children)
                .find(e => e.offsetParent !== null && e.textContent.trim()).id"""
    )
    assert first == "recommendation"
    assert page.inner_text("#recommendation-text") == report["recommendation"]["text"]
    action = report["recommendation"]["action"]
    assert page.get_attribute("#recommendation", "data-action") == action
    expected = {"raise": "raise", "hold": "hold", "roll back": "rollback"}[action]
    assert expected in (page.get_attribute("#recommendation", "class") or "").split()
    # Colours differ by action: the class sets the border colour.
    colours = page.evaluate(
        """() => ['raise', 'hold', 'rollback'].map(c => {
            const box = document.querySelector('#recommendation');
            const before = box.className;
            box.className = 'verdict ' + c;
            const colour = getComputedStyle(box).borderLeftColor;
            box.className = before;
            return colour;
        })"""
    )
    assert len(set(colours)) == 3, colours
    # The apply button shows exactly when the recommendation has a body to apply.
    assert page.is_visible("#apply-recommendation") == bool(report["recommendation"]["apply"])


def test_the_evidence_is_shown(tab: BrowserTab, server: LiveServer) -> None:
    page = tab.page
    _open(page, server)
    report = _api(server, "/experiment")
    assert report["comparisons"], report  # the fixture gave both arms searches
    comparisons = page.inner_text("#comparisons")
    for comparison in report["comparisons"]:
        assert comparison["effect"] in comparisons
        assert comparison["unit"] in comparisons
    interleaving = page.inner_text("#interleaving")
    tally = report["interleaving"]
    assert f"{tally['wins']} wins" in interleaving
    assert f"{tally['losses']} losses" in interleaving
    assert "win share" in interleaving or "no decided search yet" in interleaving
    guardrails = page.inner_text("#guardrails")
    for guardrail in report["guardrails"]:
        assert guardrail["text"] in guardrails
    assert "Cold starts" in page.inner_text("#cold-starts")
    assert "per arm" in page.inner_text("#power")
    # Coverage per model, and whether the candidate may serve.
    status = _api(server, "/status")
    coverage = page.inner_text("#coverage")
    for model, figures in status["models"].items():
        assert model in coverage
        assert figures["collection"] in coverage
    assert "siglip may serve" in page.inner_text("#candidate-serves")


def test_the_live_flags_show_their_source(tab: BrowserTab, server: LiveServer) -> None:
    page = tab.page
    _open(page, server)
    report = _api(server, "/experiment")
    flags = page.inner_text("#flags")
    assert f"{report['siglip_rollout_percentage']}%" in page.inner_text(
        "#flags dd[data-flag=siglip_rollout_percentage]"
    )
    assert f"{report['interleave_percentage']}%" in page.inner_text(
        "#flags dd[data-flag=interleave_percentage]"
    )
    source = page.inner_text("#flags dd[data-flag=flags_source]")
    assert ("environment" in source) == (report["flags_source"] == "environment")
    assert ("stored" in source) == (report["flags_source"] == "database")
    assert "Last changed" in flags
    assert page.input_value("#flag-rollout") == str(report["siglip_rollout_percentage"])
    assert page.input_value("#flag-interleave") == str(report["interleave_percentage"])


def test_changing_the_rollout_asks_first_then_applies_and_adds_history(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    _open(page, server)
    before = _api(server, "/rollout")
    history_before = len(_api(server, "/rollout/history")["changes"])
    assert _history_rows(page) == history_before
    target = 45 if before["siglip_rollout_percentage"] != 45 else 35

    # Cancelled: nothing is sent.
    page.fill("#flag-rollout", str(target))
    page.click("#flags-change")
    page.wait_for_selector("#confirm[open]")
    assert f'"siglip_rollout_percentage": {target}' in page.inner_text("#confirm-body")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm", state="hidden")
    page.wait_for_function(
        "() => document.querySelector('#flags-message').textContent.includes('Cancelled')"
    )
    assert (
        _api(server, "/rollout")["siglip_rollout_percentage"] == before["siglip_rollout_percentage"]
    )
    assert len(_api(server, "/rollout/history")["changes"]) == history_before

    # Confirmed: the flag changes for the API, the page re-reads report and history.
    page.fill("#flag-rollout", str(target))
    page.click("#flags-change")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    _wait_until(
        "the rollout to change",
        lambda: _api(server, "/rollout")["siglip_rollout_percentage"] == target,
    )
    page.wait_for_function(
        "n => document.querySelectorAll('#history tbody tr').length === n",
        arg=history_before + 1,
    )
    newest = _api(server, "/rollout/history")["changes"][0]
    assert newest["new_siglip_rollout_percentage"] == target
    assert newest["old_siglip_rollout_percentage"] == before["siglip_rollout_percentage"]
    assert newest["source"] == "api"
    page.wait_for_function(
        "t => document.querySelector('#flags dd[data-flag=siglip_rollout_percentage]')"
        ".textContent === t",
        arg=f"{target}%",
    )
    assert "stored" in page.inner_text("#flags dd[data-flag=flags_source]")
    assert "by api" in page.inner_text("#flags dd[data-flag=flags_changed]")
    first_row = page.inner_text("#history tbody tr:first-child")
    assert f"{target}%" in first_row
    assert "api" in first_row
    assert "Changed" in page.inner_text("#flags-message")


def test_mrr_is_shown_as_a_number_and_one_day_reads_as_labelled_bars(
    tab: BrowserTab, server: LiveServer
) -> None:
    page = tab.page
    _open(page, server)
    daily = _api(server, "/experiment/daily?days=30")
    assert len({row["day"] for row in daily}) == 1  # all searches of this test are today
    mrr_texts: list[str] = page.eval_on_selector_all(
        "#charts figure[data-metric=mrr] svg text", "ts => ts.map(t => t.textContent)"
    )
    numbers = [t for t in mrr_texts if re.fullmatch(r"\d+\.\d{3}", t)]
    assert numbers, mrr_texts
    assert not any("%" in t for t in mrr_texts), mrr_texts
    # A rate chart reads in percent.
    ctr_texts: list[str] = page.eval_on_selector_all(
        "#charts figure[data-metric=ctr] svg text", "ts => ts.map(t => t.textContent)"
    )
    assert any(t.endswith("%") for t in ctr_texts), ctr_texts
    # One day: a bar per arm with its value written on it, not a lone dot.
    arms = {row["arm"] for row in daily}
    bars = page.eval_on_selector_all(
        "#charts figure[data-metric=mrr] svg rect.series", "rs => rs.length"
    )
    assert bars == len(arms)
    values = page.eval_on_selector_all(
        "#charts figure[data-metric=mrr] svg text.value", "ts => ts.map(t => t.textContent)"
    )
    shown = sorted(float(v) for v in values)
    expected = sorted(row["mrr"] for row in daily)
    assert len(shown) == len(expected)
    assert all(abs(a - b) <= 0.0005 + 1e-9 for a, b in zip(shown, expected, strict=True)), values
    # The arms table writes MRR as a number too.
    mrr_column = page.eval_on_selector_all(
        "#arms tbody tr", "rows => rows.map(r => r.cells[5].textContent)"
    )
    assert mrr_column
    assert all(re.fullmatch(r"\d\.\d{3}", v) for v in mrr_column), mrr_column


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_at_phone_and_desktop_width(
    browser: Any, server: LiveServer, tmp_path: Path, scheme: str
) -> None:
    for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        tab = BrowserTab(browser, viewport=viewport, color_scheme=scheme)
        page = tab.page
        try:
            _open(page, server)
            _no_sideways_scroll(page, viewport["width"])
            # Chart titles and text follow the colour scheme: light text on a dark card.
            title = page.evaluate(
                "() => getComputedStyle(document.querySelector('.chart h3')).color"
            )
            body = page.evaluate("() => getComputedStyle(document.body).color")
            assert title == body
            target = tmp_path / f"admin-{name}-{scheme}.png"
            page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
            shutil.copy(target, Path("/tmp") / target.name)
            # The confirmation dialog fits the screen as well.
            page.fill(
                "#flag-interleave", "1" if page.input_value("#flag-interleave") != "1" else "2"
            )
            page.click("#flags-change")
            page.wait_for_selector("#confirm[open]")
            _no_sideways_scroll(page, viewport["width"])
            dialog = tmp_path / f"admin-confirm-{name}-{scheme}.png"
            page.screenshot(path=str(dialog))
            shutil.copy(dialog, Path("/tmp") / dialog.name)
            page.click("#confirm-cancel")
            page.wait_for_selector("#confirm", state="hidden")
            out = os.environ.get("PAGE_SCREENSHOT_DIR")
            if out:
                shutil.copy(target, Path(out) / target.name)
                shutil.copy(dialog, Path(out) / dialog.name)
        finally:
            tab.close()


def test_several_days_read_as_lines_with_a_dot_per_day_and_the_last_value(
    browser: Any, multi_day_server: LiveServer, tmp_path: Path
) -> None:
    server = multi_day_server
    daily = _api(server, "/experiment/daily?days=30")
    days = sorted({row["day"] for row in daily})
    assert len(days) == 3, days
    for scheme in ("light", "dark"):
        tab = BrowserTab(browser, viewport=DESKTOP, color_scheme=scheme)
        page = tab.page
        try:
            _open(page, server)
            for key in ("searches", "ctr", "mrr"):
                figure = f"#charts figure[data-metric={key}]"
                for arm in {row["arm"] for row in daily}:
                    rows = [row for row in daily if row["arm"] == arm]
                    dots = page.eval_on_selector_all(
                        f"{figure} g.series-{arm} circle", "cs => cs.length"
                    )
                    assert dots == len(rows), (key, arm)
                    if len(rows) > 1:
                        assert page.locator(f"{figure} g.series-{arm} polyline").count() == 1
            mrr_texts: list[str] = page.eval_on_selector_all(
                "#charts figure[data-metric=mrr] svg text", "ts => ts.map(t => t.textContent)"
            )
            assert not any("%" in t for t in mrr_texts), mrr_texts
            assert days[0][5:] in mrr_texts
            assert days[-1][5:] in mrr_texts
            target = tmp_path / f"admin-days-desktop-{scheme}.png"
            page.locator("#charts-section").screenshot(path=str(target))
            shutil.copy(target, Path("/tmp") / target.name)
        finally:
            tab.close()
