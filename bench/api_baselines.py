"""The API benchmark's baselines: the same answer bytes as the real route, with no work behind them.

`raw_app` is a bare ASGI callable, `fastapi_app` one FastAPI route. Both replay the answer the
real API gave for the benchmark's past minute (status line, headers and body, captured by
bench/api_load.py into the file named by `BENCH_ANSWER_FILE`), so the benchmark measures only
what the real routes do on top of sending those bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI, Response
from starlette.types import Receive, Scope, Send


def load_answer(path: Path) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """{"status", "headers": [[name, value], ...] (latin-1), "body": hex}, as bench/api_load.py writes it."""
    captured = json.loads(path.read_text())
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in captured["headers"]]
    return captured["status"], headers, bytes.fromhex(captured["body"])


STATUS, HEADERS, BODY = load_answer(Path(os.environ["BENCH_ANSWER_FILE"]))


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # no lifespan: uvicorn carries on without it
    await send({"type": "http.response.start", "status": STATUS, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.get("/")
async def replay() -> Response:
    response = Response(BODY, STATUS)
    response.raw_headers = HEADERS
    return response
