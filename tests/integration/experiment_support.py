"""Shared set-up for the experiment tests: routing decisions and search outcomes as the
router and the search service would hand them to the search log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from image_search_service.core.config import ModelKey
from image_search_service.services.rollout.router import RouteDecision
from image_search_service.services.search.service import SearchHit, SearchOutcome


def route_decision(model: ModelKey, user: str | None, *, interleave: bool = False) -> RouteDecision:
    return RouteDecision(
        model=model,
        collection=f"c-{model}",
        selected=model,
        user_id=user,
        bucket=7,
        rule="test",
        interleave=interleave,
    )


def search_outcome(
    ids: Sequence[uuid.UUID], models: Sequence[ModelKey], *, interleaved: bool = False
) -> SearchOutcome:
    hits = [
        SearchHit(
            asset_id=i,
            path=f"/p/{i}.jpg",
            score=0.5,
            calibrated_score=None,
            width=None,
            height=None,
            format="JPEG",
            taken_at=None,
            model=m,
        )
        for i, m in zip(ids, models, strict=True)
    ]
    return SearchOutcome(
        results=hits,
        model=models[0] if models else "clip",
        collection="c",
        limit=10,
        offset=0,
        took_ms=1.0,
        interleaved=interleaved,
    )
