"""Reads and writes of the warehouse, shared by the pipeline and the API (no Dagster here).

Writing a range of minutes replaces it in one transaction, so a re-run gives identical rows
and readers never see half a minute. The merge is SQL (the join and the renumbering); each
merged minute is stored as one row holding its top list (see `warehouse.schema`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from warehouse.migrate import alembic_config
from warehouse.migrate import upgrade as upgrade_to_head
from warehouse.quality import MinuteQuality
from warehouse.requests import BackfillRequests, settle
from warehouse.schema import assets, fetches, prices, rankings, snapshots

# A ranking row and its price: the same minute, the same CMC id (never the symbol).
PRICED_RANKING = and_(prices.c.minute == rankings.c.minute, prices.c.cmc_id == rankings.c.cmc_id)
# Postgres advisory locks (two-int key space: this namespace, the unix hour) serializing the
# writers of the minutes of one hour; taken in ascending order, so overlapping windows never
# deadlock. One lock per hour, not per minute: each lock takes a slot of the server's shared lock
# table (~max_locks_per_transaction x max_connections, 6,400 by default), which a lock per
# minute of a long window (a week's chunk) exhausted ("out of shared memory").
MINUTE_LOCK_NAMESPACE = 0x746F70
LOCK_MINUTES = 60
ONE_MINUTE = timedelta(minutes=1)
FETCHED = ("prices", "rankings")  # the datasets a snapshot is merged from, one `fetches` row each per minute
T = TypeVar("T")
LOCK_HOURS = text("SELECT count(pg_advisory_xact_lock(:namespace, h)) FROM generate_series(:first, :last) AS h")


def blocked_error(minute: datetime, failed_checks: Sequence[str]) -> str:
    """The error a request records when its minute failed blocking checks, with the way out."""
    key = minute.strftime("%Y-%m-%d-%H:%M")
    return (
        f"blocked by failed checks: {', '.join(failed_checks)}. The capture is refused, never kept: the minute is "
        "fetched again from the historical endpoints, by itself within HEAL_HORIZON_HOURS, else by asking for it "
        f"again or with `python -m scripts.backfill_range {key}...{key}`"
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Fetch:
    """Provenance of one dataset for one minute."""

    minute: datetime
    dataset: str  # prices | rankings
    provider: str
    emulated: bool
    mode: str  # latest | historical
    records: int
    rejected: int
    fetched_at: datetime


@dataclass(frozen=True)
class Snapshot:
    minute: datetime
    row_count: int
    matched: int
    unmatched: int
    source: str
    price_source: str
    fetched_at: datetime
    created_at: datetime
    live: bool  # captured from the latest endpoints, not reconstructed


SNAPSHOT_FIELDS = [snapshots.c[name] for name in Snapshot.__dataclass_fields__]
TOP_LIST_FIELDS = [snapshots.c.cmc_ids, snapshots.c.prices_usd, snapshots.c.volumes_24h_usd]


@dataclass(frozen=True)
class Served:
    """A snapshot and its served rows by rank: the answer to a lookup."""

    snapshot: Snapshot
    rows: list[dict]


@dataclass
class TopList:
    """One minute's served list in rank order, as `snapshots` stores it."""

    cmc_ids: list[int] = field(default_factory=list)
    prices_usd: list[float] = field(default_factory=list)
    volumes_24h_usd: list[float | None] = field(default_factory=list)

    def append(self, cmc_id: int, price_usd: float, volume_24h_usd: float | None) -> None:
        self.cmc_ids.append(cmc_id)
        self.prices_usd.append(price_usd)
        self.volumes_24h_usd.append(volume_24h_usd)


EMPTY_LIST = TopList()


@dataclass(frozen=True)
class Merge:
    """What a merge stored, and what it refused to publish (minute -> failed blocking checks)."""

    stored: list[Snapshot]
    quality: dict[datetime, MinuteQuality]
    blocked: dict[datetime, list[str]] = field(default_factory=dict)


def make_engine(url: str, sqlite_busy_timeout: float = 30, **kwargs: Any) -> Engine:
    """An engine with sane pooling; SQLite gets WAL and a busy timeout so readers and the writer
    coexist (a writer waits that long for SQLite's write lock: the API's writes no longer than it waits)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": sqlite_busy_timeout, "check_same_thread": False}
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:
            # pysqlite would start a transaction only at the first INSERT/UPDATE/DELETE, so the
            # reads before it would see another snapshot; writers take the write lock up front.
            immediate = connection.get_execution_options().get("writes", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, **{"pool_pre_ping": True, **kwargs})


def _dialect_insert(engine: Engine, table):
    """An INSERT that knows ON CONFLICT (both dialects spell it the same way)."""
    if engine.dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


def _upsert(engine: Engine, table, keys: list[str], changed: list[str]):
    """INSERT … ON CONFLICT DO UPDATE, rewriting a row only when a `changed` column differs.

    Executed with a list of rows (executemany): compiled once, not once per row like a
    multi-row VALUES, which cost ~6x the CPU for the 1,000 assets of every minute."""
    statement = _dialect_insert(engine, table)
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={c: statement.excluded[c] for c in [*changed, "updated_at"]},
        where=or_(*(table.c[c] != statement.excluded[c] for c in changed)),
    )


class AssetNames:
    """Symbol and name per CMC id for the served rows, kept per process.

    Asking the database for 200 names cost more than the minute itself (~1 ms of planning and
    probes), so they are read once, unknown ids are fetched when they appear, and every name is
    read again each `refresh`: a rename is served at most `refresh` after it commits. Reading
    only rows updated since the last look would miss a rename whose transaction commits after
    that look with an older `updated_at` (a long range write), and keep the old name forever."""

    def __init__(self, refresh: timedelta = timedelta(seconds=60)) -> None:
        self.refresh = refresh
        self._names: dict[int, tuple[str, str]] = {}
        self._checked: datetime | None = None
        self._lock = threading.Lock()

    def of(self, conn, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        with self._lock:
            now = utcnow()
            if self._checked is None or now - self._checked >= self.refresh:
                self._remember(conn.execute(select(assets.c.cmc_id, assets.c.symbol, assets.c.name)))
                self._checked = now
            missing = [cmc_id for cmc_id in ids if cmc_id not in self._names]
            if missing:
                self._remember(conn.execute(select(assets.c.cmc_id, assets.c.symbol, assets.c.name).where(
                    assets.c.cmc_id.in_(missing))))  # fmt: skip
            return self._names

    def _remember(self, rows) -> None:
        self._names.update((cmc_id, (symbol, name)) for cmc_id, symbol, name in rows)


class Warehouse:
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._writer = self.engine.execution_options(writes=True)
        # Postgres: reads without BEGIN/ROLLBACK (SQLite's transactions cost no round trip).
        postgres = self.engine.dialect.name == "postgresql"
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else self.engine
        self.requests = BackfillRequests(self.engine, self._writer)
        self._names = AssetNames()

    # --- schema ---------------------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations up to `revision` (idempotent; to head under a lock, so
        several processes starting at once migrate once)."""
        if revision == "head":
            upgrade_to_head(self.engine)
        else:
            self.migrate("upgrade", revision)

    def migrate(self, direction: str, revision: str) -> None:
        """Run Alembic's `upgrade` or `downgrade` to `revision` in one transaction."""
        from alembic import command

        config = alembic_config()
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, direction)(config, revision)

    # --- writes ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self, start: datetime, end: datetime) -> Iterator[Any]:
        """A transaction that alone writes the minutes in [start, end) until it ends.

        Postgres: an advisory lock per hour of minutes (a second writer of the same minutes waits
        instead of hitting a unique-key violation); SQLite: the database's write lock, taken
        at BEGIN IMMEDIATE."""
        with self._writer.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                first = int(start.timestamp()) // 60 // LOCK_MINUTES
                last = max(first, (-(-int(end.timestamp()) // 60) - 1) // LOCK_MINUTES)
                conn.execute(LOCK_HOURS, {"namespace": MINUTE_LOCK_NAMESPACE, "first": first, "last": last})
            yield conn

    def replace_prices(
        self,
        start: datetime,
        end: datetime,
        rows: Sequence[dict],
        fetch_rows: Sequence[Fetch],
        keep: Sequence[datetime] = (),
    ) -> None:
        """Replace prices of minutes in [start, end) but those in `keep`. Rows carry symbol and name
        for the asset dimension."""
        fact_columns = [c.name for c in prices.columns]
        rows = _first_of_each(rows, ("minute", "cmc_id"))  # concurrent upstream pages can repeat an id
        latest_names = {row["cmc_id"]: row for row in rows}  # later minutes win
        now = utcnow()
        with self._writing(start, end) as conn:
            self._replace(conn, prices, start, end, [{c: r.get(c) for c in fact_columns} for r in rows], keep)
            fetched = [vars(f) for f in fetch_rows]
            self._replace(conn, fetches, start, end, fetched, keep, fetches.c.dataset == "prices")
            dimension = [
                {"cmc_id": cmc_id, "symbol": r["symbol"], "name": r["name"], "updated_at": now}
                for cmc_id, r in sorted(latest_names.items())
            ]
            if dimension:
                conn.execute(_upsert(self.engine, assets, ["cmc_id"], ["symbol", "name"]), dimension)

    def replace_rankings(
        self,
        start: datetime,
        end: datetime,
        rows: Sequence[dict],
        fetch_rows: Sequence[Fetch],
        keep: Sequence[datetime] = (),
    ) -> None:
        """Replace rankings of minutes in [start, end) but those in `keep`."""
        with self._writing(start, end) as conn:
            self._replace(conn, rankings, start, end, rows, keep)
            fetched = [vars(f) for f in fetch_rows]
            self._replace(conn, fetches, start, end, fetched, keep, fetches.c.dataset == "rankings")

    @staticmethod
    def _replace(
        conn, table, start: datetime, end: datetime, rows: Sequence[dict], keep: Sequence[datetime], *scope
    ) -> None:
        """Delete the window's rows of `table` (those matching `scope`) but the minutes in `keep`, then
        insert the `rows` of the other minutes: what was kept is neither deleted nor duplicated."""
        conn.execute(delete(table).where(*scope, _window_except(table.c.minute, start, end, keep)))
        kept = set(keep)
        for chunk in _chunks([row for row in rows if row["minute"] not in kept], 5000):
            conn.execute(insert(table), chunk)

    def merge_top_assets(
        self,
        start: datetime,
        end: datetime,
        depth: int,
        run_id: str | None = None,
        *,
        run_key: str | None = None,
        row_count_threshold: float = 0.9,
        top: int = 100,
    ) -> Merge:
        """Join rankings and prices on CMC id for minutes in [start, end) and publish those that pass.

        Ranks follow the ranking order among the assets that could be priced, renumbered
        1..n (n ≤ depth); an asset ranked twice keeps its best rank. Inside one transaction
        that alone writes these minutes, the blocking checks (warehouse.quality) judge what
        the merge would serve; only minutes that pass, with both datasets fetched, replace
        their `snapshots` row, which holds the served list. A blocked minute keeps its
        previous version, if any. Backfill requests are settled in the same transaction, so a
        request succeeds exactly when its minute became visible; those launched under `run_key`
        (the run's Dagster run key) fail if it did not. Memory is one window's rows.
        """
        in_range = and_(rankings.c.minute >= start, rankings.c.minute < end)
        priced = (
            select(
                rankings.c.minute,
                rankings.c.rank,
                rankings.c.cmc_id,
                prices.c.price_usd,
                rankings.c.volume_24h_usd,
                func.row_number()
                .over(partition_by=[rankings.c.minute, rankings.c.cmc_id], order_by=rankings.c.rank)
                .label("nth_of_asset"),
            )
            .join(prices, PRICED_RANKING)
            .where(in_range)
            .subquery()
        )
        renumbered = (
            select(
                priced.c.minute,
                func.row_number().over(partition_by=priced.c.minute, order_by=priced.c.rank).label("rank"),
                priced.c.cmc_id,
                priced.c.price_usd,
                priced.c.volume_24h_usd,
            )
            .where(priced.c.nth_of_asset == 1)
            .subquery()
        )
        served = select(renumbered).where(renumbered.c.rank <= depth).subquery()
        served_stats = select(
            served.c.minute,
            func.count().label("rows"),
            func.min(served.c.rank).label("min_rank"),
            func.max(served.c.rank).label("max_rank"),
            func.count(served.c.cmc_id.distinct()).label("distinct_cmc_ids"),
            func.min(served.c.price_usd).label("min_price"),
        ).group_by(served.c.minute)
        in_top = rankings.c.rank <= top
        ranking_stats = (
            select(
                rankings.c.minute,
                func.count().label("ranked"),
                func.count(prices.c.cmc_id).label("matched"),
                func.count(case((in_top, 1))).label("top_ranked"),
                func.count(case((and_(in_top, prices.c.cmc_id.is_not(None)), 1))).label("top_matched"),
            )
            .select_from(rankings)
            .outerjoin(prices, PRICED_RANKING)
            .where(in_range)
            .group_by(rankings.c.minute)
        )
        created_at = utcnow()
        with self._writing(start, end) as conn:
            provenance = self._provenance(conn, start, end)
            stats = {row.minute: row._mapping for row in conn.execute(ranking_stats)}
            shapes = {row.minute: row._mapping for row in conn.execute(served_stats)}
            quality = {
                minute: MinuteQuality(
                    minute=minute,
                    rows=shapes.get(minute, {}).get("rows", 0),
                    min_rank=shapes.get(minute, {}).get("min_rank"),
                    max_rank=shapes.get(minute, {}).get("max_rank"),
                    distinct_cmc_ids=shapes.get(minute, {}).get("distinct_cmc_ids", 0),
                    min_price=shapes.get(minute, {}).get("min_price"),
                    ranked=stats.get(minute, {}).get("ranked", 0),
                    matched=stats.get(minute, {}).get("matched", 0),
                    top_ranked=stats.get(minute, {}).get("top_ranked", 0),
                    top_matched=stats.get(minute, {}).get("top_matched", 0),
                )
                for minute in sorted(provenance.keys() | stats.keys())
            }
            blocked = {
                minute: failed
                for minute, q in quality.items()
                if (failed := q.failed_checks(depth, row_count_threshold))
            }
            publishable = [m for m in quality if m in provenance and m not in blocked]
            held_back = [m for m in quality if m not in publishable]
            lists: dict[datetime, TopList] = {}
            served_rows = (
                select(served.c.minute, served.c.cmc_id, served.c.price_usd, served.c.volume_24h_usd)
                .where(_window_except(served.c.minute, start, end, held_back))
                .order_by(served.c.minute, served.c.rank)
            )
            for minute, cmc_id, price, volume in conn.execute(served_rows):
                lists.setdefault(minute, TopList()).append(cmc_id, price, volume)
            merged = [
                Snapshot(
                    minute=minute,
                    row_count=quality[minute].rows,
                    matched=quality[minute].matched,
                    unmatched=quality[minute].ranked - quality[minute].matched,
                    created_at=created_at,
                    **provenance[minute],
                )
                for minute in publishable
            ]
            stored = self._publish(conn, merged, lists)
            for minute, failed in blocked.items():  # a refused capture is fetched again, never kept
                conn.execute(update(fetches).where(fetches.c.minute == minute).values(refused=", ".join(failed)))
            settle(
                conn,
                start,
                end,
                run_id,
                run_key,
                {minute: blocked_error(minute, failed) for minute, failed in blocked.items()},
            )
        return Merge(stored, quality, blocked)

    @staticmethod
    def _publish(conn, merged: list[Snapshot], lists: dict[datetime, TopList]) -> list[Snapshot]:
        """Replace the snapshots of the merged minutes, but leave a minute whose stored snapshot is
        already exactly this (its raw rows kept, merged again by a range): its `created_at`, and so
        the API's Last-Modified and every cache of it, stay as they were. Returns what is served now."""
        current = {}
        for minutes in _chunks([s.minute for s in merged], 1000):
            rows = conn.execute(select(*SNAPSHOT_FIELDS, *TOP_LIST_FIELDS).where(snapshots.c.minute.in_(minutes)))
            current.update((row.minute, row) for row in rows)
        served, changed = [], []
        for snapshot in merged:
            row = {**vars(snapshot), **vars(lists.get(snapshot.minute, EMPTY_LIST))}
            stored = current.get(snapshot.minute)
            if stored is not None and all(stored._mapping[k] == v for k, v in row.items() if k != "created_at"):
                served.append(Snapshot(*stored[: len(SNAPSHOT_FIELDS)]))
            else:
                served.append(snapshot)
                changed.append(row)
        for rows in _chunks(changed, 1000):
            conn.execute(delete(snapshots).where(snapshots.c.minute.in_([row["minute"] for row in rows])))
            conn.execute(insert(snapshots), rows)
        return served

    @staticmethod
    def _provenance(conn, start: datetime, end: datetime) -> dict[datetime, dict]:
        """Per minute with both datasets fetched: live or emulated, price provider, fetch time."""
        by_minute: dict[datetime, dict[str, Any]] = {}
        for f in conn.execute(select(fetches).where(fetches.c.minute >= start, fetches.c.minute < end)):
            by_minute.setdefault(f.minute, {})[f.dataset] = f
        return {
            minute: {
                "source": "emulated" if any(f.emulated for f in pair.values()) else "live",
                "price_source": pair["prices"].provider,
                "fetched_at": max(f.fetched_at for f in pair.values()),
                "live": all(f.mode == "latest" for f in pair.values()),
            }
            for minute, pair in by_minute.items()
            if set(FETCHED) <= pair.keys()
        }

    def prune_raw(self, fetched_before: datetime) -> dict[str, int]:
        """Delete the raw upstream rows (`prices`, `rankings`, `fetches`) fetched before the
        cutoff, one clock hour of minutes per transaction; returns the rows deleted per table.

        Retention counts from the fetch, not from the minute: a past minute backfilled today
        stays auditable as long as a live one. Each batch holds the write lock of its minutes
        (on SQLite the whole database's) and re-reads what is old under it, so a minute being
        fetched again is never emptied, and a live write waits for one hour's rows (~75,000),
        not for a day's. Served snapshots are never touched."""
        deleted = dict.fromkeys(("prices", "rankings", "fetches"), 0)
        old = and_(fetches.c.fetched_at < fetched_before, fetches.c.dataset.in_(FETCHED))  # each pass deletes them
        while True:
            with self.engine.connect() as conn:
                first = conn.execute(select(func.min(fetches.c.minute)).where(old)).scalar()
            if first is None:
                return deleted
            start = first.replace(minute=0, second=0, microsecond=0)
            end = start + timedelta(minutes=LOCK_MINUTES)  # one lock: what turned old since is read under it
            with self._writing(start, end) as conn:
                in_hour = and_(fetches.c.minute >= start, fetches.c.minute < end)
                found = conn.execute(select(fetches.c.minute, fetches.c.dataset).where(old, in_hour))
                found = found.all()
                for table in (prices, rankings):
                    minutes = [minute for minute, dataset in found if dataset == table.name]
                    if minutes:
                        deleted[table.name] += conn.execute(delete(table).where(table.c.minute.in_(minutes))).rowcount
                        fetched = delete(fetches).where(fetches.c.dataset == table.name, fetches.c.minute.in_(minutes))
                        deleted["fetches"] += conn.execute(fetched).rowcount

    def captured_live(self, start: datetime, end: datetime) -> list[datetime]:
        """The minutes in [start, end) captured live: a snapshot from the latest endpoints (its raw
        rows may be pruned since), or both datasets' raw rows fetched from them. A reconstruction
        would differ. A minute with one dataset only from them (the other upstream failed for the
        live window), or whose live capture the blocking checks refused, has nothing live to serve:
        keeping it would leave it without a snapshot for ever."""
        in_window = and_(snapshots.c.minute >= start, snapshots.c.minute < end)
        latest = and_(
            fetches.c.mode == "latest", fetches.c.refused.is_(None), fetches.c.minute >= start, fetches.c.minute < end
        )
        both_latest = (
            select(fetches.c.minute).where(latest).group_by(fetches.c.minute).having(func.count() == len(FETCHED))
        )
        query = select(snapshots.c.minute).where(in_window, snapshots.c.live).union(both_latest)
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def fetched_since(self, start: datetime, end: datetime, dataset: str, since: datetime) -> bool:
        """Whether every minute in [start, end) has `dataset` stored by a fetch at or after `since`."""
        query = select(func.count()).where(
            fetches.c.dataset == dataset,
            fetches.c.minute >= start,
            fetches.c.minute < end,
            fetches.c.fetched_at >= since,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one() == (end - start) // timedelta(minutes=1)

    # --- reads ----------------------------------------------------------------------------
    def unmatched_symbols(self, minute: datetime, limit: int = 20) -> list[str]:
        """Ranked symbols at `minute` that no price matched, best rank first."""
        query = (
            select(rankings.c.symbol)
            .outerjoin(prices, PRICED_RANKING)
            .where(rankings.c.minute == minute, prices.c.cmc_id.is_(None))
            .order_by(rankings.c.rank)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def served_at_or_before(self, moment: datetime, tolerance: timedelta, limit: int) -> Served | None:
        """The newest snapshot in (moment - tolerance, moment] with its first `limit` rows by rank.

        What `GET /` asks of the database: one index lookup, one statement, one pooled connection."""
        query = (
            select(*SNAPSHOT_FIELDS, *TOP_LIST_FIELDS)
            .where(snapshots.c.minute <= moment, snapshots.c.minute > moment - tolerance)
            .order_by(snapshots.c.minute.desc())
            .limit(1)
        )

        def lookup(conn) -> Served | None:
            row = conn.execute(query).first()
            if row is None:
                return None
            snapshot = Snapshot(*row[: len(SNAPSHOT_FIELDS)])
            ids, prices_usd, volumes = (column[:limit] for column in row[len(SNAPSHOT_FIELDS) :])
            names = self._names.of(conn, ids)
            rows = [
                {
                    "rank": rank,
                    "symbol": names[cmc_id][0],
                    "name": names[cmc_id][1],
                    "cmc_id": cmc_id,
                    "price_usd": price,
                    "volume_24h_usd": volume,
                }  # fmt: skip
                for rank, (cmc_id, price, volume) in enumerate(zip(ids, prices_usd, volumes, strict=True), start=1)
            ]
            return Served(snapshot, rows)

        return self.read(lookup)

    def snapshot_at_or_before(self, moment: datetime, tolerance: timedelta) -> Snapshot | None:
        """The newest snapshot in (moment - tolerance, moment]."""
        served = self.served_at_or_before(moment, tolerance, 0)
        return served.snapshot if served else None

    def snapshot_rows(self, minute: datetime, limit: int) -> list[dict]:
        """The served rows of the snapshot of `minute` by rank (none if it is not stored)."""
        served = self.served_at_or_before(minute, ONE_MINUTE, limit)
        return served.rows if served and served.snapshot.minute == minute else []

    def latest_snapshot(self) -> Snapshot | None:
        query = select(*SNAPSHOT_FIELDS).order_by(snapshots.c.minute.desc()).limit(1)
        row = self.read(lambda conn: conn.execute(query).first())
        return Snapshot(*row) if row else None

    def read(self, work: Callable[[Connection], T]) -> T:
        """Reads on one pooled connection outside a transaction: a single statement needs none, and
        BEGIN and the ROLLBACK at check-in would be two more round trips on Postgres.

        Engines made with `pool_pre_ping=False` (the API's) find a dropped connection (a restarted
        database) by using it; SQLAlchemy then invalidates every pooled connection, and the read
        is tried once more on a new one, so the caller never sees the stale connection."""
        try:
            with self._reader.connect() as conn:
                return work(conn)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        with self._reader.connect() as conn:
            return work(conn)

    def ranked_near(self, minute: datetime, limit: int, fetched_before: datetime | None = None) -> list[dict]:
        """The stored ranking nearest to `minute`, best rank first (candidates for a past minute);
        with `fetched_before`, among the rankings fetched before then only. Searched in `fetches`
        (one row a minute, its primary key led by the minute), not in the rankings themselves."""
        stored = and_(fetches.c.dataset == "rankings", fetches.c.records > 0)
        if fetched_before is not None:
            stored = and_(stored, fetches.c.fetched_at < fetched_before)
        before = select(func.max(fetches.c.minute)).where(stored, fetches.c.minute <= minute).scalar_subquery()
        after = select(func.min(fetches.c.minute)).where(stored, fetches.c.minute > minute).scalar_subquery()
        with self.engine.connect() as conn:
            earlier, later = conn.execute(select(before, after)).one()
            if earlier is None and later is None:
                return []
            nearest = min((m for m in (earlier, later) if m is not None), key=lambda m: abs(m - minute))
            query = select(rankings).where(rankings.c.minute == nearest).order_by(rankings.c.rank).limit(limit)
            return [dict(row._mapping) for row in conn.execute(query)]


def _window_except(column, start: datetime, end: datetime, excluded: Sequence[datetime]):
    """The minutes in [start, end) but the excluded ones (those a write keeps as they are)."""
    window = and_(column >= start, column < end)
    return and_(window, column.not_in(excluded)) if excluded else window


def _first_of_each(rows: Sequence[dict], key: tuple[str, ...]) -> list[dict]:
    """`rows` without repeats of `key`, the first occurrence kept."""
    seen: dict[tuple, dict] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in key), row)
    return list(seen.values())


def _chunks(rows: list, size: int) -> Iterable[list]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
