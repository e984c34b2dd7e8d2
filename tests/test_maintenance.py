"""The `prune_storage` job, run through Dagster on the local SQLite instance and on Postgres."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from pydantic import ValidationError
from sqlalchemy import func, select

from common.settings import Settings
from crypto_pipeline import maintenance
from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.definitions import defs
from crypto_pipeline.maintenance import FINISHED, RetentionConfig, prune_storage_schedule
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.warehouse import WarehouseResource
from scripts.run_stack import LOCAL_INSTANCE, PRODUCTION_INSTANCE, postgres_instance_env
from tests.assets.test_pipeline import resources
from warehouse.schema import fetches, prices, rankings
from warehouse.store import Warehouse


@pytest.fixture
def instance(database_url, tmp_path, monkeypatch):
    """A persistent instance: the committed local config on SQLite, the production one on Postgres."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    if database_url.startswith("postgresql"):
        for variable, value in postgres_instance_env(database_url).items():
            monkeypatch.setenv(variable, value)
        shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    else:
        shutil.copy(LOCAL_INSTANCE, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def check_executions(instance: dg.DagsterInstance, run_id: str) -> int:
    with instance.event_log_storage.index_connection() as conn:
        query = select(func.count()).where(AssetCheckExecutionsTable.c.run_id == run_id)
        return conn.execute(query).scalar_one()


def raw_rows(store: Warehouse) -> int:
    with store.engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (prices, rankings, fetches))


def prune(instance: dg.DagsterInstance, database_url: str, **retention) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("prune_storage").execute_in_process(
        instance=instance,
        resources={
            "retention": RetentionConfig(**retention),
            "warehouse": WarehouseResource(database_url=database_url),
        },
    )


def test_prune_storage_is_scheduled_daily_and_on_by_default():
    assert prune_storage_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert prune_storage_schedule.cron_schedule == "17 3 * * *"
    assert defs.get_schedule_def("prune_storage_schedule").job_name == "prune_storage"


def test_old_runs_go_with_their_events_and_checks_failures_stay_longer(emulator, database_url, instance):
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    # On Postgres the instance is shared with earlier tests, which may leave runs that never started.
    unfinished_before = {r.run_id for r in instance.get_runs() if not r.is_finished}

    def materialize(**overrides) -> dg.ExecuteInProcessResult:
        return dg.materialize([fetch_prices_and_rankings, top_assets], partition_key=minute.strftime(MINUTE_FORMAT),
                              resources=resources(emulator.url, database_url, **overrides), instance=instance,
                              raise_on_error=False)  # fmt: skip

    succeeded = materialize().run_id
    failed = materialize(cc_key="").run_id  # CryptoCompare refuses: the run fails
    assert instance.get_run_by_id(failed).status == dg.DagsterRunStatus.FAILURE
    assert check_executions(instance, succeeded) >= 5 and len(instance.all_logs(succeeded)) > 20
    store = Warehouse(database_url)
    served = store.snapshot_rows(minute, 200)
    assert len(served) == 200 and raw_rows(store) > 0

    assert prune(instance, database_url).success  # the defaults: 7 days of runs, 30 of failures, 7 of raw rows
    assert instance.get_run_by_id(succeeded) is not None and raw_rows(store) > 0

    assert prune(instance, database_url, run_days=0, failed_run_days=30, raw_days=0).success
    assert instance.get_run_by_id(succeeded) is None
    assert instance.all_logs(succeeded) == [] and check_executions(instance, succeeded) == 0
    assert instance.get_run_by_id(failed) is not None and instance.all_logs(failed)
    assert raw_rows(store) == 0
    assert store.snapshot_rows(minute, 200) == served  # the served history is never pruned

    assert prune(instance, database_url, run_days=0, failed_run_days=0, raw_days=0).success
    assert instance.get_run_by_id(failed) is None and instance.all_logs(failed) == []
    # Only the last prune run itself is left (and runs that never finished, which pruning keeps).
    assert [r.job_name for r in instance.get_runs() if r.run_id not in unfinished_before] == ["prune_storage"]


def old_runs(instance: dg.DagsterInstance, database_url: str) -> datetime:
    """Five finished and five failed runs, alone past a zero retention (on Postgres the instance
    keeps earlier tests' runs: a first prune removes them); returns a time after them."""
    assert prune(instance, database_url, run_days=0, failed_run_days=0, raw_days=0).success
    for i, status in enumerate(
        [dg.DagsterRunStatus.SUCCESS] * 4 + [dg.DagsterRunStatus.CANCELED] + [dg.DagsterRunStatus.FAILURE] * 5
    ):
        instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=f"old-run-{i}", status=status))
    return datetime.now(UTC)


def left(instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus], before: datetime) -> int:
    return instance.get_runs_count(dg.RunsFilter(statuses=statuses, created_before=before))


def test_one_prune_deletes_a_backlog_of_several_batches(database_url, instance, monkeypatch):
    """A day can bring more runs than a batch (backfill runs, retries): one daily prune must
    still leave none past the retention, or the backlog grows day after day."""
    before = old_runs(instance, database_url)  # 6 finished (with the first prune run), 5 failed
    monkeypatch.setattr(maintenance, "RUNS_PER_BATCH", 2)
    assert prune(instance, database_url, run_days=0, failed_run_days=0, raw_days=0).success
    assert left(instance, FINISHED, before) == 0 and left(instance, [dg.DagsterRunStatus.FAILURE], before) == 0


def test_a_prune_stops_after_its_batches_and_says_what_is_left(database_url, instance, monkeypatch):
    """A run always ends, however long the backlog; the rest waits for the next day's run."""
    before = old_runs(instance, database_url)
    monkeypatch.setattr(maintenance, "RUNS_PER_BATCH", 2)
    monkeypatch.setattr(maintenance, "MAX_BATCHES", 1)
    result = prune(instance, database_url, run_days=0, failed_run_days=0, raw_days=0)
    assert result.success
    assert left(instance, FINISHED, before) == 4 and left(instance, [dg.DagsterRunStatus.FAILURE], before) == 3
    messages = [event.message for event in instance.all_logs(result.run_id)]
    assert any(m.startswith("4 finished runs created before") for m in messages)
    assert any(m.startswith("3 failed runs created before") for m in messages)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_local_instance_writes_no_file_per_run(emulator, database_url, instance, tmp_path):
    home = tmp_path / "dagster_home"
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def materialize(at: datetime) -> None:
        dg.materialize([fetch_prices_and_rankings, top_assets], partition_key=at.strftime(MINUTE_FORMAT),
                       resources=resources(emulator.url, database_url), instance=instance)  # fmt: skip

    materialize(minute)
    files = sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file())
    materialize(minute - timedelta(minutes=1))
    materialize(minute - timedelta(minutes=2))
    assert sorted(p.relative_to(home) for p in home.rglob("*") if p.is_file()) == files
    assert len(instance.get_runs()) == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_re_execution_whose_root_run_was_pruned_still_finds_its_family(database_url, instance):
    """A canceled or successful root goes after RUN_RETENTION_DAYS while a failed re-execution
    of it stays for FAILED_RUN_RETENTION_DAYS; re-executing that one again must still run."""
    from types import SimpleNamespace

    from crypto_pipeline.maintenance import prune_runs
    from crypto_pipeline.runs import run_family

    @dg.asset
    def nothing() -> None:
        pass

    root = dg.materialize([nothing], instance=instance).run_id
    parent = dg.DagsterRun(job_name="__ASSET_JOB", run_id="parent-run", root_run_id=root, parent_run_id=root,
                           status=dg.DagsterRunStatus.FAILURE)  # fmt: skip
    instance.add_run(parent)
    child = dg.DagsterRun(job_name="__ASSET_JOB", run_id="child-run", root_run_id=root, parent_run_id=parent.run_id)
    instance.add_run(child)
    assert prune_runs(instance, datetime.now(UTC) + timedelta(days=1), timedelta(0), timedelta(days=30)) == [root]

    since, _ = run_family(SimpleNamespace(run=child, instance=instance))

    assert since == instance.get_run_record_by_id(parent.run_id).create_timestamp.replace(tzinfo=UTC)


def test_a_raw_retention_under_a_day_is_refused_by_name(monkeypatch):
    """A range run merges the raw rows it fetched up to an hour or more later: a shorter retention
    could prune them first, and the minute would never be published."""
    monkeypatch.setenv("RAW_RETENTION_DAYS", "0.5")
    with pytest.raises(ValidationError, match="raw_retention_days"):
        Settings(_env_file=None)
    monkeypatch.setenv("RAW_RETENTION_DAYS", "1")
    assert Settings(_env_file=None).raw_retention_days == 1
