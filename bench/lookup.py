"""Lookup latency over a year of stored minutes, at the database, on Postgres.

    .venv/bin/python -m bench.lookup [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Creates a scratch database next to the one in --url (TEST_POSTGRES_URL by default), migrates
it to the production schema, and fills it in SQL (generate_series, no Python in the loop)
with a synthetic year: 525,600 snapshots of 200 assets in exactly the bytes the pipeline
writes (big-endian arrays, as `warehouse.schema.PackedArray` packs them). Then it times what
`GET /?datetime=` asks of the database, through the API's read function (`served_at_or_before`:
one query on one pooled connection) and the API's engine options, for random past minutes and for "now", against
a pooled `SELECT 1` measured in the same run, interleaved. Prints median and p99, and the table's
bytes per minute. Goal: p99 <= 10 ms and median <= 2 ms. Drops the scratch database at the end
unless --keep.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.main import engine_options
from common.settings import Settings
from warehouse.store import Warehouse

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
YEAR = 525_600
UNIVERSE = 5000  # assets with a name; a minute's ids are 200 distinct ones among them

FILL_ASSETS = """
INSERT INTO assets (cmc_id, symbol, name, updated_at)
SELECT i, 'S' || i, 'Asset number ' || i, now() FROM generate_series(1, :universe) i
"""
# One month of minutes per statement; every value is a function of (minute, position) so the
# year needs no memory outside Postgres. 7919 is prime to 5000, so a minute's ids are distinct.
FILL_MINUTES = """
INSERT INTO toplist_snapshots (minute, row_count, matched, unmatched, source, price_source,
                               fetched_at, created_at, cmc_ids, prices_usd, volumes_24h_usd)
SELECT m, :depth, :depth + 30, 20, 'emulated', 'coinmarketcap', m + interval '5 s', m + interval '6 s',
       (SELECT string_agg(int4send(((g * 7919 + n) % :universe + 1)::int), ''::bytea ORDER BY g)
          FROM generate_series(1, :depth) g),
       (SELECT string_agg(float8send(random() * 1000 / g), ''::bytea ORDER BY g) FROM generate_series(1, :depth) g),
       (SELECT string_agg(float8send(1e10 / (g + random())), ''::bytea ORDER BY g) FROM generate_series(1, :depth) g)
FROM generate_series(0, :count - 1) n, LATERAL (SELECT :first + n * interval '1 minute' AS m) t
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    print(f"{name:<34} median {statistics.median(samples):6.2f} ms   p99 {percentile(samples, 0.99):6.2f} ms")


def load(store: Warehouse, url: str, first: datetime, args: argparse.Namespace) -> None:
    """The production schema filled with `args.minutes` synthetic snapshots, in SQL."""
    store.upgrade()
    started = time.monotonic()
    with store.engine.begin() as conn:
        conn.execute(text(FILL_ASSETS), {"universe": UNIVERSE})
    month = 43_200
    for offset in range(0, args.minutes, month):
        with store.engine.begin() as conn:
            conn.execute(text(FILL_MINUTES), {"depth": args.depth, "universe": UNIVERSE,
                         "count": min(month, args.minutes - offset),
                         "first": first + timedelta(minutes=offset)})  # fmt: skip
        print(f"  loaded {min(offset + month, args.minutes):,} minutes ({time.monotonic() - started:.0f} s)")
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:  # VACUUM: no transaction
        conn.execute(text("VACUUM ANALYZE toplist_snapshots"))
        conn.execute(text("VACUUM ANALYZE assets"))
        size = conn.execute(text("SELECT pg_total_relation_size('toplist_snapshots')")).scalar_one()
    loaded = time.monotonic() - started
    print(f"loaded {args.minutes:,} snapshots of {args.depth} in {loaded:.0f} s; toplist_snapshots "
          f"{size / 1e9:.2f} GB = {size / args.minutes:,.0f} bytes per minute "
          f"= {size / args.minutes * YEAR / 1e9:.2f} GB per year (goal: served history <= 3 GB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL), help="a Postgres server")
    parser.add_argument("--minutes", type=int, default=YEAR, help="stored minutes (default a year, 525,600)")
    parser.add_argument("--depth", type=int, default=200, help="assets per snapshot (TOPLIST_DEPTH)")
    parser.add_argument("--lookups", type=int, default=5000, help="timed lookups per kind")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="time the database a --keep run left (no load)")
    args = parser.parse_args()

    name = "toplist_bench_lookup"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
    first = datetime(2025, 11, 1, tzinfo=UTC)
    try:
        if not args.reuse:  # a month a statement: longer than the API's statement timeout allows
            load(Warehouse(url), url, first, args)
        store = Warehouse(url, **engine_options(Settings(database_url=url)))  # pooled as the API pools
        tolerance = timedelta(minutes=2)
        last = first + timedelta(minutes=args.minutes - 1)
        rng = random.Random(13)

        def serve(moment: datetime) -> None:
            served = store.served_at_or_before(moment, tolerance, args.depth)
            assert len(served.rows) == args.depth, len(served.rows)

        def past() -> None:
            serve(first + timedelta(minutes=rng.randrange(args.minutes), seconds=rng.randrange(60)))

        def now() -> None:
            serve(last + timedelta(seconds=30))

        def baseline() -> None:  # what every read pays at least: a pooled checkout and one round trip
            store.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

        kinds = {"baseline: checkout + SELECT 1": baseline, f"random past minute ({args.depth} rows)": past,
                 f'"now", the newest minute ({args.depth} rows)': now}  # fmt: skip
        timed(past, 200)  # warm the pool, the statement caches and the asset names
        samples = {label: [] for label in kinds}
        for _ in range(args.lookups):  # interleaved, so the machine's noise falls on all three alike
            for label, call in kinds.items():
                samples[label] += timed(call, 1)
        for label, measured in samples.items():
            report(label, measured)
        print("goal: p99 <= 10 ms and median <= 2 ms for both")
        store.engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
