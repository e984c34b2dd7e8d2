"""`/healthz` (the process is up), `/readyz` (the database answers, the newest snapshot is fresh,
and what is owed) and `/metrics` (Prometheus)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from api.deps import Service
from api.models import Readiness
from api.problems import ProblemError, problem_responses

router = APIRouter()


def owed_minutes_gauge(registry: CollectorRegistry) -> Gauge:
    """The gauge `/metrics` sets on each scrape (one per app: each has its own registry)."""
    return Gauge(
        "toplist_owed_minutes",
        "Minutes of the healing horizon (HEAL_HORIZON_HOURS) past their live window and not published yet "
        "(NaN: the warehouse did not answer)",
        registry=registry,
    )


@router.head("/healthz", summary="The process is up (headers only)")
@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/readyz", summary="Readiness (headers only)", responses=problem_responses(503))
@router.get(
    "/readyz", summary="The database answers and the newest snapshot is fresh", responses=problem_responses(503)
)
async def readyz(service: Service) -> Readiness:
    now, settings = datetime.now(UTC), service.settings
    latest = await service.db(service.store.latest_snapshot)
    age = None if latest is None else (now - latest.minute).total_seconds()
    if age is None or age > settings.api_ready_max_age_seconds:
        detail = "no snapshot stored yet" if latest is None else f"newest snapshot is {int(age)} s old"
        raise ProblemError(503, "Not ready", detail, {"Retry-After": str(settings.api_retry_after_seconds)})
    owed = await service.db(service.healing.owed, service.store, now)
    return Readiness(
        latest_snapshot=latest.minute, owed_minutes=len(owed), oldest_owed_minute=owed[0] if owed else None
    )


@router.head("/metrics", summary="Prometheus metrics (headers only)", response_class=Response)
@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, service: Service) -> Response:
    try:
        owed = len(await service.db(service.healing.owed, service.store, datetime.now(UTC)))
    except ProblemError:
        owed = math.nan
    request.app.state.owed_minutes.set(owed)
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
