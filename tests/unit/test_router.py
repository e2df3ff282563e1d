"""The embedding router's pure parts: deterministic buckets and user ids (the choice
of model per request and the coverage guard, over real stores, are in
tests/integration/test_router.py)."""

from __future__ import annotations

import hashlib

import pytest

from image_search_service.core.errors import InvalidRequest
from image_search_service.services.rollout.router import BUCKETS, clean_user_id, user_bucket

USERS = [f"user-{i}" for i in range(10_000)]


class TestBucket:
    def test_pinned_values(self) -> None:
        # sha256(id)[:8] big-endian mod 100, written out: any change here would move
        # every user to another bucket in the next release.
        for user in ("alice", "bob", "user-42", "ユーザー"):
            digest = hashlib.sha256(user.encode()).digest()
            assert user_bucket(user) == int.from_bytes(digest[:8], "big") % 100
        assert [user_bucket(u) for u in ("alice", "bob", "user-42")] == [7, 50, 29]

    def test_buckets_cover_the_range(self) -> None:
        buckets = {user_bucket(u) for u in USERS}
        assert buckets == set(range(BUCKETS))

    def test_clean_user_id(self) -> None:
        assert clean_user_id(None) is None
        assert clean_user_id("   ") is None
        assert clean_user_id(" spaced ") == " spaced "  # hashed exactly as given
        assert clean_user_id("x" * 256) == "x" * 256
        with pytest.raises(InvalidRequest, match="longer than 256 characters"):
            clean_user_id("x" * 257)

    def test_a_lone_surrogate_still_has_a_bucket(self) -> None:
        # What a percent-decoded query can hold; its UTF-8 bytes as surrogatepass writes them.
        digest = hashlib.sha256(b"user-\xed\xb3\xbf").digest()
        assert user_bucket("user-\udcff") == int.from_bytes(digest[:8], "big") % 100
