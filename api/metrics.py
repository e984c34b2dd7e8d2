"""Prometheus metrics per route and status, counted without Starlette's BaseHTTPMiddleware.

`@app.middleware("http")` builds a Request, a task group and a streaming response per request;
`Metrics.counted` wraps `send` instead and reads the status and the matched route (set by
FastAPI's router) from the scope. The fast path (api/fastpath.py) counts its own answers with
`Metrics.observe`, without the `send` wrapper: it knows the status it sends.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("api_requests", "HTTP requests", ["path", "status"], registry=registry)
        self.latency = Histogram("api_request_seconds", "Request latency", ["path"], registry=registry)
        self.children: dict[tuple[str, int], tuple] = {}  # labelled children, looked up once

    def observe(self, path: str, status: int, started: float) -> None:
        """Count one answer of `path` (the route's path) with `status`, begun at `started` (time.perf_counter)."""
        children = self.children.get((path, status))
        if children is None:
            children = (self.requests.labels(path, str(status)), self.latency.labels(path))
            self.children[(path, status)] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

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
            self.observe(route.path if route is not None else "unmatched", status, started)
