"""The API benchmark's baselines: the real route's answers, byte for byte, with no work behind them.

`raw_app` is a bare ASGI callable, `fastapi_app` one FastAPI route. Both replay the answers the
real API gave to the benchmark's requests (status line, headers and body, one per request,
captured by bench/api_load.py into the file named by `BENCH_ANSWERS_FILE`): `/<name>?<query>`
answers the answer captured under that name, whatever the query and headers. So each row of
the benchmark measures only what the real route does on top of sending the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def load_answers(path: Path) -> dict[str, Answer]:
    """{name: {"status", "headers": [[name, value], ...] (latin-1), "body": hex}}, as bench/api_load.py writes it."""
    answers = {}
    for name, captured in json.loads(path.read_text()).items():
        headers = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in captured["headers"]]
        answers[name] = (captured["status"], headers, bytes.fromhex(captured["body"]))
    return answers


ANSWERS = load_answers(Path(os.environ["BENCH_ANSWERS_FILE"]))


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # no lifespan: uvicorn carries on without it
    status, headers, body = ANSWERS.get(scope["path"][1:], (404, [], b""))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.get("/{answer}")
async def replay(request: Request) -> Response:
    status, headers, body = ANSWERS[request.path_params["answer"]]
    response = Response(body, status)
    response.raw_headers = headers
    return response
