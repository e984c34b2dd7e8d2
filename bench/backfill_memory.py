"""Peak memory of one range run of growing length: flat in its step, which works in chunks.

    .venv/bin/python -m bench.backfill_memory [--minutes 60 360 1440] [--chunk-minutes 120]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Each range is ONE run (`range_run_command`, executed in its own process), whatever its length,
against the emulator; its peak RSS is read from the kernel when it exits (`wait4`). A backfill
runs a range as runs of at most a day (bench.range_backfill measures that); this shows what one
run costs as it grows: at run creation Dagster plans each partition, so one run of 30 days is
not bounded (docs/benchmarks.md#backfills). The warehouse and Dagster's instance are fresh:
SQLite with the local instance configuration (`make run`), or with `--postgres` a scratch
database next to the given one holding both, with the production instance (deploy/dagster.yaml).
A 30-day range needs Postgres: on SQLite Dagster cannot create a run of more than ~31,000
partitions (docs/benchmarks.md#backfills). The
baseline, in the same invocation, is one single-minute run. `--chunk-minutes` above the longest
range shows what a range cost before chunking.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from scripts.process_tree import ProcessTrees, exit_on_signals
from scripts.run_stack import (
    LOCAL_INSTANCE,
    PRODUCTION_INSTANCE,
    ROOT,
    new_database,
    postgres_instance_env,
    range_run_command,
    wait_until_up,
)
from warehouse.store import Warehouse

COMMAND = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "crypto_pipeline.definitions",
           "--select", "prices,rankings,top_assets"]  # fmt: skip


def key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d-%H:%M")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss(args: list[str], processes: ProcessTrees) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one CLI run, which must succeed.

    Its log goes to a file: Dagster logs every event of the run (several per partition), and a
    pipe nobody reads until the run exits fills at 64 KiB and blocks the run for good."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = processes.spawn(*args, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(args[-2:])} failed:\n{log.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, nargs="+", default=[60, 360, 1440], help="range lengths")
    parser.add_argument("--postgres", metavar="URL", help="a Postgres server for the warehouse and the instance")
    parser.add_argument("--chunk-minutes", type=int, default=None, help="BACKFILL_CHUNK_MINUTES (default: setting)")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as data, contextlib.ExitStack() as stack:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
        env.update(PYTHONPATH=str(ROOT), DAGSTER_HOME=data, EMULATOR_URL=f"http://127.0.0.1:{port}",
                   LOG_CONSOLE="false",
                   HISTORY_START=(now - timedelta(minutes=sum(args.minutes) + 180)).isoformat())  # fmt: skip
        if args.chunk_minutes:
            env["BACKFILL_CHUNK_MINUTES"] = str(args.chunk_minutes)
        if args.postgres:
            # Named after this process: two benchmarks at once must not drop each other's.
            scratch = new_database(args.postgres, f"toplist_bench_backfill_memory_{os.getpid()}")
            env["DATABASE_URL"] = stack.enter_context(scratch)
            env.update(postgres_instance_env(env["DATABASE_URL"]))
            shutil.copy(PRODUCTION_INSTANCE, f"{data}/dagster.yaml")
        else:
            env["DATABASE_URL"] = f"sqlite:///{data}/warehouse.db"
            shutil.copy(LOCAL_INSTANCE, f"{data}/dagster.yaml")
        print(f"warehouse and instance: {'Postgres' if args.postgres else 'SQLite, the local instance'}", flush=True)
        Warehouse(env["DATABASE_URL"]).upgrade()
        processes = stack.enter_context(ProcessTrees(env, quiet=True))
        processes.spawn(sys.executable, "-m", "emulator", "--port", str(port))
        wait_until_up(f"http://127.0.0.1:{port}/_emulator/health", 30)
        rss, wall = peak_rss([*COMMAND, "--partition", key(now)], processes)  # also stores the ranking candidates
        print(f"baseline: one live minute       peak RSS {rss:6.0f} MB   {wall:6.1f} s wall", flush=True)
        last = now - timedelta(hours=2)
        for minutes in args.minutes:  # each range ends where the previous one began: fresh minutes
            first = last - timedelta(minutes=minutes - 1)
            rss, wall = peak_rss(range_run_command(key(first), key(last)), processes)
            print(f"range of {minutes:6,} minutes        peak RSS {rss:6.0f} MB   {wall:6.1f} s wall", flush=True)
            last = first - timedelta(minutes=1)
    print(f"chunk: {args.chunk_minutes or 'BACKFILL_CHUNK_MINUTES'} minutes; one run per range")
    print("(a backfill runs a range a day per run: bench.range_backfill measures that against the goal)")


if __name__ == "__main__":
    with exit_on_signals():  # SIGTERM (`timeout`) stops what it started, as Ctrl-C does
        main()
