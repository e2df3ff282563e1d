"""Screenshot the search page for the README: the shipped demo models on the demo's
synthetic library, a real uvicorn server on loopback, Debian's chromium via Playwright.

    python scripts/page_screenshot.py [--out docs/screenshot.png] [--query "a red circle"]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import cast
from urllib.parse import quote_plus

import uvicorn
from playwright.sync_api import sync_playwright

from image_search_service.api.app import create_app
from image_search_service.api.deps import AppServices
from image_search_service.core.config import Settings
from image_search_service.demo.library import write_demo_library
from image_search_service.demo.run import DEMO_SEED, demo_settings
from image_search_service.services.library.index import index_paths

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshot.png"))
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--viewer", action="store_true", help="open the first result first")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = demo_settings(Settings(data_dir=Path(tmp), device="cpu", _env_file=None))
        library = Path(tmp) / "Pictures"
        write_demo_library(library, args.count, seed=DEMO_SEED)
        app = create_app(settings)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            services = cast(AppServices, app.state.services)
            index_paths(services.ctx, [library], model_keys=["clip"])
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=args.chromium, args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.goto(f"http://127.0.0.1:{port}/?q={quote_plus(args.query)}")
                page.wait_for_function(
                    """() => {
                        const imgs = [...document.querySelectorAll('#grid img')].slice(0, 18);
                        return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0);
                    }"""
                )
                # Thumbnails fade in: wait for the fades to end.
                page.wait_for_function("() => document.getAnimations().length === 0")
                if args.viewer:
                    page.click("#grid li.tile button.open")
                    page.wait_for_function(
                        "() => document.querySelector('#viewer-image').naturalWidth > 0"
                        " && document.querySelector('#viewer-facts').textContent.includes('Camera')"
                        " || document.querySelector('#viewer-facts dt:nth-of-type(5)')"
                    )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
