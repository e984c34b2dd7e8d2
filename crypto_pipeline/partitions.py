"""Minute partitions: the operational window Dagster can run, re-run and backfill.

The start is a fixed setting (HISTORY_START), identical in every process; deriving it from
now() makes processes disagree on the partition set and minutes get skipped. `end_offset=1`
includes the minute in progress, so the schedule fetches minute M during M. The window grows
a minute a minute; an operator moves HISTORY_START forward (docs/architecture.md#time-and-partitions)
before it passes Dagster's recommended 100,000 partitions, and the code location says when.
"""

from datetime import datetime, timedelta

import dagster as dg

from common.settings import get_settings

MINUTE_FORMAT = "%Y-%m-%d-%H:%M"

minute_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="* * * * *",
    start=get_settings().history_start.strftime(MINUTE_FORMAT),
    fmt=MINUTE_FORMAT,
    timezone="UTC",
    end_offset=1,
)

# A backfill over a range (the UI's Materialize, a daemon backfill) runs as runs of at most a
# day of minutes (BackfillPolicy.multi_run): at run creation Dagster writes a planned event per
# partition and asset and a row per partition and asset check, so a run's memory grows with its
# partitions (a 30-day run peaked at 1 GB before its first step; on SQLite it cannot be created).
RANGE_RUN_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=1440)

# Dagster's recommended limit per asset (~69 days of minutes): beyond it the UI's partition
# views slow down (listing 131k keys took 10 s here, 527k 39 s).
RECOMMENDED_MAX_PARTITIONS = 100_000


def window_warning(start: datetime, now: datetime) -> str | None:
    """What to tell the operator when the partition window has outgrown the recommended size."""
    partitions = int((now - start) / timedelta(minutes=1)) + 1
    if partitions <= RECOMMENDED_MAX_PARTITIONS:
        return None
    suggested = now - timedelta(days=60)
    return (
        f"HISTORY_START {start:%Y-%m-%dT%H:%MZ} makes {partitions:,} minute partitions, more than Dagster's "
        f"recommended {RECOMMENDED_MAX_PARTITIONS:,}: the UI's partition views slow down. Move it forward, e.g. "
        f"HISTORY_START={suggested:%Y-%m-01T00:00Z}, and restart the code location and the daemon; stored "
        "minutes stay served."
    )


# One partition per UTC day of the minute window, up to the last ended day: the day files
# (crypto_pipeline.assets.history_day_file). A day partition depends on its day's minute partitions.
day_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().history_start.strftime("%Y-%m-%d"), timezone="UTC", end_offset=0
)
