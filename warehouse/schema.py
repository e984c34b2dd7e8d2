"""The warehouse schema (SQLAlchemy Core), identical on SQLite and Postgres.

What grows is the served history: one `toplist_snapshots` row per minute, forever. Its
top list is three packed arrays in that row (ids, prices, volumes in rank order), so a
year is 525,600 rows, and serving a minute is one primary-key lookup (docs/storage.md#the-served-layout).
Symbols and names live once per asset in `assets`. The raw upstream rows (`prices`,
`rankings`, `fetches`) are kept for `RAW_RETENTION_DAYS`, then pruned.
Alembic migrations under `warehouse/migrations` create exactly these tables.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
)

ONE_MINUTE = timedelta(minutes=1)  # the grain of the warehouse: every minute-keyed row holds one whole UTC minute


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


class PackedArray(TypeDecorator):
    """A list of numbers stored as one binary value, big-endian (as Postgres' int4send and
    float8send write them, so SQL can produce the same bytes). `None` is stored as NaN.

    200 rows of a minute become 800 + 1,600 + 1,600 bytes in one row instead of 200 rows of
    ~100 bytes each; the typecodes are those of `array`: "i" int32, "d" float64."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, typecode: str) -> None:
        super().__init__()
        self.typecode = typecode

    def process_bind_param(self, value: Sequence[float | int | None] | None, dialect) -> bytes | None:
        if value is None:
            return None
        try:
            packed = array(self.typecode, (math.nan if v is None else v for v in value))
        except OverflowError:
            raise ValueError(
                f"PackedArray({self.typecode!r}) cannot hold a value here: int32 is -2**31 to 2**31 - 1"
            ) from None
        if sys.byteorder == "little":
            packed.byteswap()
        return packed.tobytes()

    def process_result_value(self, value: bytes | None, dialect) -> list | None:
        if value is None:
            return None
        unpacked = array(self.typecode, value)
        if sys.byteorder == "little":
            unpacked.byteswap()
        if self.typecode == "d":
            return [None if math.isnan(v) else v for v in unpacked]
        return unpacked.tolist()


metadata = MetaData()
TOAST_TUPLE_TARGET = 4080

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
    # The blocking checks that refused to publish the minute merged from this capture (the merge sets
    # it): a refused live capture is fetched again, never kept (docs/architecture.md#time-and-partitions).
    Column("refused", Text),
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
    # Captured from the latest endpoints within its minute's live window: never replaced by a
    # reconstruction from the historical ones unless a run is told to (docs/architecture.md#time-and-partitions).
    Column("live", Boolean, nullable=False, server_default=false()),
    # The served top list in rank order (rank = position + 1): what `top_assets` produces.
    Column("cmc_ids", PackedArray("i"), nullable=False),
    Column("prices_usd", PackedArray("d"), nullable=False),
    Column("volumes_24h_usd", PackedArray("d"), nullable=False),
    # The healer heals from the first minute captured live: found in a tiny index, not a scan of the year.
    Index("ix_toplist_snapshots_live", "minute", postgresql_where=text("live"), sqlite_where=text("live = 1")),
    # Coverage (GET /coverage) counts per day from the index alone: the rows hold up to 4 KB each.
    Index("ix_toplist_snapshots_provenance", "minute", "live", "source"),
    # The day files' sensor finds the minutes written since its last tick here, not in a scan of the year.
    Index("ix_toplist_snapshots_created_at", "created_at"),
    # Up to 4 KB stays in the row: at depth 200 one value goes to TOAST, not two (docs/storage.md#the-served-layout).
    postgresql_with={"toast_tuple_target": TOAST_TUPLE_TARGET},
)

backfill_requests = Table(
    "backfill_requests",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    # The lifecycle (states and transitions) is warehouse/requests.py.
    Column("status", String(16), nullable=False),  # requested | launched | succeeded | failed
    Column("requested_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("run_id", String(64)),  # the Dagster run id, once Dagster has created the run
    Column("error", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),  # runs Dagster created for it
    Column("run_key", String(128)),  # the run key handed to Dagster for the current attempt
    Column("submitted_at", UTCDateTime),  # when that run key was handed over
    # failed for a reason retrying cannot fix (the backoff before another attempt counts from updated_at)
    Column("permanent", Boolean, nullable=False, server_default=false()),
    # Why the minute is owed: asked (a 202), stand-in (a past minute served from an earlier one) or healer.
    Column("origin", String(16), nullable=False, server_default="asked"),
    Index("ix_backfill_requests_status", "status", "minute"),
    Index("ix_backfill_requests_run_key", "run_key"),
)

history_day_files = Table(
    "history_day_files",
    metadata,
    # What each day file holds (warehouse.day_files): the sensor that keeps the files current compares a
    # day's stored minutes with this record, and the range routes know which days a file serves.
    Column("day", Date, primary_key=True),
    Column("minutes", Integer, nullable=False),  # the day's stored minutes the file holds
    Column("expected_minutes", Integer, nullable=False),  # the day's minutes since HISTORY_START
    Column("rows", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("last_created_at", UTCDateTime, nullable=False),  # the newest snapshot written into the file
    Column("written_at", UTCDateTime, nullable=False),
)
