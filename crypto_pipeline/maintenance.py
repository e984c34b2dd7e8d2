"""Bounded storage: the `prune_storage` job, daily at 03:17 UTC on its own schedule (on by default).

OSS Dagster keeps every run with its events and asset-check executions forever (~83 KB per
minute run on Postgres, ~44 GB a year), and `retention:` in dagster.yaml covers only schedule
and sensor ticks. This job deletes finished runs older than RUN_RETENTION_DAYS (failed ones
after FAILED_RUN_RETENTION_DAYS) with everything they wrote, and the raw upstream rows fetched
more than RAW_RETENTION_DAYS ago. Served snapshots are never touched; the Dagster UI shows
the runs of the retention period, the warehouse keeps every minute.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from pydantic import Field

from crypto_pipeline.resources.warehouse import WarehouseResource

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED]
# A day brings 1,440 minute runs, plus backfill runs (8,000-17,000 under sustained requests) and
# retries: one daily prune deletes batch after batch until the backlog is gone, up to MAX_BATCHES
# batches of each kind (100,000 runs a kind), so a run always ends; what is left waits a day.
RUNS_PER_BATCH = 5000
MAX_BATCHES = 20
BATCH = 500  # run ids per check-execution DELETE


class RetentionConfig(dg.ConfigurableResource):
    """How long each kind of history is kept (days; fractions allowed)."""

    run_days: float = Field(default=7, ge=0, description="Finished runs with their events and check executions.")
    failed_run_days: float = Field(default=30, ge=0, description="Failed runs, kept longer to investigate.")
    raw_days: float = Field(default=7, ge=0, description="Raw upstream rows, counted from their fetch.")


def prune_runs(instance: dg.DagsterInstance, now: datetime, keep: timedelta, keep_failed: timedelta) -> list[str]:
    """Delete finished runs created before `now - keep` (failed: `now - keep_failed`), oldest
    first, with their event log and their asset-check executions; returns their ids."""
    doomed = []
    kinds = (("finished", FINISHED, now - keep), ("failed", [dg.DagsterRunStatus.FAILURE], now - keep_failed))
    for kind, statuses, cutoff in kinds:
        old = dg.RunsFilter(statuses=statuses, created_before=cutoff)
        for _ in range(MAX_BATCHES):
            batch = [r.dagster_run.run_id for r in instance.get_run_records(old, limit=RUNS_PER_BATCH, ascending=True)]
            delete_runs(instance, batch)
            doomed += batch
            if len(batch) < RUNS_PER_BATCH:
                break
        else:
            if left := instance.get_runs_count(old):
                dg.get_dagster_logger().warning(f"{left} {kind} runs created before {cutoff} left for the next prune")
    return doomed


def delete_runs(instance: dg.DagsterInstance, run_ids: list[str]) -> None:
    """Delete runs with their events, tags and asset-check executions.

    The check executions go first: delete_run leaves them (10 rows, ~21 KB a minute run) and no
    public API deletes them, so a prune stopped in between must leave runs, which the next one
    finds again, not check executions of deleted runs, which nothing would ever find."""
    with instance.event_log_storage.index_connection() as conn:
        for start in range(0, len(run_ids), BATCH):
            ids = run_ids[start : start + BATCH]
            conn.execute(AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id.in_(ids)))
    for run_id in run_ids:
        instance.delete_run(run_id)  # the run, its tags, its events and their asset tags


@dg.op(description="Delete Dagster runs older than the retention, with their events and check executions.")
def prune_dagster_runs(context: dg.OpExecutionContext, retention: RetentionConfig) -> None:
    deleted = prune_runs(
        context.instance,
        datetime.now(UTC),
        timedelta(days=retention.run_days),
        timedelta(days=retention.failed_run_days),
    )
    context.log.info(f"deleted {len(deleted)} runs")


@dg.op(description="Delete raw upstream rows (prices, rankings, fetches) fetched before the retention.")
def prune_raw_rows(context: dg.OpExecutionContext, retention: RetentionConfig, warehouse: WarehouseResource) -> None:
    deleted = warehouse.store.prune_raw(datetime.now(UTC) - timedelta(days=retention.raw_days))
    context.log.info("deleted " + ", ".join(f"{rows} {table} rows" for table, rows in deleted.items()))


@dg.job(description="Keep storage bounded: prune old Dagster runs and raw upstream rows (docs/storage.md#pruning).")
def prune_storage():
    prune_dagster_runs()
    prune_raw_rows()


# Once a day, not hourly: retention is in days, and each prune run shares the cores with that
# minute's live run, which it delays (docs/benchmarks.md#steady-state-cpu-and-publication-lag).
prune_storage_schedule = dg.ScheduleDefinition(
    job=prune_storage,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
