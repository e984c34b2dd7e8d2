"""Day files kept current: a day's file is written once the day has settled, and again whenever a
minute of it is stored or rewritten (a backfill, a re-run, the healer), one run per day.

Each tick reads the minutes written since its cursor (the newest `created_at` it has seen, minus
LATE_COMMIT_MARGIN for a transaction that commits after a younger one), from the index on
`toplist_snapshots.created_at`: a handful of rows at minute cadence. For each settled day among
them it compares the day's stored minutes and newest `created_at` with the day file's record
(`history_day_files`) and asks for a run of that day's partition when they differ. The run key is
the day's state, so a state already asked for is not asked again, and a rewrite asks anew.

A day has settled once its last minute's live run is over (warehouse.coverage: the live window
and its grace), so the live minutes of its end are in the file; minutes stored later (healed,
backfilled) write it again.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from common.settings import Settings
from crypto_pipeline.assets.history_day_file import history_day_file
from crypto_pipeline.partitions import day_partitions
from crypto_pipeline.resources.warehouse import warehouse_for
from crypto_pipeline.runs import BACKFILL_NICENESS, NICENESS_TAG
from warehouse.coverage import HealingHorizon
from warehouse.day_files import ONE_DAY, day_start

# Every tick costs the daemon and the code server CPU, and a day file is not urgent: every 5 minutes.
HISTORY_INTERVAL_SECONDS = 300
# A merge takes its `created_at` before its transaction commits (waiting for the minutes' lock, a
# range chunk): a snapshot can become visible after a younger one the cursor has passed.
LATE_COMMIT_MARGIN = timedelta(hours=1)
# Days asked per tick; more (a first start over a window of stored days) wait for later ticks.
MAX_DAYS_PER_TICK = 10

history_day_files_job = dg.define_asset_job(
    "history_day_files",
    selection=[history_day_file],
    partitions_def=day_partitions,
    description="Write one day's Parquet file of the history from the warehouse.",
    tags={NICENESS_TAG: BACKFILL_NICENESS},  # yields the CPU to the live minute's run
)


def build_history_day_files_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor bound to a warehouse: its URL from the settings, not a resource (a sensor with
    resources makes the code server build a DagsterInstance every tick, dagster-io/dagster#14345)."""
    horizon = HealingHorizon.from_settings(settings)
    first_day = settings.history_start.date()

    @dg.sensor(
        name="history_day_files_sensor",
        job=history_day_files_job,
        minimum_interval_seconds=HISTORY_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Writes a day's Parquet file once the day has settled, and again when any of its minutes "
        "is stored or rewritten (compared with the file's record in history_day_files).",
    )
    def history_day_files_sensor(context: dg.SensorEvaluationContext):
        store, now = warehouse_for(settings.database_url), datetime.now(UTC)
        seen = datetime.fromisoformat(context.cursor) if context.cursor else None
        changed, newest = store.days_written_since(seen and seen - LATE_COMMIT_MARGIN, day_start(first_day))
        settled_before = horizon.due_before(now)
        settled = sorted(day for day in changed if day >= first_day and day_start(day) + ONE_DAY <= settled_before)
        states, records = store.day_states(settled), store.day_file_records(settled)
        stale = [day for day in settled if day not in records or not records[day].describes(states[day])]
        # The cursor moves on only once every stale day was asked for; otherwise the next ticks see them again.
        cursor = max(filter(None, [seen, newest]), default=None) if len(stale) <= MAX_DAYS_PER_TICK else seen
        runs = [
            dg.RunRequest(
                run_key=f"history-{day}-{states[day].minutes}-{states[day].last_created_at:%Y%m%dT%H%M%S.%f}",
                partition_key=day.isoformat(),
            )
            for day in stale[:MAX_DAYS_PER_TICK]
        ]
        if runs:
            context.log.info("writing the day files of %s", ", ".join(r.partition_key for r in runs))
        return dg.SensorResult(
            run_requests=runs or None,
            cursor=cursor.isoformat() if cursor else None,
            skip_reason=None if runs else "every settled day's file is current",
        )

    return history_day_files_sensor
