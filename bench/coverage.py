"""GET /coverage's work at the database over a year of stored minutes, on Postgres.

    .venv/bin/python -m bench.coverage [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Fills a scratch database with a synthetic year as bench.lookup does (or reuses the one a
`bench.lookup --keep` run left, with --reuse), then times `warehouse.coverage.coverage` for a
day, a month and a year: complete, and again after holes are punched into ten days of the year
(1% of their minutes deleted). Prints the best of five against a pooled `SELECT 1` measured in the
same run. Goal: a year within the API's database deadline (API_DB_TIMEOUT_SECONDS, 2 s) with room
to spare: ≤ 500 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from api.main import engine_options
from bench.lookup import DEFAULT_URL, load
from common.settings import Settings
from warehouse.coverage import coverage
from warehouse.schema import snapshots
from warehouse.store import Warehouse

FIRST = datetime(2025, 11, 1, tzinfo=UTC)  # where bench.lookup's year starts
SPANS = {"a day": 1, "a month": 30, "a year": 364}


def best_of(call, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def measure(store: Warehouse, label: str) -> None:
    baseline = best_of(lambda: store.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one()))
    print(f"{label}: SELECT 1 {baseline:.2f} ms")
    for name, days in SPANS.items():
        report = coverage(store, FIRST, FIRST + timedelta(days=days))
        elapsed = best_of(lambda days=days: coverage(store, FIRST, FIRST + timedelta(days=days)))
        print(f"  {name:8} {elapsed:8.1f} ms  ({sum(d.stored for d in report.days):,} stored, "
              f"{len(report.missing)} missing ranges)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL), help="a Postgres server")
    parser.add_argument("--reuse", action="store_true", help="the database a `bench.lookup --keep` run left")
    args = parser.parse_args()
    name = "toplist_bench_lookup" if args.reuse else "toplist_bench_coverage"
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
    try:
        if not args.reuse:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            load(Warehouse(url), url, FIRST, argparse.Namespace(minutes=525_600, depth=200))
        Warehouse(url).upgrade()
        store = Warehouse(url, **engine_options(Settings(database_url=url)))
        measure(store, "complete year")
        rng = random.Random(5)
        holes = [FIRST + timedelta(days=rng.randrange(364), minutes=rng.randrange(1440)) for _ in range(10 * 14)]
        with store.engine.begin() as conn:
            conn.execute(delete(snapshots).where(snapshots.c.minute.in_([m.replace(second=0) for m in holes])))
        measure(store, "with 140 holes in the year")
        if args.reuse:
            print("(the holes stay in the reused database: run bench.lookup --keep again for a complete one)")
        print("goal: a year <= 500 ms (the API's database deadline is 2 s)")
        store.engine.dispose()
    finally:
        if not args.reuse:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
