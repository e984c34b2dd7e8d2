"""Prometheus metrics per route and status, counted by a pure ASGI middleware around everything.

Starlette's BaseHTTPMiddleware (`@app.middleware("http")`) builds a Request, a task group and
a streaming response per request; this wraps `send` and reads the status and the matched
route (set by FastAPI's router, or by the fast path) from the scope instead.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("api_requests", "HTTP requests", ["path", "status"], registry=registry)
        self.latency = Histogram("api_request_seconds", "Request latency", ["path"], registry=registry)
        self.children: dict[tuple[str, int], tuple] = {}  # labelled children, looked up once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a response

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
            children = self.children.get((path, status))
            if children is None:
                children = (self.requests.labels(path, str(status)), self.latency.labels(path))
                self.children[(path, status)] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
