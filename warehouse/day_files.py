"""Day files: the served history as one Parquet file per UTC day, for analysts and the range routes.

Layout (Hive partitioning, so DuckDB, polars, Spark and Trino see a `day` column without our code):

    <HISTORY_DIR>/day=YYYY-MM-DD/minutes.parquet

Each file holds every stored minute of its day as long rows (`columns()`), sorted by minute and rank,
zstd-compressed, with what it holds in its key-value metadata (`day`, `minutes`, `expected_minutes`,
`missing_minutes`, `last_created_at`): a day with holes is never passed off as complete. The same
figures are a row of `history_day_files` in the warehouse, which says when a file is stale (a minute
of its day written after it).

A file is written to a hidden temporary name in its folder, judged by the checks (`judge`), and only
then renamed over the previous one: a reader sees the old file or the new one, never a partial one,
and never one that failed a blocking check. Nothing here imports Dagster: the pipeline writes the
files, the API reads them.
"""

from __future__ import annotations

import os
import sys
import uuid
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import LargeBinary, delete, func, insert, select, type_coerce

from warehouse.coverage import as_date, as_utc, day_of, missing_ranges
from warehouse.database import Database, chunks, utcnow
from warehouse.publish import TOP_LIST_FIELDS
from warehouse.schema import ONE_MINUTE, assets, history_day_files, snapshots

# DuckDB and pyarrow are imported where they are used: the API imports the warehouse, and importing
# both costs it about half a second of its start.
if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

ONE_DAY = timedelta(days=1)
FILE_NAME = "minutes.parquet"
# zstd at level 9 and Parquet v2 encodings: the smallest files of the settings measured
# (bench/history_files.py); writing a day stays well under a second.
COPY_OPTIONS = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 9, PARQUET_VERSION V2"

COLUMN_NAMES = (
    *("minute", "rank", "cmc_id", "symbol", "name", "price_usd", "volume_24h_usd"),
    # Provenance of the minute: the upstreams live or emulated, and captured live or reconstructed
    # from the historical endpoints. Constant within a minute, so nearly free once encoded.
    *("source", "live"),
)
NAMES = ", ".join(COLUMN_NAMES)


@cache
def columns() -> pa.Schema:
    """The files' Arrow schema: `COLUMN_NAMES` with their types."""
    import pyarrow as pa

    types = [pa.timestamp("us", tz="UTC"), pa.int32(), pa.int64(), pa.string(), pa.string(), pa.float64(),
             pa.float64(), pa.string(), pa.bool_()]  # fmt: skip
    return pa.schema(list(zip(COLUMN_NAMES, types, strict=True)))


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def expected_minutes(day: date, history_start: datetime) -> int:
    """The minutes of `day` the pipeline could have stored: those since HISTORY_START."""
    start, end = max(day_start(day), history_start), day_start(day) + ONE_DAY
    return max(0, (end - start) // ONE_MINUTE)


@dataclass(frozen=True)
class DayState:
    """What the warehouse holds of a day: how many minutes, and when the newest was written."""

    minutes: int
    last_created_at: datetime | None


@dataclass(frozen=True)
class DayFileRecord:
    day: date
    minutes: int
    expected_minutes: int
    rows: int
    bytes: int
    last_created_at: datetime
    written_at: datetime

    def describes(self, state: DayState) -> bool:
        """Whether the file holds the day as the warehouse holds it now."""
        return (self.minutes, self.last_created_at) == (state.minutes, state.last_created_at)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str


class DayFiles:
    """The folder of day files: where each day's file is, how one is written, and how to read them."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, day: date) -> Path:
        return self.root / f"day={day.isoformat()}" / FILE_NAME

    @property
    def pattern(self) -> str:
        """The glob that reads every day (`read_parquet(pattern, hive_partitioning = true)`)."""
        return str(self.root / "*" / "*.parquet")

    def days(self) -> list[date]:
        """The days that have a file, oldest first."""
        return sorted(
            date.fromisoformat(p.parent.name.removeprefix("day=")) for p in self.root.glob(f"day=*/{FILE_NAME}")
        )

    def relation(self, con: duckdb.DuckDBPyConnection, days: Iterable[date]) -> duckdb.DuckDBPyRelation | None:
        """The rows of those of `days` that have a file, as one DuckDB relation (None if none has)."""
        paths = [str(path) for day in days if (path := self.path(day)).exists()]
        return con.read_parquet(paths, hive_partitioning=True) if paths else None

    def write_pending(self, day: date, table: pa.Table, metadata: dict[str, str]) -> Path:
        """Write `table` as `day`'s file under a hidden temporary name beside it (no glob of
        `*.parquet` matches it) and return that name; `publish` or `discard` it next."""
        import duckdb

        folder = self.path(day).parent
        folder.mkdir(parents=True, exist_ok=True)
        pending = folder / f".{FILE_NAME}.{uuid.uuid4().hex}.tmp"
        kv = ", ".join(f"{key}: '{value}'" for key, value in metadata.items())
        con = duckdb.connect()
        try:
            con.register("day_rows", table)
            con.execute(
                f"COPY (SELECT {NAMES} FROM day_rows ORDER BY minute, rank) TO '{pending}' "
                f"({COPY_OPTIONS}, KV_METADATA {{{kv}}})"
            )
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        finally:
            con.close()
        with open(pending, "rb") as written:
            os.fsync(written.fileno())  # on disk before the rename makes it the day's file
        return pending

    def publish(self, pending: Path, day: date) -> int:
        """Make a pending file `day`'s file in one rename; returns its size in bytes."""
        final = self.path(day)
        os.replace(pending, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        return final.stat().st_size

    @staticmethod
    def discard(pending: Path) -> None:
        pending.unlink(missing_ok=True)


def judge(file: Path, stored: pa.Table) -> dict[str, Verdict]:
    """The checks of a day file against the warehouse's rows of its day (`stored`, read through the
    served path): exactly the stored minutes, ranks 1..N per minute without gap or duplicate, and
    the same rows."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("stored", stored)
        con.execute(f"CREATE VIEW file AS SELECT {NAMES} FROM read_parquet('{file}')")
        missing, extra = (
            con.execute(
                "SELECT count(*), min(minute) FROM "
                f"(SELECT DISTINCT minute FROM {a} EXCEPT SELECT DISTINCT minute FROM {b})"
            ).fetchone()
            for a, b in (("stored", "file"), ("file", "stored"))
        )
        bad_ranks = con.execute(
            "SELECT count(*), min(minute) FROM (SELECT minute FROM file GROUP BY minute HAVING min(rank) <> 1 "
            "OR max(rank) <> count(*) OR count(DISTINCT rank) <> count(*))"
        ).fetchone()
        absent, foreign = (
            con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0]
            for a, b in (("stored", "file"), ("file", "stored"))
        )
    finally:
        con.close()

    def first(count_and_minute: tuple) -> str:
        count, minute = count_and_minute
        return f"{count} (first {minute:%Y-%m-%d %H:%M})" if count else "0"

    return {
        "minutes_as_stored": Verdict(
            not missing[0] and not extra[0],
            f"stored minutes missing from the file: {first(missing)}; minutes not stored: {first(extra)}",
        ),
        "ranks_contiguous": Verdict(
            not bad_ranks[0], f"minutes whose ranks are not 1..N without gaps or duplicates: {first(bad_ranks)}"
        ),
        "rows_as_stored": Verdict(
            not absent and not foreign, f"stored rows missing from the file: {absent}; rows not stored: {foreign}"
        ),
    }


def minutes_in(ranges: list[tuple[datetime, datetime]]) -> int:
    """How many minutes [from, to) ranges hold."""
    return sum((end - start) // ONE_MINUTE for start, end in ranges)


def _unpacked(blobs: list[bytes], arrow_type: pa.DataType, typecode: str) -> pa.Array:
    """The big-endian packed arrays of several minutes as one Arrow array (NaN → null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = array(typecode)
    values.frombytes(b"".join(blobs))
    if sys.byteorder == "little":
        values.byteswap()
    unpacked = pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])
    return pc.if_else(pc.is_nan(unpacked), None, unpacked) if typecode == "d" else unpacked


class DayFileStore(Database):
    """The warehouse's side of the day files: a day's rows, its state, and the files' records."""

    def day_rows(self, day: date) -> tuple[pa.Table, datetime | None]:
        """Every stored minute of `day` as long rows in `columns()` (one query for the minutes, one
        for the names), and the newest snapshot's `created_at`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        start = day_start(day)
        packed = [type_coerce(column, LargeBinary) for column in TOP_LIST_FIELDS]
        query = (
            select(snapshots.c.minute, snapshots.c.source, snapshots.c.live, snapshots.c.created_at, *packed)
            .where(snapshots.c.minute >= start, snapshots.c.minute < start + ONE_DAY)
            .order_by(snapshots.c.minute)
        )
        minutes = self.read(lambda conn: conn.execute(query).all())
        if not minutes:
            return columns().empty_table(), None
        ids = _unpacked([m.cmc_ids for m in minutes], pa.int32(), "i")
        counts = [len(m.cmc_ids) // 4 for m in minutes]
        per_row = pa.array([i for i, count in enumerate(counts) for _ in range(count)], pa.int32())
        names = self._names_of(pc.unique(ids).to_pylist())
        known = pa.array(list(names), pa.int64())
        where = pc.index_in(pc.cast(ids, pa.int64()), value_set=known)
        table = pa.table(
            {
                "minute": pc.take(pa.array([m.minute for m in minutes], columns().field("minute").type), per_row),
                "rank": pa.array([rank for count in counts for rank in range(1, count + 1)], pa.int32()),
                "cmc_id": pc.cast(ids, pa.int64()),
                "symbol": pc.take(pa.array([n[0] for n in names.values()], pa.string()), where),
                "name": pc.take(pa.array([n[1] for n in names.values()], pa.string()), where),
                "price_usd": _unpacked([m.prices_usd for m in minutes], pa.float64(), "d"),
                "volume_24h_usd": _unpacked([m.volumes_24h_usd for m in minutes], pa.float64(), "d"),
                "source": pc.take(pa.array([m.source for m in minutes], pa.string()), per_row),
                "live": pc.take(pa.array([m.live for m in minutes], pa.bool_()), per_row),
            },
            schema=columns(),
        )
        return table, max(m.created_at for m in minutes)

    def served_day_rows(self, day: date) -> pa.Table:
        """The same rows as `day_rows`, read another way: through the column types the API's
        lookups decode with, row by row. The checks compare a file with this."""
        import pyarrow as pa

        start = day_start(day)
        query = (
            select(snapshots.c.minute, snapshots.c.source, snapshots.c.live, *TOP_LIST_FIELDS)
            .where(snapshots.c.minute >= start, snapshots.c.minute < start + ONE_DAY)
            .order_by(snapshots.c.minute)
        )
        minutes = self.read(lambda conn: conn.execute(query).all())
        names = self._names_of(sorted({cmc_id for m in minutes for cmc_id in m.cmc_ids}))
        by_name: dict[str, list] = {name: [] for name in COLUMN_NAMES}
        for m in minutes:
            count = len(m.cmc_ids)
            for name, values in (
                ("minute", [m.minute] * count),
                ("rank", range(1, count + 1)),
                ("cmc_id", m.cmc_ids),
                ("symbol", [names[cmc_id][0] for cmc_id in m.cmc_ids]),
                ("name", [names[cmc_id][1] for cmc_id in m.cmc_ids]),
                ("price_usd", m.prices_usd),
                ("volume_24h_usd", m.volumes_24h_usd),
                ("source", [m.source] * count),
                ("live", [m.live] * count),
            ):
                by_name[name].extend(values)
        return pa.table(by_name, schema=columns())

    def _names_of(self, ids: list[int]) -> dict[int, tuple[str, str]]:
        query = select(assets.c.cmc_id, assets.c.symbol, assets.c.name)

        def read(conn) -> dict[int, tuple[str, str]]:
            found = {}
            for part in chunks(ids, 1000):
                found.update((i, (s, n)) for i, s, n in conn.execute(query.where(assets.c.cmc_id.in_(part))))
            return found

        return self.read(read)

    def day_states(self, days: Iterable[date]) -> dict[date, DayState]:
        """Per day, its stored minutes and the newest `created_at` (one index range each)."""

        def read(conn) -> dict[date, DayState]:
            states = {}
            for day in days:
                start = day_start(day)
                query = select(func.count(), func.max(snapshots.c.created_at)).where(
                    snapshots.c.minute >= start, snapshots.c.minute < start + ONE_DAY
                )
                count, newest = conn.execute(query).one()
                states[day] = DayState(count, as_utc(newest) if newest is not None else None)
            return states

        return self.read(read)

    def days_written_since(self, since: datetime | None, first_minute: datetime) -> tuple[set[date], datetime | None]:
        """The days (from `first_minute` on) that have a snapshot written after `since` (every day
        if None), and the newest `created_at` among them: an index range on `created_at`."""

        def read(conn) -> list:
            day = day_of(snapshots.c.minute, conn.dialect.name)
            query = select(day, func.max(snapshots.c.created_at)).where(snapshots.c.minute >= first_minute)
            if since is not None:
                query = query.where(snapshots.c.created_at > since)
            return conn.execute(query.group_by(day)).all()

        per_day = {as_date(day): as_utc(newest) for day, newest in self.read(read)}
        return set(per_day), max(per_day.values(), default=None)

    def day_file_records(self, days: Iterable[date]) -> dict[date, DayFileRecord]:
        query = select(*history_day_files.c).where(history_day_files.c.day.in_(list(days)))
        return {row.day: DayFileRecord(**row._mapping) for row in self.read(lambda conn: conn.execute(query).all())}

    def record_day_file(self, record: DayFileRecord) -> None:
        with self._writer.begin() as conn:
            conn.execute(delete(history_day_files).where(history_day_files.c.day == record.day))
            conn.execute(insert(history_day_files), [vars(record)])


def write_day_file(
    store: DayFileStore, files: DayFiles, day: date, history_start: datetime
) -> tuple[DayFileRecord | None, dict[str, Verdict], list[tuple[datetime, datetime]]]:
    """Write `day`'s file from the warehouse: pending, judged, then published and recorded only if
    every check passed. Returns the record (None if not published), the verdicts, and the day's
    missing minutes as [from, to) ranges (warehouse.coverage). A day without a stored minute gets
    no file."""
    import pyarrow.compute as pc

    first, end = max(day_start(day), history_start), day_start(day) + ONE_DAY
    table, last_created_at = store.day_rows(day)
    if last_created_at is None:
        return None, {}, [(first, end)]
    holes = missing_ranges(store, first, end)
    minutes, expected = pc.count_distinct(table["minute"]).as_py(), expected_minutes(day, history_start)
    metadata = {
        "day": day.isoformat(),
        "minutes": str(minutes),
        "expected_minutes": str(expected),
        "missing_minutes": str(minutes_in(holes)),
        "last_created_at": last_created_at.isoformat(),
    }
    pending = files.write_pending(day, table, metadata)
    try:
        verdicts = judge(pending, store.served_day_rows(day))
        if not all(v.passed for v in verdicts.values()):
            return None, verdicts, holes
        size = files.publish(pending, day)
    finally:
        files.discard(pending)
    record = DayFileRecord(day, minutes, expected, table.num_rows, size, last_created_at, utcnow())
    store.record_day_file(record)
    return record, verdicts, holes
