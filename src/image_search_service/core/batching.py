"""Cutting a sequence into consecutive pieces: job batches, IN (...) lists, passes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

_T = TypeVar("_T")


def chunked(items: Sequence[_T], size: int) -> list[list[_T]]:
    """``items`` in order, in lists of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
