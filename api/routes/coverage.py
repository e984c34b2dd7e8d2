"""`GET /coverage`: which minutes of a range are stored, where the holes are, and what each day's
minutes came from. Holes are reported, never filled: an answer is never made up of other minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Service
from api.models import Coverage, CoverageDay, MissingRange
from api.moments import minute_of, minute_url, parse_moment
from api.problems import ProblemError, problem_responses
from warehouse import coverage as warehouse_coverage
from warehouse.schema import ONE_MINUTE

router = APIRouter()

MAX_RANGE = timedelta(days=366)
MAX_MISSING_RANGES = 1000
MOMENT = "ISO 8601 (naive means UTC) or unix seconds"


def counts(expected: int, stored: int, live: int, emulated: int) -> dict:
    missing = expected - stored
    return {"expected_minutes": expected, "stored_minutes": stored, "missing_minutes": missing,
            "live_minutes": live, "historical_minutes": stored - live, "emulated_minutes": emulated,
            "complete": missing == 0}  # fmt: skip


def requested_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[first minute, end) of the range asked: `start` in its minute, `end` rounded up to a whole minute
    (exclusive); by default the last day of whole minutes."""
    now = datetime.now(UTC)
    last = minute_of(now)
    if end is not None:
        moment = parse_moment(end, "end")
        if moment > now + timedelta(seconds=1):
            raise ProblemError(422, "Invalid parameter", f"end: {moment:%Y-%m-%dT%H:%M:%SZ} is in the future")
        last = minute_of(moment) + (ONE_MINUTE if moment != minute_of(moment) else timedelta(0))
    first = minute_of(parse_moment(start, "start")) if start is not None else last - timedelta(days=1)
    if first >= last:
        raise ProblemError(
            422, "Invalid parameter", f"start ({minute_url(first)}) must be before end ({minute_url(last)})"
        )
    if last - first > MAX_RANGE:
        raise ProblemError(
            422,
            "Range too large",
            f"{minute_url(first)} to {minute_url(last)} is more than 366 days: ask for a year at a time",
        )
    return first, last


COVERAGE_ROUTE = {"response_model": Coverage, "responses": problem_responses(422, 503)}


@router.head("/coverage", summary="The headers `GET /coverage` sends, no body", **COVERAGE_ROUTE)
@router.get("/coverage", summary="Which minutes of a range are stored, per day, and the missing ones", **COVERAGE_ROUTE)
async def get_coverage(
    service: Service,
    start: Annotated[str | None, Query(max_length=64, description=f"{MOMENT}; default: a day before end.")] = None,
    end: Annotated[
        str | None, Query(max_length=64, description=f"{MOMENT}, exclusive; default: the current minute.")
    ] = None,
) -> Coverage:
    first, last = requested_range(start, end)
    report = await service.db(warehouse_coverage.coverage, service.store, first, last)
    days = [CoverageDay(day=d.day, **counts(d.expected, d.stored, d.live, d.emulated)) for d in report.days]
    totals = [sum(getattr(d, name) for d in report.days) for name in ("expected", "stored", "live", "emulated")]
    missing = [MissingRange(start=a, end=b, minutes=(b - a) // ONE_MINUTE) for a, b in report.missing]
    return Coverage(
        start=first,
        end=last,
        **counts(*totals),
        missing_ranges=missing[:MAX_MISSING_RANGES],
        missing_ranges_truncated=len(missing) > MAX_MISSING_RANGES,
        days=days,
    )
