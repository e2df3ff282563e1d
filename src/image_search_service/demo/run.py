"""`image-search demo`: a generated library, indexed with the shipped tiny models.

Runs offline on a fresh machine: the demo lives in its own folder under DATA_DIR
(so its collections never meet the user's real ones) and always uses the shipped
`demo-clip` / `demo-siglip` models, whatever the model settings say.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_serializer

from image_search_service.context import open_context
from image_search_service.core.config import MODEL_KEYS, Settings
from image_search_service.core.schemas import OutputModel
from image_search_service.demo.library import write_demo_library
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from image_search_service.services.library.indexing import ProgressFactory
from image_search_service.services.search.schemas import SearchResult
from image_search_service.services.search.service import SearchOptions, SearchService

EXAMPLE_QUERIES = ("a red circle", "a blue star", "a yellow triangle", "a white cross")
DEMO_SEED = 20261123


@dataclass
class DemoQuery:
    model: str
    query: str
    took_ms: float
    relevant: int  # pictures in the library that show the queried shape
    hits: list[dict[str, Any]] = field(default_factory=list)
    close_matches: bool = True  # False: nothing reached the floor, hits are the nearest few

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.hits

    @property
    def precision_at_k(self) -> float:
        return round(self.precision, 3)

    @property
    def precision(self) -> float:
        """Precision@k, k = min(hits, relevant): file names list the shapes drawn."""
        label = _label(self.query)
        k = min(len(self.hits), self.relevant)
        if k == 0:
            return 0.0
        return sum(label in Path(h["path"]).name for h in self.hits[:k]) / k


def _label(query: str) -> str:
    return query.removeprefix("an ").removeprefix("a ").replace(" ", "-")


@dataclass
class DemoReport:
    data_dir: Path
    library: Path
    indexed: int
    index_seconds: float
    queries: list[DemoQuery]


def demo_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "data_dir": settings.data_dir / "demo",
            "database_url": None,
            "qdrant_url": None,
            "redis_url": None,
            "clip_model_name": "demo-clip",
            "clip_pretrained": "",
            "clip_embedding_dim": 512,
            "siglip_model_name": "demo-siglip",
            "siglip_pretrained": "",
            "siglip_embedding_dim": 768,
            "qdrant_collection": "image_assets",
            "siglip_collection": "image_assets_siglip",
        }
    )


def run_demo(
    settings: Settings,
    *,
    count: int = 240,
    limit: int = 5,
    progress: ProgressFactory | None = None,
    searches: bool = True,
) -> DemoReport:
    """Write the demo library (once), index what is new in it, and (``searches``) run
    the example searches with both models."""
    demo = demo_settings(settings)
    library = demo.data_dir / "library"
    if not library.exists():
        write_demo_library(library, count, seed=DEMO_SEED)
    ctx = open_context(demo, encoders=EncoderRegistry.from_settings(demo))
    try:
        started = time.perf_counter()
        report = index_paths(ctx, [library], model_keys=list(MODEL_KEYS), progress=progress)
        index_seconds = time.perf_counter() - started
        service = SearchService(ctx)
        names = [p.name for p in library.rglob("*") if p.is_file()]
        queries = []
        for key in MODEL_KEYS if searches else ():
            for text in EXAMPLE_QUERIES:
                outcome = service.search_text(text, model=key, options=SearchOptions(limit=limit))
                queries.append(
                    DemoQuery(
                        model=key,
                        query=text,
                        took_ms=outcome.took_ms,
                        relevant=sum(_label(text) in name for name in names),
                        close_matches=outcome.close_matches,
                        hits=[
                            SearchResult.model_validate(h).model_dump(mode="json")
                            for h in outcome.results
                        ],
                    )
                )
    finally:
        ctx.close()
    return DemoReport(
        data_dir=demo.data_dir,
        library=library,
        indexed=report.indexed,
        index_seconds=index_seconds,
        queries=queries,
    )


class DemoQueryOut(OutputModel):
    model: str
    query: str
    took_ms: float
    relevant: int = Field(description="pictures in the library that show the queried shape")
    precision_at_k: float
    close_matches: bool
    results: list[dict[str, Any]] = Field(description="SearchResult objects")

    @field_serializer("took_ms")
    def _ms(self, took_ms: float) -> float:
        return round(took_ms, 1)


class DemoReportOut(OutputModel):
    """What ``image-search demo --json`` prints."""

    data_dir: Path
    library: Path
    indexed: int
    index_seconds: float
    queries: list[DemoQueryOut]

    @field_serializer("index_seconds")
    def _seconds(self, seconds: float) -> float:
        return round(seconds, 2)
