"""The ASGI hot path for stored snapshots, in front of FastAPI.

`GET /` (and `HEAD /`: the same headers, no body) with a query string FastAPI has already
validated (ToplistService.queries) is answered here from the cached, pre-rendered and
pre-compressed snapshot with precomputed headers: no middleware stack, no routing, no dependency
solving, no validation, no Request object. The answer comes from the same
`ToplistService.answer` the FastAPI route calls, so both paths send the same bytes, and it is
counted here in the metrics (no `send` wrapper per request).
Everything else falls through to FastAPI, counted by `Metrics.counted`: a query string seen for
the first time, a minute not stored (backfills), every other route. Other routes are compressed
by Starlette's GZipMiddleware; `GET /` answers carry their own encoding, so they bypass it.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from api.metrics import Metrics
from api.problems import ProblemError, problem_response
from api.rendering import GZIP_MINIMUM_BYTES
from api.routes.toplist import get_toplist, router
from api.service import NotStored, ToplistService


class FastPath:
    def __init__(self, app: FastAPI, metrics: Metrics, enabled: bool = True) -> None:
        self.app, self.metrics, self.enabled = app, metrics, enabled
        self.compressed = GZipMiddleware(app, minimum_size=GZIP_MINIMUM_BYTES)
        route = next(route for route in router.routes if getattr(route, "endpoint", None) is get_toplist)
        self.path = route.path  # the label FastAPI's requests to the same route are counted under
        self.service: ToplistService | None = None  # app.state.toplist, made by the lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: its startup makes a new app.state.toplist
            self.service = None
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["path"] != "/":
            await self.metrics.counted(self.compressed, scope, receive, send, started)
            return
        if self.enabled and scope["method"] in ("GET", "HEAD"):
            try:
                status = await self.serve(scope, receive, send)
            except BaseException:
                self.metrics.observe(self.path, 500, started)
                raise
            if status:
                self.metrics.observe(self.path, status, started)
                return
        await self.metrics.counted(self.app, scope, receive, send, started)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answer from a stored snapshot and return the status; None when FastAPI has to (new query
        string, minute not stored)."""
        service = self.service
        if service is None:  # kept: reading app.state costs ~0.8 µs (a missed attribute, then __getattr__)
            service = self.service = self.app.state.toplist
        query = service.queries.get(scope["query_string"])
        if query is None:
            return None
        try:
            answer = await service.answer(query, scope["headers"])
        except NotStored:
            return None
        except ProblemError as error:
            await problem_response(error.status, error.title, error.detail, error.headers)(scope, receive, send)
            return error.status
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else answer.body})
        return answer.status
