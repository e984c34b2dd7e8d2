"""`GET /` (a snapshot as JSON or CSV) and `GET /backfills/{minute}` (a request's status).

Snapshots are immutable, so rendered bodies are cached per (snapshot, limit, format) and
only a new snapshot produces new work. Database calls run in the threadpool under a
deadline: a slow or absent database gives a 503, never a hung request.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Annotated

from cachetools import LRUCache, TTLCache
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from api.problems import ProblemError, problem_responses
from common.settings import Settings
from warehouse.migrate import schema_problem
from warehouse.publish import Snapshot
from warehouse.requests import BackfillRequest, Origin, RequestPolicy, Status
from warehouse.store import Warehouse

CSV_HEADER = ("Rank", "Symbol", "Price USD")


class ToplistRow(BaseModel):
    rank: int
    symbol: str
    name: str
    cmc_id: int
    price_usd: float
    volume_24h_usd: float | None


class Toplist(BaseModel):
    snapshot_time: datetime = Field(description="The minute this snapshot holds (UTC).")
    requested_time: datetime = Field(description="The minute that was asked for (UTC).")
    count: int
    source: str = Field(description="`live` upstream data, or `emulated` (the local emulator).")
    price_source: str
    data: list[ToplistRow]


class BackfillStatus(BaseModel):
    minute: datetime
    status: str = Field(
        description="requested | launched | succeeded | failed (see docs/backfills.md#the-request-lifecycle)"
    )
    detail: str = Field(description="What happens next, in words.")
    requested_at: datetime
    updated_at: datetime
    run_id: str | None = Field(default=None, description="The Dagster run of the current attempt, once created.")
    error: str | None = None
    permanent: bool = Field(
        default=False, description="Failed for a reason a retry cannot fix (the upstream plan, an API key)."
    )
    attempts: int = Field(
        description="Runs made for this minute so far (the attempt after a permanent failure starts a new count)."
    )
    max_attempts: int
    next_attempt_at: datetime | None = Field(
        default=None, description="Failed: from when asking for the minute again queues another attempt."
    )
    snapshot_url: str | None = Field(default=None, description="Where the snapshot is served once it succeeded.")
    origin: str = Field(
        description="Why the minute is owed: asked (answered 202), stand-in (answered from an earlier minute) or "
        "healer (found unpublished in the last HEAL_HORIZON_HOURS)."
    )


# A leap second (`23:59:60`, `235960`): Python's datetime has no second 60.
LEAP_SECOND = re.compile(r"([Tt ]\d\d:?\d\d:?)60(?!\d)")


def parse_moment(value: str, name: str = "datetime") -> datetime:
    """ISO 8601 (offset or Z; naive means UTC) or unix seconds, as an aware UTC datetime; `name` is
    the parameter an error names. A leap second is read as the second before it (23:59:60Z as
    23:59:59Z, the same minute); the second 60 of any other minute than a UTC day's last is refused."""
    text = value.strip()
    iso, leap = LEAP_SECOND.subn(r"\g<1>59", text, count=1)  # no number matches: it has no T or space
    try:
        try:
            moment = datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            moment = datetime.fromisoformat(iso.replace("z", "Z"))
        moment = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)  # 0001-01-01T00:00+01:00 overflows
    except (ValueError, OverflowError, OSError):
        raise ProblemError(
            422,
            "Invalid parameter",
            f"{name}: {value[:64]!r} is neither ISO 8601 nor unix seconds (in the years 1 to 9999, UTC)",
        ) from None
    if leap and (moment.hour, moment.minute) != (23, 59):
        raise ProblemError(
            422,
            "Invalid parameter",
            f"{name}: {value[:64]!r} has second 60, a leap second, which only a UTC day's last minute "
            "has (23:59:60Z, read as 23:59:59Z)",
        )
    return moment


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def minute_url(minute: datetime) -> str:
    return minute.strftime("%Y-%m-%dT%H:%MZ")


GZIP_MINIMUM_BYTES = 1024  # smaller bodies are sent as they are (the GZipMiddleware threshold for other routes)
STALE_HEADER = (b"x-stale", b"database unavailable: the answer this process held for it")
VARY = "Accept, Accept-Encoding"

RawHeaders = list[tuple[bytes, bytes]]
RESOLVE_SECONDS = 1.0  # a newly stored snapshot is served at most this long after it is committed
MEMO_ENTRIES = 4096
MEMO_QUERY_BYTES = 512  # longer query strings (junk parameters) are validated every time: the memo stays ~2 MB


@dataclass(frozen=True)
class Representation:
    """One encoding of a rendered body and its headers, all but Cache-Control (that depends on the moment)."""

    body: bytes
    etag: str
    ok_headers: tuple[tuple[bytes, bytes], ...]
    not_modified_headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Rendered:
    identity: Representation
    gzip: Representation | None  # None when the body is too small to be worth compressing


def representation(
    body: bytes, media_type: str, etag: str, shared: dict[str, str], encoding: str | None
) -> Representation:
    not_modified = tuple(
        (name.lower().encode(), value.encode("latin-1")) for name, value in {"ETag": etag, **shared}.items()
    )
    entity = ((b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode()))
    entity += ((b"content-encoding", encoding.encode()),) if encoding else ()
    return Representation(body, etag, entity + not_modified, not_modified)


def render(snapshot: Snapshot, requested: datetime, rows: list[dict], fmt: str) -> Rendered:
    """The body in both encodings with their precomputed headers: rendered and compressed once per snapshot."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
        writer.writerow(CSV_HEADER)
        writer.writerows((r["rank"], r["symbol"], plain_decimal(r["price_usd"])) for r in rows)
        body, media_type = buffer.getvalue().encode(), "text/csv; charset=utf-8"
    else:
        document = {
            "snapshot_time": snapshot.minute.isoformat().replace("+00:00", "Z"),
            "requested_time": requested.isoformat().replace("+00:00", "Z"),
            "count": len(rows),
            "source": snapshot.source,
            "price_source": snapshot.price_source,
            "data": rows,
        }
        body, media_type = json.dumps(document, separators=(",", ":")).encode(), "application/json"
    tag = hashlib.blake2b(body, digest_size=12).hexdigest()
    shared = {
        "X-Snapshot-Time": snapshot.minute.isoformat().replace("+00:00", "Z"),
        "Last-Modified": format_datetime(snapshot.created_at, usegmt=True),
        "Vary": VARY,
    }
    identity = representation(body, media_type, f'"{tag}"', shared, None)
    if len(body) < GZIP_MINIMUM_BYTES:
        return Rendered(identity, None)
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Rendered(identity, representation(gzipped, media_type, f'"{tag}-gzip"', shared, "gzip"))


def plain_decimal(value: float) -> str:
    """A float in positional notation with every digit it has (`0.00001234`, never `1.234e-05`)."""
    return format(Decimal(repr(value)), "f")


def cache_control(snapshot: Snapshot, minute: datetime, is_now: bool, now: datetime, settings: Settings) -> str:
    """The caching policy of a served snapshot (the one place that decides it).

    - "now" from the current minute's snapshot: until the next minute starts (it cannot be
      replaced before then);
    - a stand-in (an earlier minute served for one not stored yet, "now" in the first seconds of
      a minute included): `no-cache`, so a cache revalidates with the ETag and picks up the
      requested minute as soon as it is published;
    - a stored past minute: `API_STORED_MAX_AGE_SECONDS`, then revalidation, since a re-run or
      a range backfill can rewrite it (its ETag then changes).
    """
    if snapshot.minute != minute or (is_now and minute_of(now) != minute):  # "now" resolved in the minute before
        return "public, no-cache"
    if is_now:
        return f"public, max-age={max(1, 60 - now.second)}"
    return f"public, max-age={settings.api_stored_max_age_seconds}, must-revalidate"


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or any listed tag by weak comparison."""
    if if_none_match == etag:  # what a cache revalidating its one copy sends: no parsing
        return True
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


ZERO_QUALITY = re.compile(r"q\s*=\s*0(\.0{0,3})?\s*$")


def accepts(header: str, token: str) -> bool:
    """`token` is listed in an Accept-Encoding header, unless refused with `;q=0` (RFC 9110 §12.4.2)."""
    header = header.lower()
    if ";" not in header:  # the common case, without parameters
        return token in header
    items = (item.split(";") for item in header.split(","))
    return any(token in name and not any(ZERO_QUALITY.match(p.strip()) for p in params) for name, *params in items)


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


class Memo(dict):
    """A dict that forgets everything when full: lookups at C speed on the hot path, bounded memory."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.capacity and key not in self:
            self.clear()
        super().__setitem__(key, value)


# The formats `GET /` serves, as (format, type, subtype); JSON first: the default at a tie.
SERVED_FORMATS = (("json", "application", "json"), ("csv", "text", "csv"))
QVALUE = re.compile(r"[01](\.\d{0,3})?")
MEMO_ACCEPT_CHARS = 256  # longer Accept headers are negotiated every time: the memo stays ~1 MB
FORMAT_BY_ACCEPT = Memo(MEMO_ENTRIES)  # Accept header -> the format it prefers


def preferred_format(accept: str) -> str:
    """The format an Accept header prefers, kept per header (the common ones cost a dict lookup);
    406 when it admits neither JSON nor CSV."""
    fmt = FORMAT_BY_ACCEPT.get(accept)
    if fmt is None:
        fmt = negotiate(accept)
        if len(accept) <= MEMO_ACCEPT_CHARS:
            FORMAT_BY_ACCEPT[accept] = fmt
    return fmt


def negotiate(accept: str) -> str:
    """Content negotiation (RFC 9110 §12.5.1): each format takes the quality of the most specific
    range that matches it (`text/csv`, then `text/*`, then `*/*`). The higher quality wins, then
    the more specific range (`text/*, application/json` is JSON), then the range listed first,
    then JSON. A q that is not a qvalue counts as 1; other media type parameters are ignored."""
    ranges = [(*media_range(item), position) for position, item in enumerate(accept.lower().split(","))]
    scores = {fmt: match_score(ranges, kind, subtype) for fmt, kind, subtype in SERVED_FORMATS}
    best = max(scores, key=scores.__getitem__)  # the first of equals: JSON
    if scores[best][0] == 0:
        raise ProblemError(
            406,
            "Not acceptable",
            f"Accept: {accept[:64]!r} admits neither application/json nor text/csv; "
            "ask for one of them (or */*), or use format=json or format=csv",
            {"Vary": "Accept"},
        )
    return best


def media_range(item: str) -> tuple[str, str, float]:
    """`type/subtype;q=…` as (type, subtype, quality); `*` alone (old Java clients send it) is */*."""
    media, *params = item.split(";")
    kind, _, subtype = media.strip().partition("/")
    quality = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            value = value.strip()
            quality = min(float(value), 1.0) if QVALUE.fullmatch(value) else 1.0
            break
    return kind, subtype or kind, quality


def match_score(ranges: list[tuple[str, str, float, int]], kind: str, subtype: str) -> tuple[float, int, int]:
    """(quality, specificity, -position) of the most specific range that matches `kind/subtype`; quality 0 for none."""
    best = (0.0, -1, 0)
    for range_kind, range_subtype, quality, position in ranges:
        if range_kind == kind:
            specificity = 2 if range_subtype == subtype else 1 if range_subtype == "*" else -1
        else:
            specificity = 0 if range_kind == range_subtype == "*" else -1
        if specificity > best[1]:
            best = (quality, specificity, -position)
    return best


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


def get_service(request: Request) -> ToplistService:
    return request.app.state.toplist


Service = Annotated[ToplistService, Depends(get_service)]


router = APIRouter()


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


def next_step(request: BackfillRequest, policy: RequestPolicy) -> str:
    """What happens next to a request, in words (BackfillStatus.detail)."""
    if request.status == Status.REQUESTED:
        current = request.attempts if request.run_key else request.attempts + 1  # handed over: counted
        return f"Waiting for a run ({attempt_of(current, request, policy)})."
    if request.status == Status.LAUNCHED:
        return f"Run {request.run_id} is storing this minute ({attempt_of(request.attempts, request, policy)})."
    if request.status == Status.SUCCEEDED:
        return "Stored: see snapshot_url."
    if (next_attempt := policy.next_attempt(request)) is None:
        key = request.minute.strftime("%Y-%m-%d-%H:%M")
        return (
            f"It failed; all {policy.max_attempts} attempts are used, none is left: "
            f"`python -m scripts.backfill_range {key}...{key}` fetches it."
        )
    when = next_attempt.isoformat().replace("+00:00", "Z")
    if request.permanent:
        return (
            "It failed for a reason a retry cannot fix (see error): fix it, then ask for the minute again "
            f"from {when} to queue attempt 1 of {policy.max_attempts}."
        )
    attempt = attempt_of(request.attempts + 1, request, policy)
    if policy.retried_by_itself(request):
        return f"It failed (see error); {attempt} is queued by itself at {when}."
    return f"It failed (see error): ask for the minute again from {when} to queue {attempt}."


def attempt_of(number: int, request: BackfillRequest, policy: RequestPolicy) -> str:
    if policy.heals(request.minute):
        return f"attempt {number}; retried until it is published, as every minute of the last HEAL_HORIZON_HOURS"
    return f"attempt {number} of {policy.max_attempts}"


def status_of(request: BackfillRequest, policy: RequestPolicy) -> BackfillStatus:
    snapshot_url = f"/?datetime={minute_url(request.minute)}" if request.status == Status.SUCCEEDED else None
    fields = {k: v for k, v in vars(request).items() if k not in ("run_key", "submitted_at")}
    return BackfillStatus(
        **fields,
        detail=next_step(request, policy),
        max_attempts=policy.max_attempts,
        next_attempt_at=policy.next_attempt(request),
        snapshot_url=snapshot_url,
    )


BACKFILL_ROUTE = {"response_model": BackfillStatus, "responses": problem_responses(404, 422, 503)}


@router.head("/backfills/{minute}", summary="The headers `GET /backfills/{minute}` sends, no body", **BACKFILL_ROUTE)
@router.get("/backfills/{minute}", summary="Status of the backfill requested for a minute", **BACKFILL_ROUTE)
async def get_backfill(
    minute: Annotated[str, Path(max_length=64, description="The minute, e.g. 2026-11-27T12:05Z.")],
    service: Service,
) -> BackfillStatus:
    looked_for = minute_of(parse_moment(minute, "minute"))
    request = await service.db(service.store.requests.get, looked_for)
    if request is None:
        raise ProblemError(404, "Not found", f"No backfill was requested for the minute {minute_url(looked_for)}.")
    return status_of(request, service.policy)
