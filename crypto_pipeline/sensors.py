"""Backfills on request and healing: one sensor hands owed minutes (table `backfill_requests`) to
Dagster and follows them through Dagster's run records (the lifecycle itself is
warehouse/requests.py).

Every tick (30 s):
1. Heal: the minutes of the healing horizon (warehouse.coverage) that are due and not published
   become requests of origin `healer`; failed requests of the horizon whose backoff is over go
   back to `requested` until published (never a permanent failure); requested minutes stored
   meanwhile succeed without a run.
2. Reconcile what is in flight, by the run key each request carries (also a tag on its run).
   A run with that key → `launched` with its real run id. The run ended without storing the
   minute (failed before the merge, canceled, ended by its max runtime, or succeeded without
   data) → `failed`, with the error and whether a retry could fix it; a failed run whose
   automatic retry may still come is waited for (RETRY_GRACE at most). No run a minute after the key was handed over
   (creation failed, or Dagster dropped a duplicate key) → `requested` again, under a new key.
   Launched but the run's record is gone (deleted, pruned) → `requested` again. Only Dagster's
   records and the warehouse are read, never memory, so a daemon restart changes nothing;
   only changes are written.
3. Submit due minutes (past their live window and its grace: the schedule stores younger ones):
   nearby requested minutes share one run (Dagster's range tags: one run whatever the assets'
   backfill policy), at most `max_minutes_per_run` long, `max_runs_per_tick` per tick, each under a
   fresh `run_key`; people's minutes first, and runs of the healer's alone at a lower priority.

Success needs no sensor: the merge that stores a minute settles its request in the same
transaction. A tick with nothing owed reads a few index entries and never builds a DagsterInstance.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import dagster as dg

from common.settings import Settings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.warehouse import warehouse_for
from crypto_pipeline.runs import (
    HEALER_PRIORITY,
    MAX_RUNTIME_TAG,
    RANGE_END,
    RANGE_START,
    REQUEST_TAG,
    newest_runs,
    retry_may_come,
)
from crypto_pipeline.schedules import backfill_snapshots_job
from warehouse.coverage import HealingHorizon
from warehouse.requests import (
    CANCELED_ERROR,
    NO_DATA_ERROR,
    OPEN,
    BackfillRequest,
    BackfillRequests,
    Origin,
    RequestPolicy,
    Status,
)

# Every sensor tick costs the daemon and the code server CPU even when idle: the daemon's tick
# bookkeeping (tick row, instigator state) was ~half of its CPU above Dagster's floor, profiled
# at 15 s (docs/benchmarks.md#steady-state-cpu-and-publication-lag), so it ticks every 30 s.
# Launching waits at most 30 s; a request whose run never came is back to `requested` within
# LAUNCH_GRACE + one interval (90 s).
REQUEST_INTERVAL_SECONDS = 30
# Dagster creates a sensor's runs right after the tick; a key still without a run after this
# was never created (so a request is back to `requested` within two minutes).
LAUNCH_GRACE = timedelta(seconds=60)


def nearby_ranges(minutes: Iterable[datetime], max_length: int, max_gap: int = 0) -> list[tuple[datetime, datetime]]:
    """Sorted minutes grouped into ranges at most `max_length` long, where up to `max_gap`
    unrequested minutes may lie between two requested ones (a run's fixed cost is worth more
    than the bookkeeping of a few extra partitions; upstream series are fetched once per range)."""
    ranges: list[tuple[datetime, datetime]] = []
    for minute in sorted(minutes):
        if ranges:
            first, last = ranges[-1]
            if minute - last <= timedelta(minutes=max_gap + 1) and minute - first < timedelta(minutes=max_length):
                ranges[-1] = (first, minute)
                continue
        ranges.append((minute, minute))
    return ranges


def ranges_people_first(
    due: list[BackfillRequest], max_length: int, max_gap: int
) -> list[tuple[tuple[datetime, datetime], bool]]:
    """The ranges of the minutes people asked for (or were served a stand-in for), then those of the
    healer's alone, each with whether it is the healer's: a person waits for no healed gap."""
    asked = [r.minute for r in due if r.origin != Origin.HEALER]
    healed = [r.minute for r in due if r.origin == Origin.HEALER]
    return [(r, False) for r in nearby_ranges(asked, max_length, max_gap)] + [
        (r, True) for r in nearby_ranges(healed, max_length, max_gap)
    ]


def outcome(instance: dg.DagsterInstance, record: dg.RunRecord, now: datetime) -> tuple[str, bool] | None:
    """(error, permanent) for a run that ended; None while it may still store its minutes.

    A run that succeeded stored what it could: its requests were settled by the merge, any left
    had no data. A failed run whose automatic retry may still come is not over yet."""
    run = record.dagster_run
    if not run.is_finished or (run.status == dg.DagsterRunStatus.FAILURE and retry_may_come(instance, record, now)):
        return None
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return NO_DATA_ERROR, False
    if run.status == dg.DagsterRunStatus.CANCELED:
        return CANCELED_ERROR, False
    # A run that run monitoring ended (max runtime) says why in its canceling event.
    run_events = {dg.DagsterEventType.RUN_CANCELING, dg.DagsterEventType.RUN_FAILURE}
    events = instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, *run_events})
    steps = [e.dagster_event.step_failure_data for e in events if e.dagster_event.is_step_failure]
    messages = [step.error.message.strip() for step in steps if step.error] or [
        e.dagster_event.message or "the run failed" for e in events if e.dagster_event.event_type in run_events
    ]
    permanent = any(
        step.user_failure_data and (flag := step.user_failure_data.metadata.get("permanent")) and flag.value
        for step in steps
    )
    return "; ".join(messages) or "the run failed", bool(permanent)


def reconcile(instance: dg.DagsterInstance, requests: BackfillRequests, in_flight: list[BackfillRequest]) -> int:
    """Move the in-flight requests along from their runs' records; returns how many transitions ran.
    Only a change is written: a tick while runs wait or work writes nothing."""
    by_key: dict[str, list[BackfillRequest]] = defaultdict(list)
    for request in in_flight:
        by_key[request.run_key].append(request)
    records, now, moved = newest_runs(instance, by_key), datetime.now(UTC), 0
    for key, waiting in by_key.items():
        record = records.get(key)
        if record is None:
            if any(r.status == Status.LAUNCHED for r in waiting):
                moved += requests.requeue(key)
            elif all(now - r.submitted_at >= LAUNCH_GRACE for r in waiting):
                moved += requests.release(key)
            continue
        if any(r.status == Status.REQUESTED for r in waiting):
            moved += requests.launch(key, record.dagster_run.run_id)
        if ended := outcome(instance, record, now):
            moved += requests.fail(key, *ended, now)
    return moved


def build_backfill_requests_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor that heals, launches and reconciles owed minutes, bound to a warehouse and its limits.

    It takes the warehouse URL from the settings, not the warehouse resource: a sensor with
    resources makes the code server build a DagsterInstance on every tick (dagster-io/dagster#14345).
    It touches `context.instance` only while a request is in flight.
    """
    policy, healing = RequestPolicy.from_settings(settings), HealingHorizon.from_settings(settings)
    max_minutes, max_runs = settings.backfill_max_minutes_per_run, settings.backfill_max_runs_per_tick
    max_runtime = str(settings.backfill_max_runtime_seconds)

    @dg.sensor(
        name="backfill_requests_sensor",
        job=backfill_snapshots_job,
        minimum_interval_seconds=REQUEST_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Heals the unpublished minutes of the last HEAL_HORIZON_HOURS, launches runs for them and "
        "for the minutes the API could not serve (table backfill_requests), and follows each through "
        "Dagster's run records until it ends.",
    )
    def backfill_requests_sensor(context: dg.SensorEvaluationContext):
        store, now = warehouse_for(settings.database_url), datetime.now(UTC)
        requests = store.requests
        if owed := requests.owe(healing.owed(store, now), Origin.HEALER, now):
            context.log.info("healer: %d unpublished minute(s) of the healing horizon are owed", owed)
        if retried := requests.retry(policy, now):
            context.log.info("%d failed request(s) queued for another attempt", retried)
        if requests.count(OPEN) == 0:
            return dg.SkipReason("nothing owed")
        if (in_flight := requests.in_flight()) and (moved := reconcile(context.instance, requests, in_flight)):
            context.log.info("%d request update(s) from Dagster's run records", moved)
        requests.succeed_stored()  # stored since they were owed: no run needed
        due = requests.due(max_minutes * max_runs, before=healing.due_before(now))
        runs = []
        for (first, last), healer_only in ranges_people_first(due, max_minutes, settings.backfill_max_gap_minutes)[
            :max_runs
        ]:
            start, end = first.strftime(MINUTE_FORMAT), last.strftime(MINUTE_FORMAT)
            run_key = f"backfill-{start}...{end}-{uuid4().hex[:8]}"  # fresh per attempt: never a duplicate
            requests.submit(first, last, run_key)
            tags = {RANGE_START: start, RANGE_END: end, REQUEST_TAG: run_key, MAX_RUNTIME_TAG: max_runtime}
            runs.append(dg.RunRequest(run_key=run_key, tags={**tags, **(HEALER_PRIORITY if healer_only else {})}))
        if not runs:
            return dg.SkipReason("owed minutes are in flight or within their live window")
        context.log.info("launching %d run(s) for %d owed minute(s)", len(runs), len(due))
        return runs

    return backfill_requests_sensor
