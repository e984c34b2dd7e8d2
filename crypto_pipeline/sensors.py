"""Backfills on request: the API records missing minutes in `backfill_requests`; a sensor
launches them and a run-status sensor reports failures back.

Adjacent requested minutes share one range run (range tags + the assets' single-run backfill
policy), chunked so a run stays short. `run_key` makes a relaunch impossible even if a tick is
evaluated twice; at most `max_runs_per_tick` runs start per tick, so a burst of requests
never floods the run queue. Success needs no sensor: the merge that stores a minute settles
its request in the same transaction (warehouse.store.Warehouse.merge_top_assets).
"""

from collections.abc import Iterable
from datetime import datetime, timedelta

import dagster as dg

from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.warehouse import WarehouseResource, warehouse_for
from crypto_pipeline.schedules import backfill_snapshots_job

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
REQUEST_TAG = "crypto_toplist/backfill_request"
# Every sensor tick costs the daemon and the code server CPU (measured: three sensors at 10 s
# were 1.7 CPU-s a minute). Launching waits at most 15 s; a failure is reported within a minute.
REQUEST_INTERVAL_SECONDS = 15
STATUS_INTERVAL_SECONDS = 60


def adjacent_ranges(minutes: Iterable[datetime], max_length: int) -> list[tuple[datetime, datetime]]:
    """Sorted minutes grouped into runs of consecutive minutes, each at most `max_length` long."""
    ranges: list[tuple[datetime, datetime]] = []
    for minute in sorted(minutes):
        if ranges:
            first, last = ranges[-1]
            if minute - last == timedelta(minutes=1) and (minute - first) < timedelta(minutes=max_length):
                ranges[-1] = (first, minute)
                continue
        ranges.append((minute, minute))
    return ranges


def build_backfill_requests_sensor(
    database_url: str, max_minutes_per_run: int, max_runs_per_tick: int
) -> dg.SensorDefinition:
    """The sensor that launches requested minutes, bound to a warehouse and its limits.

    It takes the warehouse URL, not the warehouse resource: a sensor with resources makes the
    code server build a DagsterInstance on every tick (dagster-io/dagster#14345), ~60 ms of CPU
    four times a minute, and this sensor needs nothing from the instance.
    """

    @dg.sensor(
        name="backfill_requests_sensor",
        job=backfill_snapshots_job,
        minimum_interval_seconds=REQUEST_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches runs for the minutes the API could not serve (table backfill_requests).",
    )
    def backfill_requests_sensor(context: dg.SensorEvaluationContext):
        store = warehouse_for(database_url)
        pending = store.backfill_requests_with_status("requested", max_minutes_per_run * max_runs_per_tick)
        requested = [r.minute for r in pending]
        if not requested:
            return dg.SkipReason("no backfill requested")
        runs = []
        for first, last in adjacent_ranges(requested, max_minutes_per_run)[:max_runs_per_tick]:
            start, end = first.strftime(MINUTE_FORMAT), last.strftime(MINUTE_FORMAT)
            run_key = f"backfill-{start}...{end}"
            store.set_backfill_status(first, last, "launched", run_id=run_key)
            runs.append(dg.RunRequest(run_key=run_key, tags={RANGE_START: start, RANGE_END: end, REQUEST_TAG: "true"}))
        context.log.info("launching %d run(s) for %d requested minute(s)", len(runs), len(requested))
        return runs

    return backfill_requests_sensor


def requested_range(run: dg.DagsterRun) -> tuple[datetime, datetime] | None:
    """The minutes a request-launched run covers; None for a run launched by hand."""
    if REQUEST_TAG not in run.tags:
        return None
    start = datetime.strptime(run.tags[RANGE_START] + "+0000", MINUTE_FORMAT + "%z")
    end = datetime.strptime(run.tags[RANGE_END] + "+0000", MINUTE_FORMAT + "%z")
    return start, end


@dg.run_failure_sensor(
    monitored_jobs=[backfill_snapshots_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=STATUS_INTERVAL_SECONDS,
    description="Marks the backfill requests of a failed run failed, with the error.",
)
def backfill_failed_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    if minutes := requested_range(context.dagster_run):
        errors = [event.step_failure_data.error.message.strip() for event in context.get_step_failure_events()]
        message = "; ".join(errors) or (context.failure_event.message or "the run failed")
        warehouse.store.set_backfill_status(*minutes, "failed", run_id=context.dagster_run.run_id, error=message[:2000])
