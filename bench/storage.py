"""Storage per minute on Postgres, through the real write path, and what pruning keeps bounded.

    .venv/bin/python -m bench.storage [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]

A scratch database holds both the warehouse and Dagster's instance (dagster.yaml, as in
production). Against the emulator, it runs the project's own jobs through Dagster:

1. a representative period: `--live` live minutes (one `minute_snapshot` run each) and a
   `--range`-minute historical range (one `backfill_snapshots` run), then prints bytes per
   minute per table (`pg_total_relation_size` deltas) and the extrapolated year: the served
   history grows forever, raw rows and Dagster's tables are bounded by their retention;
2. the `prune_storage` job with every retention at 0, and the tables after it;
3. a simulated month: `--days` days of `--runs-per-day` live runs, pruned at each day's end
   with a 7-day retention (`prune_runs`, what the job calls), then `VACUUM` (as autovacuum
   would): rows and bytes of Dagster's tables per day stay flat once the retention is full.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from scripts.process_tree import ProcessTrees, exit_on_signals
from scripts.run_stack import PRODUCTION_INSTANCE, new_database, postgres_instance_env

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
YEAR_MINUTES = 525_600
WAREHOUSE = {"toplist_snapshots": "served", "assets": "served", "prices": "raw", "rankings": "raw", "fetches": "raw"}
SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid), coalesce(s.n_live_tup, 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sizes(engine) -> dict[str, tuple[int, int]]:
    """Bytes and live rows per table, after ANALYZE so the row counts are current."""
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        return {name: (size, rows) for name, size, rows in conn.execute(text(SIZES))}


def kind(table: str) -> str:
    return WAREHOUSE.get(table, "dagster" if table not in ("warehouse_alembic_version", "backfill_requests") else "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL), help="a Postgres server")
    parser.add_argument("--live", type=int, default=10, help="live minutes (runs) in the representative period")
    parser.add_argument("--range", type=int, default=240, help="historical minutes in one range run")
    parser.add_argument("--days", type=int, default=30, help="simulated days")
    parser.add_argument("--runs-per-day", type=int, default=1, help="real runs per simulated day")
    args = parser.parse_args()

    with new_database(args.url, "toplist_bench_storage") as database_url:
        port = free_port()
        processes = ProcessTrees(dict(os.environ), quiet=True)
        processes.spawn(sys.executable, "-m", "emulator", "--port", str(port))
        home = tempfile.mkdtemp()
        shutil.copy(PRODUCTION_INSTANCE, Path(home) / "dagster.yaml")
        os.environ.update(
            DATABASE_URL=database_url, DAGSTER_HOME=home, EMULATOR_URL=f"http://127.0.0.1:{port}",
            LOG_CONSOLE="false", LIVE_WINDOW_MINUTES=str(args.live + 1), **postgres_instance_env(database_url),
        )  # fmt: skip
        try:
            run(args, database_url, home)
        finally:
            processes.stop()


def run(args: argparse.Namespace, url: str, home: str) -> None:
    # Imported here: the settings and the code location read the environment set above.
    import dagster as dg
    import httpx

    from crypto_pipeline.definitions import defs
    from crypto_pipeline.maintenance import RetentionConfig, prune_runs
    from crypto_pipeline.partitions import MINUTE_FORMAT
    from warehouse.store import Warehouse

    Warehouse(url).upgrade()
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    for _ in range(100):  # the emulator starts in the background
        try:
            httpx.get(f"{os.environ['EMULATOR_URL']}/_emulator/health")
            break
        except httpx.TransportError:
            time.sleep(0.2)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def one_minute(minute: datetime) -> None:
        run = defs.resolve_job_def("minute_snapshot").execute_in_process(
            instance=instance, partition_key=minute.strftime(MINUTE_FORMAT), run_config=quiet
        )
        assert run.success

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with dg.DagsterInstance.from_config(home) as instance:
        one_minute(now)
        before = sizes(engine)  # after one warm-up minute: every table and index exists
        for back in range(1, args.live + 1):
            one_minute(now - timedelta(minutes=back))
        live = sizes(engine)
        last = now - timedelta(hours=2)
        first = last - timedelta(minutes=args.range - 1)
        tags = {"dagster/asset_partition_range_start": first.strftime(MINUTE_FORMAT),
                "dagster/asset_partition_range_end": last.strftime(MINUTE_FORMAT)}  # fmt: skip
        assert (
            defs.resolve_job_def("backfill_snapshots")
            .execute_in_process(instance=instance, tags=tags, run_config=quiet)
            .success
        )
        ranged = sizes(engine)
        report_period(args, before, live, ranged)

        zero = RetentionConfig(run_days=0, failed_run_days=0, raw_days=0)
        assert (
            defs.resolve_job_def("prune_storage")
            .execute_in_process(instance=instance, resources={"retention": zero})
            .success
        )
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
        pruned = sizes(engine)
        print("\nafter prune_storage with every retention at 0 (and VACUUM):")
        for table in sorted(ranged, key=lambda t: -ranged[t][0])[:12]:
            print(f"  {table:<28} {ranged[table][1]:>9,} -> {pruned[table][1]:>7,} rows   "
                  f"{ranged[table][0] / 1e3:>9,.0f} -> {pruned[table][0] / 1e3:>7,.0f} KB")  # fmt: skip

        print(f"\nsimulated month: {args.runs_per_day} runs a simulated day, pruned at each day's end, 7-day retention")
        print("  day   runs  event_logs  check_execs  Dagster tables KB")
        boundaries = [datetime.now(UTC)]
        for day in range(1, args.days + 1):
            for _ in range(args.runs_per_day):
                one_minute(datetime.now(UTC).replace(second=0, microsecond=0))
            boundaries.append(datetime.now(UTC))
            keep = boundaries[-1] - boundaries[max(0, day - 7)]
            prune_runs(instance, boundaries[-1], keep, keep)
            with engine.connect() as conn:
                conn.execute(text("VACUUM"))
            now_sizes = sizes(engine)
            dagster = sum(size for table, (size, _) in now_sizes.items() if kind(table) == "dagster")
            print(f"  {day:>3} {instance.get_runs_count():>6} {now_sizes['event_logs'][1]:>11,} "
                  f"{now_sizes['asset_check_executions'][1]:>12,} {dagster / 1e3:>18,.0f}", flush=True)  # fmt: skip


def report_period(args, before: dict, live: dict, ranged: dict) -> None:
    """Bytes per minute per table, and the year they extrapolate to."""
    print(f"{args.live} live minutes (one run each), then one range run of {args.range} historical minutes:")
    print(f"  {'table':<28} {'kind':<8} {'per live minute':>16} {'per range minute':>17}")
    per_live, per_range = {}, {}
    for table in sorted(ranged, key=lambda t: -(ranged[t][0] - before.get(t, (0, 0))[0])):
        per_live[table] = (live[table][0] - before.get(table, (0, 0))[0]) / args.live
        per_range[table] = (ranged[table][0] - live[table][0]) / args.range
        if per_live[table] or per_range[table]:
            print(f"  {table:<28} {kind(table):<8} {per_live[table]:>14,.0f} B {per_range[table]:>15,.0f} B")
    by_kind = {k: sum(v for t, v in per_live.items() if kind(t) == k) for k in ("raw", "dagster")}
    # The served row is the same for a live and a past minute; the range has enough of them to measure.
    by_kind["served"] = sum(v for t, v in per_range.items() if kind(t) == "served")
    runs_bound = by_kind["dagster"] * 1440 * 7
    raw_bound = by_kind["raw"] * 1440 * 7
    served_year = by_kind["served"] * YEAR_MINUTES
    print(f"per minute: served {by_kind['served']:,.0f} B (range), raw {by_kind['raw']:,.0f} B (live), "
          f"Dagster {by_kind['dagster']:,.0f} B (live, one run a minute)")  # fmt: skip
    print(f"a year of minutes: served history {served_year / 1e9:.2f} GB (grows), raw rows bounded at "
          f"{raw_bound / 1e9:.2f} GB (7 days), Dagster bounded at {runs_bound / 1e9:.2f} GB (7 days of runs): "
          f"{(served_year + raw_bound + runs_bound) / 1e9:.2f} GB after a year")  # fmt: skip
    print("goal: <= 6 GB after a year, the served history <= 3 GB")
    print("  (small tables round up to 8 KB pages: bench.lookup measures the served table over a full year)")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
