"""The day files: bytes per row, write time and a year's size, against DuckDB reading the same file.

    .venv/bin/python -m bench.history_files [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Creates a scratch database next to the one in --url (TEST_POSTGRES_URL by default), migrated to the
production schema, and stores a day of 1,440 minutes at --depth (200) in it from the emulator's
market (emulator.market), minute by minute: real symbols and names, prices at real scales that move
each minute, volumes that drift and reorder the ranks; what a deployment on the emulator stores.
(bench.lookup's SQL fill is not used: its prices are drawn once per statement, so its minutes are
alike and compress far better than any real day.)

It times what `history_day_file` does (warehouse.day_files.write_day_file: the day's
read and unpacking, DuckDB's COPY to Parquet, the checks, the rename, the record), and prints
bytes per row and a year of such files (x 365) against the issue's goal of 1 GB, with two anchors
measured in the same run: DuckDB's own COPY of the same Arrow table (the write without our code)
and DuckDB reading the whole file back. Drops the scratch database at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from bench.lookup import DEFAULT_URL
from emulator.market import Market
from warehouse.day_files import COPY_OPTIONS, DayFiles, day_start, write_day_file
from warehouse.schema import assets, snapshots
from warehouse.store import Warehouse

GOAL_BYTES_PER_YEAR = 1e9
DAY = date(2026, 11, 2)


def fill_day(store: Warehouse, day: date, depth: int) -> None:
    """The emulator market's top `depth` of each minute of `day`, as the merge stores it."""
    market, start = Market(3000), day_start(day)
    with store.engine.begin() as conn:
        conn.execute(
            insert(assets),
            [{"cmc_id": a.cmc_id, "symbol": a.cmc_symbol, "name": a.name, "updated_at": start}
             for a in market.assets],
        )  # fmt: skip
    rows = []
    for i in range(1440):
        minute = start + timedelta(minutes=i)
        unix_minute = int(minute.timestamp() // 60)
        ranked = market.ranked_by_volume(unix_minute)[:depth]
        rows.append(
            {"minute": minute, "row_count": depth, "matched": depth, "unmatched": 0, "source": "emulated",
             "price_source": "coinmarketcap", "fetched_at": minute, "created_at": minute, "live": True,
             "cmc_ids": [a.cmc_id for a in ranked],
             "prices_usd": [a.price(unix_minute) for a in ranked],
             "volumes_24h_usd": [a.volume_24h(unix_minute) for a in ranked]}
        )  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(snapshots), rows)


def timed(call, repeat: int) -> tuple[float, object]:
    """The median wall time of `repeat` calls in seconds, and the last call's result."""
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), result


def measure(store: Warehouse, files: DayFiles, day: date, repeat: int) -> None:
    history_start = day_start(day)
    written, (record, verdicts, _) = timed(lambda: write_day_file(store, files, day, history_start), repeat)
    assert record is not None and all(v.passed for v in verdicts.values()), verdicts
    read, (table, _) = timed(lambda: store.day_rows(day), repeat)
    anchor_file = files.root / f"anchor-{day}.parquet"

    def duckdb_copy() -> None:
        with duckdb.connect() as con:
            con.register("day_rows", table)
            con.execute(f"COPY (SELECT * FROM day_rows ORDER BY minute, rank) TO '{anchor_file}' ({COPY_OPTIONS})")

    copied, _ = timed(duckdb_copy, repeat)

    def duckdb_read() -> int:
        with duckdb.connect() as con:
            return con.sql(f"SELECT * FROM '{files.path(day)}'").to_arrow_table().num_rows

    read_back, rows = timed(duckdb_read, repeat)
    assert rows == record.rows == table.num_rows
    per_row, year = record.bytes / record.rows, record.bytes * 365
    print(f"{record.rows:,} rows ({record.minutes:,} minutes) in {record.bytes / 1e6:.2f} MB = "
          f"{per_row:.2f} bytes/row; a year: {year / 1e9:.2f} GB (goal <= {GOAL_BYTES_PER_YEAR / 1e9:.0f} GB: "
          f"{'met' if year <= GOAL_BYTES_PER_YEAR else 'not met'})")  # fmt: skip
    print(f"write_day_file {written * 1000:,.0f} ms (of which the warehouse read and unpacking "
          f"{read * 1000:,.0f} ms); anchors: DuckDB's COPY of the same Arrow table {copied * 1000:,.0f} ms, "
          f"DuckDB reading the file back {read_back * 1000:,.0f} ms")  # fmt: skip
    with duckdb.connect() as con:
        columns = con.execute(
            "SELECT path_in_schema, sum(total_compressed_size) FROM parquet_metadata(?) GROUP BY ALL ORDER BY 2 DESC",
            [str(files.path(day))],
        ).fetchall()
    print("bytes/row by column: " + ", ".join(f"{column} {size / record.rows:.2f}" for column, size in columns))
    anchor_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL), help="a Postgres server")
    parser.add_argument("--depth", type=int, default=200, help="assets per snapshot (TOPLIST_DEPTH)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions; the median is printed")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    name = "toplist_bench_history_files"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
    try:
        store = Warehouse(url)
        store.upgrade()
        started = time.monotonic()
        fill_day(store, DAY, args.depth)
        print(f"stored a day of 1,440 minutes x {args.depth} in {time.monotonic() - started:.0f} s "
              f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, duckdb {duckdb.__version__})")  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            files = DayFiles(Path(folder))
            measure(store, files, DAY, args.repeat)
        store.engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
