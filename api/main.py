"""The HTTP API: `uvicorn api.main:app --port 6667`.

It reads the warehouse and nothing else (no Dagster import: it starts in well under a second
and deploys alone). One engine with a connection pool per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from api import problems
from api.fastpath import FastPath
from api.metrics import Metrics
from api.parameters import unambiguous_parameters
from api.routes import backfills, coverage, health, toplist
from api.routes.health import owed_minutes_gauge
from api.service import ToplistService
from common.logs import configure_logging
from common.settings import Settings, get_settings
from warehouse.migrate import ensure_schema
from warehouse.store import Warehouse

log = logging.getLogger(__name__)


def engine_options(settings: Settings) -> dict:
    """Pool and deadlines: a dead database must fail fast, never hang a request.

    No pre-ping: it is a round trip on every checkout, as many as the lookup itself. A lookup
    that finds its connection dropped retries once on a new one (`Warehouse.read`); another call
    that does answers 503 once, and the pool is renewed for the next."""
    timeout = settings.api_db_timeout_seconds
    if settings.database_url.startswith("sqlite"):
        return {"sqlite_busy_timeout": timeout}  # a request's write (ask, owe) waits no longer for the lock
    return {
        "pool_pre_ping": False,
        "pool_size": 10,
        "max_overflow": 10,
        "pool_timeout": timeout,
        "connect_args": {
            "connect_timeout": max(1, int(timeout)),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        },
    }


async def ensure_schema_if_reachable(store: Warehouse) -> None:
    """Create or upgrade the schema at start; the API starts anyway when it cannot (the database
    is down, or read-only): requests then say what is wrong, and it recovers by itself."""
    try:
        await asyncio.to_thread(ensure_schema, store.engine)
    except Exception as error:  # noqa: BLE001 - reported per request, as problem+json
        log.warning("warehouse schema not ensured at start: %s", error)


def create_app(settings: Settings | None = None) -> FastPath:
    """The served ASGI app: the fast path for stored snapshots, in front of FastAPI; both counted in the metrics."""
    settings = settings or get_settings()
    api = create_api(settings)
    return FastPath(api, Metrics(api.state.registry), enabled=settings.api_fast_path)


def create_api(settings: Settings) -> FastAPI:
    """The FastAPI app: every route, validation, problem answers, the OpenAPI document and /docs."""
    configure_logging("api", settings)
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Warehouse(settings.database_url, **engine_options(settings))
        await ensure_schema_if_reachable(store)
        app.state.toplist = ToplistService(settings, store)
        yield
        store.engine.dispose()

    app = FastAPI(
        title="Crypto top-list API",
        version="1.0.0",
        summary="The top N crypto assets by 24h volume, with USD price, at any minute.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up the global providers on every request (several
        # microseconds); this API exports Prometheus metrics instead (api/metrics.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        dependencies=[Depends(unambiguous_parameters)],  # every route, those added later included
    )
    app.state.registry = registry
    app.state.owed_minutes = owed_minutes_gauge(registry)
    problems.install(app)
    for routes in (toplist, backfills, coverage, health):  # in this order in the OpenAPI document
        app.include_router(routes.router)

    return app


app = create_app()
