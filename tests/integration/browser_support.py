"""What the page tests share: Debian's chromium driven by Playwright (its own browser
download cannot run here), the viewports they look at, and the marks that skip them
where there is no browser."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
# axe-core, vendored unmodified (tests/integration/vendor/README.md says which version).
AXE_SOURCE = Path(__file__).parent / "vendor" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
# `pytestmark = BROWSER_TESTS` in a page test module.
BROWSER_TESTS = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no browser at {CHROMIUM}"),
]


class BrowserTab:
    """A page in its own browser context (its own cookies), recording every uncaught
    JavaScript error, every JavaScript dialog (dismissed) and every /api/ request (path
    and headers, in order). ``close()`` asserts there was no error, and no dialog unless
    ``dialogs_allowed``."""

    def __init__(self, browser: Any, *, dialogs_allowed: bool = False, **context: Any) -> None:
        self.context = browser.new_context(**{"viewport": DESKTOP, **context})
        self.page = self.context.new_page()
        self.dialogs_allowed = dialogs_allowed
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", self._request)
        self.page.on("dialog", self._dialog)

    def _request(self, request: Any) -> None:
        path = urlparse(request.url).path
        if path.startswith("/api/"):
            self.requests.append((path, dict(request.headers)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    @property
    def api_calls(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors  # no uncaught JavaScript error
        if not self.dialogs_allowed:
            assert self.dialogs == [], self.dialogs  # no prompt(), confirm() or alert()


def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of those impacts on the page as it stands, one line each
    (rule, impact, how many nodes, the first node). axe is evaluated through the
    DevTools protocol, which the page's Content-Security-Policy does not block (a
    <script> tag would be)."""
    page.evaluate(AXE_SOURCE.read_text(encoding="utf-8") + "\n;0")
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
            .map(v => ({
                id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(" ")),
            }))"""
    )
    return [
        f"{v['id']} ({v['impact']}) on {len(v['nodes'])} nodes, e.g. {v['nodes'][0]}"
        for v in found
        if v["impact"] in impacts
    ]
