"""Prometheus metrics of one server (``GET /metrics``, text exposition format).

Each app has its own registry, so several servers (tests) in one process do
not share counters. Request metrics are labelled by route template
(``/v1/videos/{video_id}``), never by raw path, to keep the label set small.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recot_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "recot_request_seconds", "HTTP request latency (streams: until the last byte)", ["route"], registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )  # fmt: skip
        self.queue_depth = Gauge("recot_queue_depth", "Jobs waiting or running, by kind", ["kind"], registry=r)
        self.rejected = Counter("recot_rejected", "Requests refused because a queue was full", ["kind"], registry=r)
        self.cache_hits = Counter(
            "recot_cache_hits", "Encodings found instead of computed, by where", ["where"], registry=r
        )
        self.cache_misses = Counter("recot_cache_misses", "Encodings that had to be computed", registry=r)
        self.encode_frames = Counter("recot_encode_frames", "Frames encoded", registry=r)
        self.encode_seconds = Counter(
            "recot_encode_seconds", "Seconds spent encoding (answers in between excluded)", registry=r
        )
        self.encode_fps = Gauge(
            "recot_encode_frames_per_second", "Frames a second of the last finished encode", registry=r
        )
        self.answers = Counter("recot_answers", "Answers by outcome", ["outcome"], registry=r)
        self.answer_seconds = Histogram(
            "recot_answer_seconds", "Seconds the worker spent on one answer", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.generated_tokens = Counter("recot_generated_tokens", "Tokens generated", registry=r)
        for kind in ("answer", "encode"):
            self.queue_depth.labels(kind).set(0)
        for where in ("memory", "disk"):
            self.cache_hits.labels(where)
        for outcome in ("completed", "cancelled", "timeout", "failed"):
            self.answers.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it until its last byte (pure ASGI: streams pass straight through)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
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
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
