"""The minute schedule: at each tick, snapshot the minute that just began.

It computes the partition key from the tick time alone (no partition listing), so a tick
costs the same with one day or one year of partitions.
"""

import dagster as dg

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.runs import BACKFILL_NICENESS, LIVE_PRIORITY, MINUTE_RUN_MAX_RUNTIME, NICENESS_TAG

SNAPSHOT_ASSETS = dg.AssetSelection.assets(fetch_prices_and_rankings, top_assets)

minute_snapshot_job = dg.define_asset_job(
    "minute_snapshot",
    selection=SNAPSHOT_ASSETS,
    description="Fetch both upstreams concurrently for one minute, then merge: one lean run per minute.",
    tags={**LIVE_PRIORITY, **MINUTE_RUN_MAX_RUNTIME},
)

backfill_snapshots_job = dg.define_asset_job(
    "backfill_snapshots",
    selection=SNAPSHOT_ASSETS,
    description="Past minutes: the API's requests and scripts.backfill_range, a range of minutes per run.",
    tags={NICENESS_TAG: BACKFILL_NICENESS},  # yields the CPU to the live minute's run
)


@dg.schedule(
    cron_schedule="* * * * *",
    job=minute_snapshot_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def every_minute(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    partition_key = context.scheduled_execution_time.strftime(MINUTE_FORMAT)
    return dg.RunRequest(run_key=partition_key, partition_key=partition_key)
