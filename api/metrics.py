"""Prometheus metrics per route and status: `api_requests_total` and the `api_request_seconds` histogram.

Counted without Starlette's BaseHTTPMiddleware (`@app.middleware("http")` builds a Request, a
task group and a streaming response per request): `Metrics.counted` wraps `send` and reads the
status and the matched route (set by FastAPI's router) from the scope; the fast path
(api/fastpath.py) counts its own answers with `Metrics.observe`, without the wrapper.

The counts are plain numbers, exposed by a custom collector in the same series prometheus_client's
Counter and Histogram would expose: those take a lock per value and walk the buckets in Python,
~1.5 µs a request against ~0.3 µs here, and every request runs on the event loop's one thread.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = Histogram.DEFAULT_BUCKETS  # seconds, the last one +Inf
BUCKET_LABELS = [floatToGoString(bound) for bound in BUCKETS]


@dataclass(slots=True)
class Count:
    created: float = field(default_factory=time.time)
    value: int = 0


@dataclass(slots=True)
class Latency:
    created: float = field(default_factory=time.time)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))  # per bucket, not cumulative
    sum: float = 0.0


class Metrics(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests: dict[tuple[str, int], Count] = {}  # (path, status)
        self.latency: dict[str, Latency] = {}  # path
        registry.register(self)

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answer of `path` (the route's path) with `status`, given in `seconds`."""
        requests = self.requests.get((path, status))
        if requests is None:
            requests = self.requests[path, status] = Count()
        requests.value += 1
        latency = self.latency.get(path)
        if latency is None:
            latency = self.latency[path] = Latency()
        latency.buckets[bisect_left(BUCKETS, seconds)] += 1  # the first bound >= seconds, as Histogram counts
        latency.sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("api_requests", "HTTP requests", labels=["path", "status"])
        for (path, status), count in list(self.requests.items()):
            requests.add_metric([path, str(status)], count.value, created=count.created)
        yield requests
        latency = HistogramMetricFamily("api_request_seconds", "Request latency", labels=["path"])
        for path, histogram in list(self.latency.items()):
            buckets = list(zip(BUCKET_LABELS, accumulate(histogram.buckets), strict=True))
            latency.add_metric([path], buckets, histogram.sum)
            latency.samples.append(Sample("api_request_seconds_created", {"path": path}, histogram.created))
        yield latency

    async def counted(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        """Run `app` on an HTTP request and count its answer."""
        status = 500  # what the server answers when the app fails before it starts a response

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            self.observe(route.path if route is not None else "unmatched", status, time.perf_counter() - started)
