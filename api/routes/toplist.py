"""`GET /`: a snapshot as JSON or CSV; a past minute not stored yet is requested (202)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.models import BackfillStatus, Toplist
from api.moments import minute_url
from api.problems import ProblemError, problem_responses
from api.routes.backfills import status_of
from api.service import Answer, NotStored, ToplistQuery, ToplistService
from warehouse.requests import Status

router = APIRouter()


MEMO_QUERY_BYTES = 512  # longer query strings (junk parameters) are validated every time: the memo stays ~2 MB


def header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


TOPLIST_RESPONSES = {
    200: {
        "model": Toplist,
        "description": "The snapshot, as JSON or as CSV (`Rank,Symbol,Price USD`).",
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "headers": {
            "X-Snapshot-Time": header("The minute of the snapshot served (UTC)."),
            "X-Owed-Minute": header(
                "Only on a stand-in (an earlier snapshot served for a past minute not stored yet): the minute "
                "asked for, which is owed: recorded as a backfill request and published when it is fetched."
            ),
            "X-Owed-Backfill": header("With X-Owed-Minute: the status of that minute's request (/backfills/{minute})."),
            "X-Stale": header(
                "The warehouse did not answer: this is the answer this process held for the same query (a "
                "stored minute, or now within its minute)."
            ),
        },
    },
    202: {"model": BackfillStatus, "description": "Not stored yet: a backfill was requested (see Location)."},
    304: {"description": "Not modified (the If-None-Match request header matched the ETag)."},
    **problem_responses(404, 406, 422, 429, 503),
}


TOPLIST_RESPONSES[406]["description"] = "Without `format`, the Accept header admits neither JSON nor CSV."


@router.head("/", summary="The headers `GET /` sends, without the body", responses=TOPLIST_RESPONSES)
@router.get("/", summary="Top assets by 24h volume, with USD price, at a minute", responses=TOPLIST_RESPONSES)
async def get_toplist(
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, description="Rows to return; default 100, capped at the stored depth.")
    ] = None,
    datetime_: Annotated[
        str | None,
        Query(
            alias="datetime",
            max_length=64,
            description="ISO 8601 (naive means UTC; a leap second, 23:59:60, reads as 23:59:59) or unix seconds; "
            "default now.",
        ),
    ] = None,
    format_: Annotated[
        str | None,
        Query(
            alias="format",
            max_length=16,
            description="json or csv (any case), whatever Accept says. Without it, the Accept header chooses "
            "by its q-values (CSV for `text/csv` or `text/*`, JSON for `*/*`); 406 if it admits neither.",
        ),
    ] = None,
) -> Response:
    # The service and the headers are read directly: each declared parameter costs FastAPI validation
    # on every request. A validated query string is kept for the ASGI fast path (api/fastpath.py).
    service: ToplistService = request.app.state.toplist
    query = ToplistQuery.parse(limit, datetime_, format_, service.settings)
    if len(request.scope["query_string"]) <= MEMO_QUERY_BYTES:
        service.queries[request.scope["query_string"]] = query
    try:
        answer = await service.answer(query, request.scope["headers"])
    except NotStored as missing:
        return await missing_snapshot(service, missing.minute, is_now=query.moment is None)
    return answer_response(answer)


def answer_response(answer: Answer) -> Response:
    response = Response(answer.body, answer.status)
    response.raw_headers = answer.headers
    return response


async def missing_snapshot(service: ToplistService, minute: datetime, is_now: bool) -> Response:
    settings = service.settings
    retry = {"Retry-After": str(settings.api_retry_after_seconds)}
    if is_now:
        raise ProblemError(
            503, "No recent snapshot", "No snapshot in the last minutes: is the pipeline running?", retry
        )
    if minute < settings.history_start:  # every stored minute is served; only new backfills are bounded
        raise ProblemError(
            404,
            "Not stored",
            f"No snapshot is stored near {minute_url(minute)}, and backfills reach back to HISTORY_START "
            f"({minute_url(settings.history_start)}) only.",
        )
    request = await service.db(service.store.requests.ask, minute, service.policy)
    if request is None:
        detail = f"{settings.backfill_max_pending} backfills are pending; try again later."
        raise ProblemError(429, "Too many backfill requests", detail, retry)
    if request.status == Status.FAILED:  # asking earlier changes nothing: say when it will, if ever
        retry = {}
        if next_attempt := service.policy.next_attempt(request):
            retry["Retry-After"] = str(max(1, math.ceil((next_attempt - datetime.now(UTC)).total_seconds())))
    body = status_of(request, service.policy).model_dump_json().encode()
    headers = {**retry, "Location": f"/backfills/{minute_url(minute)}", "Cache-Control": "no-store"}
    return Response(body, status_code=202, media_type="application/json", headers=headers)
