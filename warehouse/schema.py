"""The warehouse schema (SQLAlchemy Core), identical on SQLite and Postgres.

`top_assets` is the table that grows (a year of top-200 minutes is ~105M rows), so it is
narrow: ids and numbers only; symbols and names live once per asset in `assets`.
Alembic migrations under `warehouse/migrations` create exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python; `timestamptz` on Postgres, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the warehouse stores UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

assets = Table(
    "assets",
    metadata,
    Column("cmc_id", BigInteger, primary_key=True, autoincrement=False),
    Column("symbol", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

prices = Table(
    "prices",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("cmc_id", BigInteger, primary_key=True, autoincrement=False),
    Column("price_usd", Float, nullable=False),
    Column("volume_24h_usd", Float),
    Column("market_cap_usd", Float),
    Column("last_updated", UTCDateTime),
)

fetches = Table(
    "fetches",
    metadata,
    # Provenance of each stored minute: which upstream, live or emulated, latest or historical.
    Column("minute", UTCDateTime, primary_key=True),
    Column("dataset", String(16), primary_key=True),  # prices | rankings
    Column("provider", String(32), nullable=False),  # coinmarketcap | cryptocompare
    Column("emulated", Boolean, nullable=False),
    Column("mode", String(16), nullable=False),  # latest | historical
    Column("records", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("fetched_at", UTCDateTime, nullable=False),
)

rankings = Table(
    "rankings",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("cc_id", BigInteger, nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("name", String(256), nullable=False),
    Column("cmc_id", BigInteger),
    Column("volume_24h_usd", Float),
)

top_assets = Table(
    "top_assets",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("cmc_id", BigInteger, nullable=False),
    Column("price_usd", Float, nullable=False),
    Column("volume_24h_usd", Float),
)

snapshots = Table(
    "toplist_snapshots",  # not "snapshots": Dagster has a table of that name when both share a database
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("row_count", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    Column("unmatched", Integer, nullable=False),
    Column("source", String(32), nullable=False),  # "live" or "emulated"
    Column("price_source", String(32), nullable=False),
    Column("fetched_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

backfill_requests = Table(
    "backfill_requests",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("status", String(16), nullable=False),  # requested | launched | succeeded | failed
    Column("requested_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("run_id", String(64)),
    Column("error", Text),
    Index("ix_backfill_requests_status", "status", "minute"),
)
