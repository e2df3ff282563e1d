"""Prometheus metrics, in a registry per app (so several apps in one process, as in
tests, never collide on the global default registry)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from image_search_service.core.disk import MB, DiskSpace
from image_search_service.services.rollout.router import RouteDecision
from image_search_service.services.search.log import EventOutcome, SearchLog
from image_search_service.services.search.service import SearchOutcome, TextEmbeddingCache

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "image_search_http_request_duration_seconds",
            "HTTP request latency by route template and answering model",
            ["method", "route", "model", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.encoder_seconds = Histogram(
            "image_search_encoder_duration_seconds",
            "Time of one encoder forward pass (text query or image batch)",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.searches = Counter(
            "image_search_searches",
            "Searches answered, by model and kind (text, image, similar)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "image_search_router_fallbacks",
            "Requests the router sent back to the baseline, by selected model and reason",
            ["selected", "reason"],
            registry=self.registry,
        )

        self.arm_searches = Counter(
            "image_search_experiment_searches",
            "Searches by experiment arm (clip, siglip, interleaved), kind and whether "
            "any result came back",
            ["arm", "kind", "results"],
            registry=self.registry,
        )
        self.arm_events = Counter(
            "image_search_experiment_events",
            "Result events recorded, by the search's arm, the credited model and type",
            ["arm", "model", "type"],
            registry=self.registry,
        )

        # Embeddings served to other services, apart from searches and from ingest.
        self.embed_requests = Counter(
            "image_search_embed_requests",
            "Embedding requests (POST /api/v1/embed/*), by model and kind (image, batch, text)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.embed_items = Counter(
            "image_search_embed_items",
            "Inputs embedded for other services, by model, kind and result (ok, failed)",
            ["model", "kind", "result"],
            registry=self.registry,
        )

    def record_embed(self, kind: str, model: str, items: int, failed: int) -> None:
        self.embed_requests.labels(model=model, kind=kind).inc()
        self.embed_items.labels(model=model, kind=kind, result="ok").inc(items - failed)
        if failed:
            self.embed_items.labels(model=model, kind=kind, result="failed").inc(failed)

    def observe_encode(self, model: str, kind: str, _batch: int, seconds: float) -> None:
        self.encoder_seconds.labels(model=model, kind=kind).observe(seconds)

    def record_search(self, kind: str, decision: RouteDecision, outcome: SearchOutcome) -> None:
        self.searches.labels(model=decision.model, kind=kind).inc()
        if decision.fallback_code is not None:
            self.fallbacks.labels(selected=decision.selected, reason=decision.fallback_code).inc()
        if decision.pinned:
            return  # not experiment evidence (the report leaves it out too)
        results = "some" if outcome.results else "none"
        self.arm_searches.labels(arm=outcome.arm, kind=kind, results=results).inc()

    def record_event(self, event: EventOutcome) -> None:
        self.arm_events.labels(arm=event.arm, model=event.model, type=event.type).inc()

    def track_search_log(self, log: SearchLog) -> None:
        self.registry.register(_SearchLogCollector(log))

    def track_disk(self, disk: DiskSpace) -> None:
        """DATA_DIR's free space and reserve, read at each scrape (alert before 507s)."""
        free = Gauge(
            "image_search_data_dir_free_bytes",
            "Free bytes on DATA_DIR's filesystem",
            registry=self.registry,
        )
        free.set_function(lambda: float(disk.free_bytes()))
        reserve = Gauge(
            "image_search_data_dir_reserve_bytes",
            "Free bytes kept in reserve (MIN_FREE_DISK_MB): below it, writes are refused",
            registry=self.registry,
        )
        reserve.set(disk.reserve_mb * MB)

    def track_text_cache(self, cache: TextEmbeddingCache) -> None:
        self.registry.register(_TextCacheCollector(cache))


class _TextCacheCollector(Collector):
    def __init__(self, cache: TextEmbeddingCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "image_search_text_cache_lookups",
            "Text query embedding cache lookups, by result",
            labels=["result"],
        )
        family.add_metric(["hit"], self._cache.hits)
        family.add_metric(["miss"], self._cache.misses)
        yield family


class _SearchLogCollector(Collector):
    def __init__(self, log: SearchLog) -> None:
        self._log = log

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "image_search_experiment_records",
            "Searches written to the experiment log, by result (recorded, error; "
            "dropped counts the errors that were a full queue)",
            labels=["result"],
        )
        family.add_metric(["recorded"], self._log.recorded)
        family.add_metric(["error"], self._log.errors)
        family.add_metric(["dropped"], self._log.dropped)
        yield family


class MetricsMiddleware:
    """Times every HTTP request. The route label is the matched template (bounded
    cardinality); the model label is what the route put in ``request.state.model``."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            model = str(scope.get("state", {}).get("model", ""))
            self.metrics.request_seconds.labels(
                method=scope["method"], route=route, model=model, status=str(status)
            ).observe(time.perf_counter() - started)
