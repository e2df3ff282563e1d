"""Logging set-up for the CLI and the server."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    level_name = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    # Libraries (open_clip logs every config decision on the root logger, alembic each
    # step) stay at WARNING; our own messages follow LOG_LEVEL.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("image_search_service").setLevel(getattr(logging, level_name, logging.INFO))
