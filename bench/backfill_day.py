"""One day of minutes (1440 partitions) backfilled the way a user would, against the emulator.

    .venv/bin/python -m bench.backfill_day

Launches the range as one run from a shell (`range_run_command`: the backfill job with Dagster's
range tags), and first, in the same invocation, one
single-partition materialization as the baseline a per-minute backfill would pay 1440 times.
Prints wall times, the number of runs and the snapshots stored. Goal: the day in <= 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from scripts.process_tree import ProcessTrees, exit_on_signals
from scripts.run_stack import ROOT, range_run_command, wait_until_up
from warehouse.store import Warehouse

COMMAND = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "crypto_pipeline.definitions",
           "--select", "prices,rankings,top_assets"]  # fmt: skip


def key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d-%H:%M")


def timed(args: list[str], processes: ProcessTrees) -> float:
    started = time.monotonic()
    if code := processes.spawn(*args).wait():
        raise subprocess.CalledProcessError(code, args)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=1440, help="range length (default 1440, one day)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
        env.update(PYTHONPATH=str(ROOT), DAGSTER_HOME=data, DATABASE_URL=f"sqlite:///{data}/warehouse.db",
                   EMULATOR_URL="http://127.0.0.1:18767", LOG_CONSOLE="false")  # fmt: skip
        open(f"{data}/dagster.yaml", "w").write("telemetry:\n  enabled: false\n")
        store = Warehouse(env["DATABASE_URL"])
        store.upgrade()
        with ProcessTrees(env, quiet=True) as processes:
            processes.spawn(sys.executable, "-m", "emulator", "--port", "18767")
            wait_until_up("http://127.0.0.1:18767/_emulator/health", 30)
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            single = timed([*COMMAND, "--partition", key(now)], processes)  # also stores the ranking candidates
            last = now - timedelta(hours=2)
            first = last - timedelta(minutes=args.minutes - 1)
            day = timed(range_run_command(key(first), key(last)), processes)
        with dg.DagsterInstance.from_config(data) as instance:
            runs = instance.get_runs_count() - 1
        stored = sum(
            1 for m in range(args.minutes)
            if store.snapshot_at_or_before(first + timedelta(minutes=m), timedelta(minutes=1)) is not None
        )  # fmt: skip
    print(f"baseline: one single-partition run          {single:7.1f} s wall")
    print(f"range of {args.minutes} minutes: {runs} run(s)          {day:7.1f} s wall; {stored} snapshots stored")
    print(f"{args.minutes} single-partition runs would take ~{single * args.minutes / 60:.0f} min at the baseline")
    print("goal: one day (1440 minutes) in <= 180 s")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
