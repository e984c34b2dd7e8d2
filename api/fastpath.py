"""The ASGI hot path for stored snapshots, in front of FastAPI.

`GET /` (and `HEAD /`: the same headers, no body) with a query string FastAPI has already
validated (ToplistService.queries) is answered here from the cached, pre-rendered and
pre-compressed snapshot with precomputed headers: no middleware stack, no routing, no dependency
solving, no validation, no Request object. The answer comes from the same
`ToplistService.answer` the FastAPI route calls, so both paths send the same bytes.
Everything else falls through to FastAPI: a query string seen for the first time, a minute
not stored (backfills), every other route. Other routes are compressed by Starlette's
GZipMiddleware; `GET /` answers carry their own encoding, so they bypass it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from api.problems import ProblemError, problem_response
from api.toplist import GZIP_MINIMUM_BYTES, NotStored, ToplistService, get_toplist, router


class FastPath:
    def __init__(self, app: FastAPI, enabled: bool = True) -> None:
        self.app, self.enabled = app, enabled
        self.compressed = GZipMiddleware(app, minimum_size=GZIP_MINIMUM_BYTES)
        self.route = next(route for route in router.routes if getattr(route, "endpoint", None) is get_toplist)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/":
            await self.compressed(scope, receive, send)
        elif not (self.enabled and scope["method"] in ("GET", "HEAD") and await self.serve(scope, receive, send)):
            await self.app(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer from a stored snapshot; False when FastAPI has to (new query string, minute not stored)."""
        service: ToplistService = self.app.state.toplist
        query = service.queries.get(scope["query_string"])
        if query is None:
            return False
        scope["route"] = self.route  # what the router would have matched, for the metrics
        try:
            answer = await service.answer(query, scope["headers"])
        except NotStored:
            return False
        except ProblemError as error:
            await problem_response(error.status, error.title, error.detail, error.headers)(scope, receive, send)
            return True
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else answer.body})
        return True
