"""What answers `GET /`: the warehouse behind a deadline, and the snapshots it resolved, kept.

Snapshots are immutable, so rendered bodies are cached per (snapshot, limit, format) and only a
new snapshot produces new work. Database calls run in the threadpool under a deadline: a slow or
absent database gives a 503 (or, for what this process already holds, that answer marked stale),
never a hung request. The FastAPI route and the ASGI fast path (api/fastpath.py) both answer
through `ToplistService.answer`, so they send the same bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachetools import LRUCache, TTLCache
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.http_caching import cache_control, etag_matches
from api.memo import MEMO_ENTRIES, Memo
from api.moments import minute_of, minute_url, parse_moment
from api.negotiation import accepts, preferred_format
from api.problems import ProblemError
from api.rendering import Rendered, render
from common.settings import Settings
from warehouse.coverage import HealingHorizon
from warehouse.migrate import schema_problem
from warehouse.publish import Snapshot
from warehouse.requests import Origin, RequestPolicy
from warehouse.store import Warehouse

STALE_HEADER = (b"x-stale", b"database unavailable: the answer this process held for it")


RawHeaders = list[tuple[bytes, bytes]]


RESOLVE_SECONDS = 1.0  # a newly stored snapshot is served at most this long after it is committed


@dataclass(frozen=True)
class ToplistQuery:
    """The query of `GET /` once validated; it depends on the query string alone, so it is kept per string."""

    limit: int
    moment: datetime | None  # None: now
    format: str | None  # None: by the Accept header

    @classmethod
    def parse(cls, limit: int | None, datetime_: str | None, format_: str | None, settings: Settings):
        fmt = None if format_ is None else format_.lower()
        if fmt not in (None, "json", "csv"):
            raise ProblemError(422, "Invalid parameter", f"format: {format_[:32]!r} is not one of json, csv")
        moment = None if datetime_ is None else parse_moment(datetime_)
        return cls(min(limit or settings.api_default_limit, settings.toplist_depth), moment, fmt)


@dataclass(slots=True)  # built per request: not frozen, which would cost a microsecond more
class Answer:
    """A complete HTTP answer: the FastAPI route and the ASGI fast path send exactly these bytes."""

    status: int
    headers: RawHeaders
    body: bytes


@dataclass(frozen=True)
class Resolved:
    """The snapshot and rendered body that serve a query and format, until `until` (time.monotonic)."""

    minute: datetime
    snapshot: Snapshot
    rendered: Rendered
    until: float
    # Cache-Control (when it does not move with the clock: not "now") and, for a stand-in, the owed minute.
    headers: RawHeaders | None

    def holds_the_answer(self, is_now: bool, now: datetime) -> bool:
        """Whether this is still the right answer, though it cannot be looked up again: the very minute
        asked for, and for "now" only while that minute lasts (a stand-in is not: its minute may have landed)."""
        return self.snapshot.minute == self.minute and (not is_now or minute_of(now) == self.minute)


class NotStored(Exception):
    """No snapshot serves this minute: the FastAPI route answers (a backfill request or a 503)."""

    def __init__(self, minute: datetime) -> None:
        super().__init__(minute)
        self.minute = minute


def is_missing_schema_object(error: Exception) -> bool:
    """A query that named a table or column the database does not have (SQLite's message,
    Postgres's SQLSTATE 42P01/42703): only then is the schema worth checking."""
    if not isinstance(error, DBAPIError):
        return False
    return getattr(error.orig, "sqlstate", None) in ("42P01", "42703") or "no such " in str(error.orig)


class ToplistService:
    """What a request needs, kept for the life of the process: the warehouse and the caches."""

    def __init__(self, settings: Settings, store: Warehouse) -> None:
        self.settings, self.store = settings, store
        self.policy = RequestPolicy.from_settings(settings)
        self.healing = HealingHorizon.from_settings(settings)  # what /readyz and /metrics report as owed
        self.tolerance = timedelta(minutes=settings.api_tolerance_minutes) + timedelta(minutes=1)
        self.bodies: LRUCache = LRUCache(maxsize=max(1, settings.api_cache_entries))
        # Each of these holds a rendered body, so API_CACHE_ENTRIES bounds them too.
        # (minute, limit, format) -> (Snapshot, Rendered, looked up at) | None; a new snapshot may land any second
        self.lookups: TTLCache = TTLCache(maxsize=min(MEMO_ENTRIES, self.bodies.maxsize), ttl=RESOLVE_SECONDS)
        # (ToplistQuery, format) -> Resolved
        self.resolutions = Memo(min(MEMO_ENTRIES, self.bodies.maxsize))
        self.queries = Memo(MEMO_ENTRIES)  # raw query string -> the ToplistQuery FastAPI validated from it
        self.owed: TTLCache = TTLCache(maxsize=MEMO_ENTRIES, ttl=60)  # stand-in minutes recorded as owed
        # After the database failed to answer, held answers are served without asking it again until
        # then (time.monotonic): during an outage one request a second waits for the deadline, not all.
        self.unavailable_until = 0.0

    async def db(self, fn, *args):
        """Run a warehouse call in the threadpool under the configured deadline."""
        try:
            result = await asyncio.wait_for(run_in_threadpool(fn, *args), self.settings.api_db_timeout_seconds)
        except (TimeoutError, SQLAlchemyError, OSError) as error:
            await self.raise_if_schema_not_ready(error)
            self.unavailable_until = time.monotonic() + RESOLVE_SECONDS
            raise ProblemError(
                503,
                "Database unavailable",
                f"The warehouse did not answer in time ({type(error).__name__}); try again shortly.",
                {"Retry-After": str(self.settings.api_retry_after_seconds)},
            ) from None
        self.unavailable_until = 0.0  # it answered: answers are looked up again
        return result

    async def raise_if_schema_not_ready(self, error: Exception) -> None:
        """A query that failed on a database that answers: a missing or outdated schema is its own problem."""
        if not is_missing_schema_object(error):
            return  # a lock, a timeout, a lost connection: the outage answer stands
        try:
            detail = await asyncio.wait_for(
                run_in_threadpool(schema_problem, self.store.engine), self.settings.api_db_timeout_seconds
            )
        except (TimeoutError, SQLAlchemyError, OSError):
            return  # the database does not answer: that is the outage
        if detail is None:  # at head, yet a table or column is gone: a partial restore, a manual DROP
            missing = str(error.orig).splitlines()[0]
            detail = f"the warehouse database is at the newest schema revision but a query failed with: {missing}"
        raise ProblemError(503, "Warehouse schema not ready", detail[0].upper() + detail[1:] + ".") from None

    @staticmethod
    async def single_flight(cache, key, compute):
        """The cached value for `key`; concurrent misses share one computation, failures are not kept."""
        task = cache.get(key)
        if task is None:
            task = cache[key] = asyncio.ensure_future(compute())
        elif task.done() and not task.exception():
            return task.result()  # the hot path: no new future
        try:
            return await asyncio.shield(task)
        except BaseException:
            if cache.get(key) is task:
                del cache[key]
            raise

    async def served(self, minute: datetime, limit: int, fmt: str) -> tuple[Snapshot, Rendered, float] | None:
        """The snapshot serving `minute`, its rendered body, and when it was looked up (time.monotonic):
        one database query, kept a second. What is served from it counts its age from the lookup,
        not from when a later query reused it."""

        async def lookup() -> tuple[Snapshot, Rendered, float] | None:
            looked_up = time.monotonic()
            found = await self.db(self.store.served_at_or_before, minute, self.tolerance, limit)
            if found is None:
                return None
            snapshot = found.snapshot
            key = (snapshot.minute, snapshot.created_at, minute if fmt == "json" else None, limit, fmt)
            rendered = self.bodies.get(key)
            if rendered is None:  # snapshots are immutable: render and compress once per version
                rendered = self.bodies[key] = render(snapshot, minute, found.rows, fmt)
            return snapshot, rendered, looked_up

        return await self.single_flight(self.lookups, (minute, limit, fmt), lookup)

    async def resolve(self, query: ToplistQuery, fmt: str) -> Resolved:
        """Which snapshot serves the query now (422 for a future moment, NotStored for none)."""
        clock, now = time.monotonic(), datetime.now(UTC)
        requested = query.moment or now
        if requested > now + timedelta(seconds=1):
            raise ProblemError(422, "Invalid parameter", f"datetime: {requested:%Y-%m-%dT%H:%M:%SZ} is in the future")
        minute = minute_of(requested)
        served = await self.served(minute, query.limit, fmt)
        if served is None:
            raise NotStored(minute)
        snapshot, rendered, looked_up = served
        until = looked_up + RESOLVE_SECONDS
        if query.moment is None:  # "now" moves to the next minute at its start
            until = min(until, clock + (minute + timedelta(minutes=1) - now).total_seconds())
        fixed = None
        if query.moment is not None:  # a given minute's headers are the same at every moment: computed once
            fixed = [(b"cache-control", cache_control(snapshot, minute, False, now, self.settings).encode())]
            if snapshot.minute != minute and minute >= self.settings.history_start:
                fixed += await self.owe(minute)
        resolved = self.resolutions[query, fmt] = Resolved(minute, snapshot, rendered, until, fixed)
        return resolved

    async def owe(self, minute: datetime) -> RawHeaders:
        """A past minute answered from an earlier one is owed: recorded as a request (a stand-in's,
        launched once its live window is over), once per minute however many ask at the same time,
        and named in the answer with where to follow it."""

        async def record() -> None:
            if await self.db(self.store.requests.get, minute) is None:  # a read first: a write takes SQLite's lock
                await self.db(self.store.requests.owe, [minute], Origin.STAND_IN)

        await self.single_flight(self.owed, minute, record)
        return [
            (b"x-owed-minute", minute.isoformat().replace("+00:00", "Z").encode()),
            (b"x-owed-backfill", f"/backfills/{minute_url(minute)}".encode()),
        ]

    async def answer(self, query: ToplistQuery, headers: RawHeaders) -> Answer:
        """The answer to `GET /` from a stored snapshot, given the request's raw headers; NotStored if none."""
        accept = encoding = if_none_match = None
        for name, value in headers:  # the first of each, as Starlette's Headers.get reads them
            if name == b"accept":
                accept = accept or value.decode("latin-1")
            elif name == b"accept-encoding":
                encoding = encoding or value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = if_none_match or value.decode("latin-1")
        fmt = query.format or (preferred_format(accept) if accept else "json")
        resolved = self.resolutions.get((query, fmt))
        stale = False
        if resolved is None or resolved.until <= time.monotonic():
            resolved, stale = await self.resolve_or_hold(query, fmt, resolved)
        rendered = resolved.rendered
        chosen = rendered.gzip if rendered.gzip and encoding and accepts(encoding, "gzip") else rendered.identity
        headers = resolved.headers or [
            (
                b"cache-control",
                cache_control(resolved.snapshot, resolved.minute, True, datetime.now(UTC), self.settings).encode(),
            )
        ]
        if stale:
            headers = [*headers, STALE_HEADER]
        if if_none_match and etag_matches(if_none_match, chosen.etag):
            return Answer(304, [*chosen.not_modified_headers, *headers], b"")
        return Answer(200, [*chosen.ok_headers, *headers], chosen.body)

    async def resolve_or_hold(self, query: ToplistQuery, fmt: str, held: Resolved | None) -> tuple[Resolved, bool]:
        """The query resolved anew, or, while the database does not answer, the answer this process
        holds for it if that is still the right one (stale-if-error; marked so): a stored minute, or
        "now" within its minute. Otherwise the outage's 503. After a failure, one request probes the
        database again at a time (each second at most) while the others are answered from what is held."""
        can_hold = held is not None and held.holds_the_answer(query.moment is None, datetime.now(UTC))
        if can_hold and time.monotonic() < self.unavailable_until:
            return held, True
        if self.unavailable_until:  # this request probes: the held answers go on meanwhile
            self.unavailable_until = time.monotonic() + self.settings.api_db_timeout_seconds + RESOLVE_SECONDS
        try:
            return await self.resolve(query, fmt), False
        except ProblemError as error:
            if error.status == 503 and can_hold and self.unavailable_until:
                return held, True
            raise
