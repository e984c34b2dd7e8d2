"""RFC 9457 problem details: every error the API returns has this shape and a human `detail`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str


class ProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


def problem_response(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_detail(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if p not in ("query", "path"))
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, error: ProblemError) -> JSONResponse:
        return problem_response(error.status, error.title, error.detail, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(422, "Invalid parameter", _validation_detail(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            error.status_code, str(error.detail), str(error.detail), getattr(error, "headers", None)
        )


def problem_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the problem answers a route can give."""
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {status: {"model": Problem, "content": {PROBLEM_JSON: schema}} for status in statuses}
