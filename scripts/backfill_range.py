"""Backfill a range of minutes from a shell: `python -m scripts.backfill_range START...END`.

Keys as in the UI (`2026-11-26-10:00...2026-11-26-11:59`, both included). The range must lie
in the partition window, from HISTORY_START to before the live window (LIVE_WINDOW_MINUTES,
which the schedule fetches). It runs as runs of at most a day, one after the other, as a UI
backfill would (BackfillPolicy.multi_run), each the `backfill_snapshots` job with Dagster's
range tags in its own process (in the caller's working directory, whose `.env` Dagster's CLI
reads), so memory stays one day's; all of them choose their candidates from the rankings
stored before the script started. Dagster's own `--partition-range` needs
BackfillPolicy.single_run. On a failure it stops and prints the command that goes on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from common.settings import get_settings
from crypto_pipeline.partitions import MINUTE_FORMAT, RANGE_RUN_POLICY, minute_partitions
from crypto_pipeline.runs import CANDIDATES_BEFORE_TAG
from scripts.run_stack import range_run_command


def day_ranges(text: str, now: datetime) -> list[tuple[str, str]]:
    """`START...END` as consecutive (first, last) keys of at most a day's runs; ValueError says
    what is wrong with it."""
    first, separator, last = text.partition("...")
    if not separator:
        raise ValueError(f"{text!r}: expected START...END, e.g. 2026-11-26-10:00...2026-11-26-11:59")
    for key in (first, last):
        if not minute_partitions.has_partition_key(key):
            raise ValueError(
                f"{key!r} is not a minute partition: keys look like 2026-11-26-10:00 (UTC) and lie between "
                f"HISTORY_START ({minute_partitions.start:%Y-%m-%d-%H:%M}) and the minute in progress"
            )
    start = minute_partitions.start_time_for_partition_key(first)
    end = minute_partitions.start_time_for_partition_key(last) + timedelta(minutes=1)
    if end <= start:
        raise ValueError(f"{text!r}: the range ends before it starts")
    live = now.replace(second=0, microsecond=0) - timedelta(minutes=get_settings().live_window_minutes - 1)
    if end > live:
        raise ValueError(
            f"{last!r} is within the live window (LIVE_WINDOW_MINUTES): the schedule fetches those minutes live; "
            f"end the range before {live:%Y-%m-%d-%H:%M}"
        )
    step = timedelta(minutes=RANGE_RUN_POLICY.max_partitions_per_run)
    starts = [start + step * i for i in range(-(-(end - start) // step))]
    return [
        (s.strftime(MINUTE_FORMAT), (min(s + step, end) - timedelta(minutes=1)).strftime(MINUTE_FORMAT)) for s in starts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("range", help="START...END, minute partition keys, both included")
    parser.add_argument("--candidates-before", type=datetime.fromisoformat, default=None,
                        help="choose candidates from rankings stored before this (UTC) time; default: now. "
                        "Given when going on after a failure, so the rest chooses as the start did")  # fmt: skip
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    try:
        runs = day_ranges(args.range, now)
    except ValueError as error:
        parser.error(str(error))
    began = (args.candidates_before or now).isoformat()  # every day run chooses alike (naive: UTC, as runs read it)
    for number, (first, last) in enumerate(runs, start=1):
        print(f"run {number} of {len(runs)}: {first}...{last}", flush=True)
        if subprocess.run(range_run_command(first, last, {CANDIDATES_BEFORE_TAG: began})).returncode != 0:
            print(f"run {number} failed; to go on: python -m scripts.backfill_range {first}...{runs[-1][1]} "
                  f"--candidates-before {began}", file=sys.stderr)  # fmt: skip
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
