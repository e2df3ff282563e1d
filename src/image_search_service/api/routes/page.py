"""The search page at ``/`` and the experiment page at ``/admin``: static HTML, CSS and
JavaScript shipped in the package.

No build step and no CDN: the page and everything it loads come from this server, so
it works offline, and it calls the API on its own origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"

# Everything from this origin; thumbnails of a dropped example are blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


def _html(name: str) -> FileResponse:
    return FileResponse(
        STATIC_DIR / name,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/")
def page() -> FileResponse:
    return _html("index.html")


@router.get("/admin")
def admin_page() -> FileResponse:
    """The rollout experiment: the report and a chart per metric over time (its data
    come from the admin API, with the key when one is set)."""
    return _html("admin.html")


def static_files() -> StaticFiles:
    """The page's CSS and JavaScript, revalidated on each load (small files)."""
    return StaticFiles(directory=STATIC_DIR)
