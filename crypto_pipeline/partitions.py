"""Minute partitions: the operational window Dagster can run, re-run and backfill.

The start is a fixed setting (HISTORY_START), identical in every process; deriving it from
now() makes processes disagree on the partition set and minutes get skipped. `end_offset=1`
includes the minute in progress, so the schedule fetches minute M during M.
"""

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
