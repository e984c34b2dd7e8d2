"""Dagster's own floor for the CPU benchmark: three empty minute-partitioned assets, one run a minute.

Same partitions, schedule shape and in-process executor as the real code location, no work.
"""

import dagster as dg

minutes = dg.TimeWindowPartitionsDefinition(
    cron_schedule="* * * * *", start="2026-11-01-00:00", fmt="%Y-%m-%d-%H:%M", timezone="UTC", end_offset=1
)


@dg.asset(partitions_def=minutes)
def first() -> None: ...


@dg.asset(partitions_def=minutes, deps=[first])
def second() -> None: ...


@dg.asset(partitions_def=minutes, deps=[second])
def third() -> None: ...


trivial_job = dg.define_asset_job("trivial", selection=[first, second, third])


@dg.schedule(cron_schedule="* * * * *", job=trivial_job, default_status=dg.DefaultScheduleStatus.RUNNING)
def trivial_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    key = context.scheduled_execution_time.strftime("%Y-%m-%d-%H:%M")
    return dg.RunRequest(run_key=key, partition_key=key)


defs = dg.Definitions(
    assets=[first, second, third], jobs=[trivial_job], schedules=[trivial_schedule], executor=dg.in_process_executor
)
