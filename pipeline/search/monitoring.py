"""What a running `fashion-cir serve` tells its operators: Prometheus metrics at /metrics (prometheus-client, one
registry per app) and one access-log line per request (the logger `fashion_cir.access`).

    fashion_cir_requests_total{route, kind, status}   requests answered; kind is composed, text or image for a search
    fashion_cir_request_seconds{route}                from the request's first byte to its answer's last
    fashion_cir_phase_seconds{phase}                  parse (reading a search request), then per batch: prepare
                                                      (references decoded, filters parsed), encode, search
    fashion_cir_batch_queries                         queries answered together per batch
    fashion_cir_gallery_images                        images in the served index
    fashion_cir_index_info{version}                   1 for the index version served
    fashion_cir_index_loaded_timestamp_seconds        when that version was swapped in (or the server started)
    fashion_cir_index_swaps_total                     new index versions swapped in without a restart

A route is its template (`/images/{name:path}`), never the path asked, so a scraper sees a fixed set of series.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.search.engine import SearchEngine

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
access = logging.getLogger("fashion_cir.access")


class ServiceMetrics:
    """The server's Prometheus series (see the module's docstring), in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fashion_cir_requests", "Requests answered, by route, query kind and status",
                                ["route", "kind", "status"], registry=r)
        self.latency = Histogram("fashion_cir_request_seconds", "Seconds from request to answer, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.phases = Histogram("fashion_cir_phase_seconds", "Seconds per phase of a search: parse per request; "
                                "prepare, encode and search per batch", ["phase"], buckets=LATENCY_BUCKETS,
                                registry=r)
        self.batch = Histogram("fashion_cir_batch_queries", "Queries answered together per batch",
                               buckets=BATCH_BUCKETS, registry=r)
        self.images = Gauge("fashion_cir_gallery_images", "Images in the served index", registry=r)
        self.version = Gauge("fashion_cir_index_info", "1 for the index version served", ["version"], registry=r)
        self.loaded = Gauge("fashion_cir_index_loaded_timestamp_seconds", "When the served index version was "
                            "swapped in", registry=r)
        self.swaps = Counter("fashion_cir_index_swaps", "Index versions swapped in without a restart", registry=r)

    def serving(self, engine: SearchEngine, swapped: bool = False) -> None:
        """The gauges of the index now served."""
        self.images.set(len(engine.gallery))
        self.version.clear()
        self.version.labels(engine.version or "unversioned").set(1)
        self.loaded.set(time.time())
        if swapped:
            self.swaps.inc()

    def batch_answered(self, queries: int, phases: dict[str, float]) -> None:
        self.batch.observe(queries)
        for phase, seconds in phases.items():
            self.phases.labels(phase).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """ASGI middleware: one log line per request (client, method, path, status, milliseconds, query kind) and,
    with metrics, its count and latency by route. A search route says its query kind in `request.state.kind`."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            seconds = time.perf_counter() - started
            kind = str(scope.get("state", {}).get("kind", ""))
            route = getattr(scope.get("route"), "path", "") or "unmatched"
            if self.metrics is not None:
                self.metrics.requests.labels(route, kind, str(status)).inc()
                self.metrics.latency.labels(route).observe(seconds)
            client = scope.get("client") or ("-", 0)
            access.info('%s "%s %s" %d %.1f ms%s', client[0], scope["method"], scope["path"], status,
                        seconds * 1000, f" {kind}" if kind else "")
