"""The one definition of coverage (repository.Coverage): what the router's coverage guard
and every progress view read."""

from __future__ import annotations

import pytest

from image_search_service.db.repository import Coverage


def test_the_ratio_counts_only_vectors_of_searchable_assets() -> None:
    # 10 assets, 8 searchable; 7 vectors stored, of which 2 belong to assets that have
    # since become unreadable: 5 of the 8 searchable assets are covered.
    cov = Coverage("siglip", present=10, searchable=8, done=7, failed=1, done_searchable=5)
    assert cov.ratio == pytest.approx(5 / 8)


def test_an_empty_library_is_fully_covered() -> None:
    assert Coverage("siglip", 0, 0, 0, 0, 0).ratio == 1.0
    assert Coverage("siglip", 2, 0, 2, 0, 0).ratio == 1.0  # nothing searchable to cover


@pytest.mark.parametrize(
    ("present", "done", "failed", "pending"), [(10, 7, 1, 2), (10, 10, 0, 0), (5, 4, 3, 0)]
)
def test_pending_is_what_is_neither_done_nor_failed(
    present: int, done: int, failed: int, pending: int
) -> None:
    cov = Coverage("clip", present=present, searchable=present, done=done, failed=failed,
                   done_searchable=done)  # fmt: skip
    assert cov.pending == pending
