"""The backfill request sensor: requested minutes become bounded range runs, and every request is
moved along from Dagster's run records (real records in a real instance, on both backends)."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.monitoring.run_monitoring import check_run_timeout
from dagster._daemon.sensor import execute_sensor_iteration

from common.settings import Settings
from crypto_pipeline import runs, sensors
from crypto_pipeline.definitions import defs
from crypto_pipeline.resources.warehouse import warehouse_for
from crypto_pipeline.runs import MAX_RUNTIME_TAG, RANGE_END, RANGE_START, REQUEST_TAG, WILL_RETRY_TAG
from crypto_pipeline.sensors import build_backfill_requests_sensor, nearby_ranges
from tests.api.conftest import ApiServer, seed_snapshot
from tests.assets.test_pipeline import ASSETS, resources
from warehouse.coverage import HealingHorizon
from warehouse.requests import CANCELED_ERROR, NO_DATA_ERROR, Origin, RequestPolicy
from warehouse.schema import UTCDateTime
from warehouse.store import Warehouse

BASE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
POLICY = RequestPolicy(max_pending=1000, max_attempts=3, backoff=timedelta(0))  # ask again at once
MAX_RUNTIME = 1800


def minutes(*offsets: int) -> list[datetime]:
    return [BASE + timedelta(minutes=o) for o in offsets]


def test_nearby_minutes_share_a_range_up_to_the_chunk_size():
    assert nearby_ranges(minutes(5, 0, 1, 2, 7, 8), 10) == [
        (BASE, BASE + timedelta(minutes=2)),
        (BASE + timedelta(minutes=5), BASE + timedelta(minutes=5)),
        (BASE + timedelta(minutes=7), BASE + timedelta(minutes=8)),
    ]
    assert nearby_ranges(minutes(*range(5)), 2) == [
        (BASE, BASE + timedelta(minutes=1)),
        (BASE + timedelta(minutes=2), BASE + timedelta(minutes=3)),
        (BASE + timedelta(minutes=4), BASE + timedelta(minutes=4)),
    ]
    # up to two unrequested minutes in between: one run, minutes 0..8
    assert nearby_ranges(minutes(5, 0, 2, 8), 10, max_gap=2) == [(BASE, BASE + timedelta(minutes=8))]
    assert nearby_ranges(minutes(0, 4), 10, max_gap=2) == [(BASE, BASE), (BASE + timedelta(minutes=4),) * 2]


def sensor_settings(database_url: str, **overrides) -> Settings:
    """The request sensor's settings in these tests: POLICY's attempts and backoff, no healing
    (the healer's own tests turn it on)."""
    limits = dict(backfill_max_minutes_per_run=120, backfill_max_runs_per_tick=10, backfill_max_gap_minutes=0,
                  backfill_max_runtime_seconds=MAX_RUNTIME, backfill_max_attempts=POLICY.max_attempts,
                  backfill_retry_backoff_seconds=0, heal_horizon_hours=0)  # fmt: skip
    return Settings(_env_file=None, database_url=database_url, **{**limits, **overrides})


def tick(database_url: str, instance: dg.DagsterInstance, **settings):
    sensor = build_backfill_requests_sensor(sensor_settings(database_url, **settings))
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))


@pytest.fixture(autouse=True)
def resource_keys(monkeypatch):
    """Creating a run resolves the job's resource config: the key EnvVars must be set (never used)."""
    monkeypatch.setenv("CMC_API_KEY", "unused")
    monkeypatch.setenv("CRYPTOCOMPARE_API_KEY", "unused")


def create_run(instance: dg.DagsterInstance, request: dg.RunRequest, **run) -> dg.DagsterRun:
    """What the daemon makes of a RunRequest: a run of backfill_snapshots with its tags and key."""
    job = defs.resolve_job_def("backfill_snapshots")
    tags = {**request.tags, "dagster/run_key": request.run_key, **run.pop("tags", {})}
    return instance.create_run_for_job(job, tags=tags, status=run.pop("status", dg.DagsterRunStatus.NOT_STARTED), **run)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_idle_tick_builds_no_dagster_instance(database_url):
    """The daemon hands the code server an instance ref; building the instance from it costs
    ~60 ms of CPU, twice a minute, so a tick with nothing owed must not, healing included."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    seed_snapshot(store, BASE, depth=30)  # a settled request is not open
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for back in range(15):  # the healing horizon (12 minutes here) is fully stored
        seed_snapshot(store, now - timedelta(minutes=back), depth=30)
    sensor = build_backfill_requests_sensor(sensor_settings(database_url, heal_horizon_hours=0.2))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs)
        assert sensor.evaluate_tick(context).skip_message == "nothing owed"
        assert context._instance is None  # noqa: SLF001 - no public way to ask whether it was built


def test_sensor_launches_each_range_once_and_only_a_real_run_launches_it(database_url, dagster_instance):
    store = Warehouse(database_url)
    for minute in minutes(0, 1, 2, 10):
        store.requests.ask(minute, POLICY)
    result = tick(database_url, dagster_instance)
    tags = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests)
    assert tags == [("2026-11-20-12:00", "2026-11-20-12:02"), ("2026-11-20-12:10", "2026-11-20-12:10")]
    assert all(r.tags[REQUEST_TAG] == r.run_key and r.run_key.startswith("backfill-") for r in result.run_requests)
    assert {store.requests.get(m).status for m in minutes(0, 1, 2, 10)} == {"requested"}  # no run yet
    assert tick(database_url, dagster_instance).run_requests == []  # handed over: never twice

    first = next(r for r in result.run_requests if r.tags[RANGE_START] == "2026-11-20-12:00")
    run = create_run(dagster_instance, first)
    tick(database_url, dagster_instance)
    launched = [store.requests.get(m) for m in minutes(0, 1, 2)]
    assert {(r.status, r.run_id, r.attempts) for r in launched} == {("launched", run.run_id, 1)}
    assert store.requests.get(BASE + timedelta(minutes=10)).status == "requested"


def test_people_go_before_the_healer_and_healer_runs_leave_the_queue_last(database_url, dagster_instance):
    """Two healed gaps older than a person's minute: the person's range is launched first, at the
    default priority; the healer's runs carry a lower one, so Dagster's queue starts them after."""
    store = Warehouse(database_url)
    store.requests.owe(minutes(0, 1, 2, 20, 21), Origin.HEALER)
    store.requests.ask(BASE + timedelta(minutes=50), POLICY)
    (first,) = tick(database_url, dagster_instance, backfill_max_runs_per_tick=1).run_requests
    assert first.tags[RANGE_START] == first.tags[RANGE_END] == "2026-11-20-12:50"
    assert "dagster/priority" not in first.tags
    healer_runs = tick(database_url, dagster_instance).run_requests
    assert sorted(r.tags[RANGE_START] for r in healer_runs) == ["2026-11-20-12:00", "2026-11-20-12:20"]
    assert {r.tags["dagster/priority"] for r in healer_runs} == {"-1"}


def test_a_canceled_run_fails_its_requests_and_asking_again_relaunches(database_url, dagster_instance):
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    run = create_run(dagster_instance, request)
    tick(database_url, dagster_instance)
    dagster_instance.report_run_canceled(run)
    tick(database_url, dagster_instance)
    canceled = store.requests.get(BASE)
    assert (canceled.status, canceled.error, canceled.permanent) == ("failed", CANCELED_ERROR, False)
    assert POLICY.next_attempt(canceled) is not None

    assert store.requests.ask(BASE, POLICY).status == "requested"  # the backoff (0 here) has passed
    (again,) = tick(database_url, dagster_instance).run_requests
    assert again.run_key != request.run_key  # its own key: Dagster cannot drop it as a duplicate


def test_a_run_that_was_never_created_is_released_and_resubmitted(database_url, dagster_instance, monkeypatch):
    """Run creation failed, or Dagster dropped the request as a duplicate run key: no run ever
    carries the key. After the grace the minute is requested again, under a new key."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    assert tick(database_url, dagster_instance).run_requests == []  # within the grace: wait
    monkeypatch.setattr(sensors, "LAUNCH_GRACE", timedelta(0))
    (again,) = tick(database_url, dagster_instance).run_requests
    assert again.run_key != request.run_key
    resubmitted = store.requests.get(BASE)
    # The never-created run is no attempt: only the new submission counts.
    assert (resubmitted.status, resubmitted.run_key, resubmitted.attempts) == ("requested", again.run_key, 1)


def test_a_duplicate_run_key_follows_the_run_that_holds_it(database_url, dagster_instance):
    """If a run already holds the key (Dagster then drops the new request), that run's record
    decides: here it had ended without storing the minute, so the request fails instead of
    waiting forever, and asking again gets a fresh key."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    older = create_run(dagster_instance, request, status=dg.DagsterRunStatus.SUCCESS)
    tick(database_url, dagster_instance)
    failed = store.requests.get(BASE)
    assert (failed.status, failed.run_id, failed.error) == ("failed", older.run_id, NO_DATA_ERROR)
    store.requests.ask(BASE, POLICY)
    (again,) = tick(database_url, dagster_instance).run_requests
    assert again.run_key != request.run_key


def test_a_run_awaiting_its_retry_is_not_over_and_the_retry_settles_it(database_url, dagster_instance):
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    crashed = create_run(dagster_instance, request, tags={"dagster/will_retry": "true"})
    dagster_instance.report_run_failed(crashed, "run worker crashed")
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "launched"  # the run retry is coming
    retry = create_run(dagster_instance, request, status=dg.DagsterRunStatus.STARTED)
    seed_snapshot(store, BASE)  # the retry's merge stores the minute
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "succeeded"
    dagster_instance.report_run_failed(retry, "failed after its merge")
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "succeeded"  # /backfills keeps agreeing with /


def test_a_launched_request_whose_run_was_deleted_is_requested_again(database_url, dagster_instance):
    """Run pruning may delete records: a request never waits on a run that no longer exists."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    run = create_run(dagster_instance, request)
    tick(database_url, dagster_instance)
    dagster_instance.delete_run(run.run_id)
    (again,) = tick(database_url, dagster_instance).run_requests
    assert again.run_key != request.run_key
    assert (store.requests.get(BASE).status, store.requests.get(BASE).run_id) == ("requested", None)


def test_a_plan_refusal_is_permanent_and_asking_after_the_fix_recovers(database_url, dagster_instance, emulator):
    """The issue's report: a minute refused by the CMC plan, asked again after the plan was
    fixed, must be fetched. Both runs are real runs of the pipeline against the emulator."""
    store = Warehouse(database_url)
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)

    def execute(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            ASSETS,
            tags={**request.tags, "dagster/run_key": request.run_key},
            resources=resources(emulator.url, database_url),
            instance=dagster_instance,
            raise_on_error=False,
        )

    store.requests.ask(minute, POLICY)
    emulator.set_plan("basic")
    (refused,) = tick(database_url, dagster_instance).run_requests
    assert not execute(refused).success
    tick(database_url, dagster_instance)
    failed = store.requests.get(minute)
    assert (failed.status, failed.permanent, failed.attempts) == ("failed", True, 1)
    assert "1006" in failed.error

    emulator.set_plan("standard")
    assert store.requests.ask(minute, POLICY).status == "requested"
    (fixed,) = tick(database_url, dagster_instance).run_requests
    result = execute(fixed)
    assert result.success
    settled = store.requests.get(minute)
    assert (settled.status, settled.run_id, settled.permanent) == ("succeeded", result.run_id, False)


def test_the_healer_owes_the_unpublished_minutes_of_its_horizon_and_their_run_publishes_them(
    database_url, dagster_instance, emulator
):
    """Minutes lost while nothing ran (a dead daemon, a database outage, an upstream fault) are
    found by the sensor itself: each becomes a request of origin `healer`, launched as one range
    run (a real run of the pipeline here), which publishes them; then nothing is owed."""
    store = Warehouse(database_url)
    now = datetime.now(UTC)
    minute = now.replace(second=0, microsecond=0)
    settings = dict(heal_horizon_hours=0.5, history_start=minute - timedelta(minutes=25), backfill_max_gap_minutes=0)
    seed_snapshot(store, minute - timedelta(minutes=60), depth=30)  # live since long before the horizon
    for back in range(25, 20, -1):  # from HISTORY_START: stored; from 20 minutes ago: lost
        seed_snapshot(store, minute - timedelta(minutes=back), depth=30)

    result = tick(database_url, dagster_instance, **settings)

    horizon = HealingHorizon.from_settings(sensor_settings(database_url, **settings))
    owed = horizon.owed(store, now)
    assert owed[0] == minute - timedelta(minutes=20) and owed[-1] == horizon.due_before(now) - timedelta(minutes=1)
    assert {(store.requests.get(m).origin, store.requests.get(m).status) for m in owed} == {("healer", "requested")}
    assert store.requests.get(horizon.due_before(now)) is None  # the live schedule's minutes are not owed yet
    (run,) = result.run_requests
    assert (run.tags[RANGE_START], run.tags[RANGE_END]) == (
        owed[0].strftime("%Y-%m-%d-%H:%M"),
        owed[-1].strftime("%Y-%m-%d-%H:%M"),
    )
    executed = dg.materialize(
        ASSETS,
        tags={**run.tags, "dagster/run_key": run.run_key},
        resources=resources(emulator.url, database_url, depth=20, ranking_depth=30),
        instance=dagster_instance,
    )
    assert executed.success
    assert {store.requests.get(m).status for m in owed} == {"succeeded"}
    assert horizon.owed(store, now) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_burst_of_10000_requests_never_exceeds_the_bound(database_url):
    bound = 300
    store = Warehouse(database_url)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=15)  # 10,000 x 2 min = ~14 days
    # The bound is under test, not the deadline: a loaded machine must not turn answers into 503s.
    settings = Settings(
        database_url=database_url,
        history_start=start - timedelta(days=1),
        backfill_max_pending=bound,
        api_db_timeout_seconds=30,
    )
    # Every other minute: distinct requests that cannot share ranges (no gap allowed), the worst case for runs.
    targets = [(start + timedelta(minutes=2 * i)).strftime("%Y-%m-%dT%H:%MZ") for i in range(10_000)]
    with ApiServer(settings) as server, ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda t: server.get("/", params={"datetime": t}).status_code, targets))
    assert statuses.count(202) == bound and statuses.count(429) == 10_000 - bound
    assert store.requests.count(["requested"]) == bound
    runs, ticks = 0, 0
    with dg.instance_for_test() as instance:
        while (result := tick(database_url, instance, backfill_max_runs_per_tick=50)).run_requests:
            assert len(result.run_requests) <= 50
            runs, ticks = runs + len(result.run_requests), ticks + 1
    assert runs == bound and ticks == bound // 50


def test_requests_launched_before_migration_0003_follow_their_old_runs(database_url, dagster_instance, monkeypatch):
    """Before 0003 `launched` meant "run key handed over", with the key in `run_id`, and runs carried
    the request tag "true". After the upgrade such a request waits on its old run like any submitted
    one (no second run), and mixes with new keys in the same tick."""
    store = Warehouse(database_url)
    store.migrate("downgrade", "0002")
    old_key, lost_key = "backfill-2026-11-20-12:00...2026-11-20-12:00", "backfill-2026-11-20-12:05...2026-11-20-12:05"
    old_row = {"status": "launched", "requested_at": BASE, "updated_at": datetime.now(UTC), "error": None}
    with store.engine.begin() as conn:
        columns = [sa.column(c, UTCDateTime) for c in ("minute", "requested_at", "updated_at")]
        columns += [sa.column(c) for c in ("status", "run_id", "error")]
        conn.execute(sa.insert(sa.table("backfill_requests", *columns)),
                     [{"minute": BASE, "run_id": old_key, **old_row},
                      {"minute": BASE + timedelta(minutes=5), "run_id": lost_key, **old_row}])  # fmt: skip
    store.upgrade()
    old_run = create_run(dagster_instance, dg.RunRequest(run_key=old_key, tags={REQUEST_TAG: "true"}))
    store.requests.ask(BASE + timedelta(minutes=10), POLICY)  # a new request: a new key in the same ticks

    (new,) = tick(database_url, dagster_instance).run_requests
    assert new.tags[RANGE_START] == "2026-11-20-12:10"  # nothing relaunched for the old requests
    migrated = store.requests.get(BASE)
    assert (migrated.status, migrated.run_id, migrated.attempts) == ("launched", old_run.run_id, 1)
    waiting = store.requests.get(BASE + timedelta(minutes=5))
    assert (waiting.status, waiting.run_key, waiting.attempts) == ("requested", lost_key, 1)
    create_run(dagster_instance, new)
    monkeypatch.setattr(sensors, "LAUNCH_GRACE", timedelta(0))  # the old run was pruned: launch it anew
    (again,) = tick(database_url, dagster_instance).run_requests
    assert again.tags[RANGE_START] == "2026-11-20-12:05" and store.requests.get(BASE).status == "launched"


def test_a_run_whose_worker_died_ends_at_its_max_runtime_and_its_request_fails(
    database_url, dagster_instance, monkeypatch
):
    """A killed run worker leaves its run STARTED for ever (the DefaultRunLauncher cannot check a
    worker's health). Request runs carry dagster/max_runtime, so run monitoring ends such a run
    (check_run_timeout is what the daemon runs each iteration), and the request fails from the record."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance, backfill_max_runtime_seconds=60).run_requests
    assert request.tags[MAX_RUNTIME_TAG] == "60"
    run = create_run(dagster_instance, request, status=dg.DagsterRunStatus.STARTING)
    started = dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)
    dagster_instance.report_dagster_event(started, run.run_id, timestamp=time.time() - 61)  # then the worker died
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "launched"

    check_run_timeout(dagster_instance, dagster_instance.get_run_record_by_id(run.run_id), logging.getLogger(), 0)
    monkeypatch.setattr(runs, "RETRY_GRACE", timedelta(0))  # a run retry, if the instance makes one, never came
    tick(database_url, dagster_instance)
    ended = store.requests.get(BASE)
    assert dagster_instance.get_run_by_id(run.run_id).is_finished
    assert (ended.status, ended.permanent) == ("failed", False) and "maximum runtime" in ended.error


def test_a_failure_waits_for_its_retry_only_while_one_may_come(database_url, dagster_instance, monkeypatch):
    """Dagster stores a run's failure, then tags it will_retry, and the daemon creates the retry
    an iteration later. A tick in between must not fail the request; a retry that never comes
    must not leave it open."""
    monkeypatch.setattr(dg.DagsterInstance, "run_retries_enabled", property(lambda _: True))
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    (request,) = tick(database_url, dagster_instance).run_requests
    run = create_run(dagster_instance, request, status=dg.DagsterRunStatus.FAILURE)  # failed, not tagged yet
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "launched"
    dagster_instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "true"})
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "launched"
    monkeypatch.setattr(runs, "RETRY_GRACE", timedelta(0))  # the daemon never created the retry
    tick(database_url, dagster_instance)
    assert store.requests.get(BASE).status == "failed"


def test_a_tick_while_runs_work_writes_nothing(database_url, dagster_instance):
    """Reconciling reads Dagster's records every tick; it writes only what changed."""
    store = Warehouse(database_url)
    for minute in minutes(0, 10):
        store.requests.ask(minute, POLICY)
    for request in tick(database_url, dagster_instance).run_requests:
        create_run(dagster_instance, request, status=dg.DagsterRunStatus.STARTED)
    tick(database_url, dagster_instance)
    assert {store.requests.get(m).status for m in minutes(0, 10)} == {"launched"}
    writes = []
    engine = warehouse_for(database_url).requests.writer
    listener = lambda conn, cursor, statement, *_: writes.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        tick(database_url, dagster_instance)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert [w for w in writes if w.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))] == []


DAEMON_WAREHOUSE = "REQUEST_SENSOR_TEST_DATABASE_URL"


@dg.definitions
def daemon_definitions() -> dg.Definitions:
    """The code location the daemon tests load: the project's definitions, with the request
    sensor bound to the test's warehouse (read when the daemon loads the location)."""
    sensor = build_backfill_requests_sensor(sensor_settings(os.environ[DAEMON_WAREHOUSE]))
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=defs.resources, sensors=[sensor]
    )


@pytest.fixture
def sensor_daemon(database_url, monkeypatch):
    """Iterations of Dagster's own sensor daemon over that code location, in a fresh instance
    whose runs queue as in production (nothing executes them); each iteration is one interval
    after the last. `crash_at` stops an iteration at one of the crash points Dagster's own
    recovery tests use, by raising there: the tick is left failed rather than started, and the
    next iteration picks up what was left either way (a failed tick's reserved runs, or none)."""
    monkeypatch.setenv(DAEMON_WAREHOUSE, database_url)
    target = LoadableTargetOrigin(
        module_name="tests.test_sensors", attribute="daemon_definitions", working_directory=os.getcwd()
    )
    origin = InProcessCodeLocationOrigin(target, location_name="crypto_pipeline")
    queued = {"run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with (
        dg.instance_for_test(overrides=queued) as instance,
        create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget([origin]), instance) as context,
    ):
        iterations = []

        def iterate(crash_at: str | None = None) -> dg.DagsterInstance:
            flags = {"backfill_requests_sensor": {crash_at: Exception(f"killed at {crash_at}")}} if crash_at else None
            with freeze_time(datetime.now(UTC) + timedelta(seconds=31 * len(iterations))):
                list(execute_sensor_iteration(context, logging.getLogger(), None, None, debug_crash_flags=flags))
            iterations.append(crash_at)
            return instance

        yield iterate


def request_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [run for run in instance.get_runs() if REQUEST_TAG in run.tags]


def test_a_daemon_killed_after_the_hand_over_and_before_reserving_the_run(database_url, sensor_daemon, monkeypatch):
    """The sensor handed the minute over (a key, an attempt counted), then the daemon died before
    it recorded the run request: Dagster never creates that run. The request is released after
    the grace and launched under a new key, one run in all, one attempt counted."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    instance = sensor_daemon(crash_at="AUTOMATION_EVALUATIONS_ADDED")
    handed_over = store.requests.get(BASE)
    assert (handed_over.status, handed_over.attempts) == ("requested", 1) and handed_over.run_key
    assert request_runs(instance) == []
    sensor_daemon()  # restarted, within the grace: it waits
    assert request_runs(instance) == [] and store.requests.get(BASE).run_key == handed_over.run_key
    monkeypatch.setattr(sensors, "LAUNCH_GRACE", timedelta(0))
    sensor_daemon()  # past the grace: released and handed over anew, and Dagster creates that run
    (run,) = request_runs(instance)
    assert run.tags["dagster/run_key"] != handed_over.run_key
    sensor_daemon()
    launched = store.requests.get(BASE)
    assert (launched.status, launched.run_id, launched.attempts) == ("launched", run.run_id, 1)


def test_a_daemon_killed_after_reserving_the_run_creates_it_under_the_same_key(
    database_url, sensor_daemon, monkeypatch
):
    """The daemon died after recording the run request, before creating the run: on restart it
    submits that tick's run, under the key the request holds; no second run, even past the grace."""
    store = Warehouse(database_url)
    store.requests.ask(BASE, POLICY)
    instance = sensor_daemon(crash_at="RUN_IDS_RESERVED")
    handed_over = store.requests.get(BASE)
    assert request_runs(instance) == [] and handed_over.run_key
    monkeypatch.setattr(sensors, "LAUNCH_GRACE", timedelta(0))
    sensor_daemon()  # the restarted daemon finishes the interrupted tick first
    (run,) = request_runs(instance)
    assert run.tags["dagster/run_key"] == handed_over.run_key
    sensor_daemon()
    launched = store.requests.get(BASE)
    assert (launched.status, launched.run_id, launched.attempts) == ("launched", run.run_id, 1)
    assert len(request_runs(instance)) == 1
