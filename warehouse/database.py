"""The warehouse's database: one engine per process, and the ways every module uses it.

`Database` is the base of `warehouse.store.Warehouse`: reads outside a transaction (retried once
on a dropped connection), writes that alone own the minutes they replace, and the schema's
migrations. The modules beside it (ingest, merge, serve, retention) each add one concern on top.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from warehouse.migrate import alembic_config
from warehouse.migrate import upgrade as upgrade_to_head

# Postgres advisory locks (two-int key space: this namespace, the unix hour) serializing the
# writers of the minutes of one hour; taken in ascending order, so overlapping windows never
# deadlock. One lock per hour, not per minute: each lock takes a slot of the server's shared lock
# table (~max_locks_per_transaction x max_connections), which a lock per minute of a long window
# (a week's chunk) exhausts ("out of shared memory").
MINUTE_LOCK_NAMESPACE = 0x746F70
LOCK_MINUTES = 60
LOCK_HOURS = text("SELECT count(pg_advisory_xact_lock(:namespace, h)) FROM generate_series(:first, :last) AS h")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def dialect_insert(engine: Engine, table):
    """An INSERT that knows ON CONFLICT (both dialects spell it the same way)."""
    if engine.dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


def chunks(rows: list, size: int) -> Iterable[list]:
    """`rows` in lists of at most `size`: a statement's parameters stay within every driver's bounds."""
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


class Database:
    """The engine and the roles a connection is taken in: reader, writer of minutes, migrator."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._writer = self.engine.execution_options(writes=True)
        # Postgres: reads without BEGIN/ROLLBACK (SQLite's transactions cost no round trip).
        postgres = self.engine.dialect.name == "postgresql"
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT") if postgres else self.engine

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

    @contextmanager
    def writing(self, start: datetime, end: datetime) -> Iterator[Connection]:
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
