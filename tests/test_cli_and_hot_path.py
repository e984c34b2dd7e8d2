"""The code location as an operator uses it: the dagster CLI, and a year-long partition set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from common.settings import get_settings
from scripts.backfill_range import day_ranges
from tests.conftest import ROOT
from warehouse.store import Warehouse


def stack_env(emulator_url: str, database_url: str, dagster_home, **extra) -> dict:
    """The environment `make run` gives the stack: no API keys, so the emulator serves both upstreams."""
    env = {k: v for k, v in os.environ.items() if k not in ("CMC_API_KEY", "CRYPTOCOMPARE_API_KEY")}
    env.update(
        EMULATOR_URL=emulator_url,
        DATABASE_URL=database_url,
        DAGSTER_HOME=str(dagster_home),
        **extra,
    )
    return env


def minute_key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d-%H:%M")


def test_cli_materializes_a_minute_and_a_range_in_one_run(emulator, tmp_path, project_dir):
    database_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    store = Warehouse(database_url)
    store.upgrade()
    home = tmp_path / "dagster"
    home.mkdir()
    env = stack_env(emulator.url, database_url, home)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "crypto_pipeline.definitions",
               "--select", "prices,rankings,top_assets"]  # fmt: skip
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    subprocess.run([*command, "--partition", minute_key(now)], env=env, cwd=project_dir, check=True, timeout=300)
    assert store.latest_snapshot().minute == now

    first = now - timedelta(hours=2)
    last = first + timedelta(minutes=4)
    # Dagster's CLI takes --partition-range only under BackfillPolicy.single_run; the assets run
    # ranges a day per run (multi_run), so the documented shell command (docs/backfills.md) is the project's script.
    assert "single_run" in subprocess.run(
        [*command, "--partition-range", f"{minute_key(first)}...{minute_key(last)}"],
        env=env, cwd=project_dir, capture_output=True, text=True, timeout=300,
    ).stderr  # fmt: skip
    subprocess.run([sys.executable, "-m", "scripts.backfill_range", f"{minute_key(first)}...{minute_key(last)}"],
                   env=env, cwd=project_dir, check=True, timeout=300)  # fmt: skip
    for offset in range(5):
        snapshot = store.snapshot_at_or_before(first + timedelta(minutes=offset), timedelta(minutes=1))
        assert snapshot is not None and snapshot.minute == first + timedelta(minutes=offset)
        assert snapshot.row_count == 200
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == 2  # one for the minute, one for the whole range


def test_a_shell_range_is_checked_and_cut_into_runs_of_a_day():
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(days=2)
    assert day_ranges(f"{minute_key(first)}...{minute_key(first + timedelta(minutes=1440))}", now) == [
        (minute_key(first), minute_key(first + timedelta(minutes=1439))),
        (minute_key(first + timedelta(minutes=1440)), minute_key(first + timedelta(minutes=1440))),
    ]
    day = f"{minute_key(first)}...{minute_key(first + timedelta(minutes=1439))}"
    assert day_ranges(day, now) == [(minute_key(first), minute_key(first + timedelta(minutes=1439)))]
    newest = now - timedelta(minutes=get_settings().live_window_minutes)  # the newest minute not fetched live
    assert day_ranges(f"{minute_key(newest)}...{minute_key(newest)}", now) == [(minute_key(newest),) * 2]
    refused = {
        f"{minute_key(first)}": "expected START...END",
        f"1999-01-01-00:00...{minute_key(first)}": "HISTORY_START",
        f"{minute_key(first)}...{minute_key(now + timedelta(minutes=5))}": "the minute in progress",
        f"{minute_key(first)}...2026-13-01": "is not a minute partition",
        f"{minute_key(first)}...{minute_key(first - timedelta(minutes=1))}": "ends before it starts",
        f"{minute_key(first)}...{minute_key(now)}": "live window",
        f"{minute_key(first)}...{minute_key(newest + timedelta(minutes=1))}": "live window",
    }
    for text, reason in refused.items():
        with pytest.raises(ValueError, match=reason):
            day_ranges(text, now)


def test_a_refused_shell_range_starts_no_run(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "scripts.backfill_range", "1999-01-01-00:00...1999-01-01-00:05"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "HISTORY_START" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no instance storage: no run was created


HOT_PATH_PROBE = textwrap.dedent(
    """
    from datetime import datetime, timezone

    import dagster as dg

    MOST_KEYS = 10_000  # a week of minutes; a year is 525,600
    partitions = dg.TimeWindowPartitionsDefinition

    def refuse(*args, **kwargs):
        raise AssertionError("a hot path enumerated every partition")

    def bounded(listing, span):
        def listed(self, *args):
            if span(*args) > MOST_KEYS:
                raise AssertionError(f"a hot path listed {span(*args)} partition keys")
            return listing(self, *args)
        return listed

    partitions.get_partition_keys = refuse
    partitions.get_partition_keys_between_indexes = bounded(
        partitions.get_partition_keys_between_indexes, lambda start, end: end - start
    )
    partitions.get_partition_keys_in_time_window = bounded(
        partitions.get_partition_keys_in_time_window, lambda window: (window.end - window.start).total_seconds() / 60
    )

    from crypto_pipeline.definitions import defs
    from crypto_pipeline.schedules import every_minute
    from crypto_pipeline.partitions import minute_partitions

    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=now, repository_def=defs.get_repository_def()
        )
        (request,) = every_minute.evaluate_tick(context).run_requests
        job = defs.resolve_job_def("minute_snapshot")
        result = job.execute_in_process(instance=instance, partition_key=request.partition_key)
    assert result.success
    print(minute_partitions.get_num_partitions())
    """
)


def test_a_year_of_partitions_never_gets_enumerated_on_the_hot_path(emulator, tmp_path):
    """Listing a year of minutes takes ~40 s here; the schedule tick and the run must not do it.

    Structural, not timed: every way of listing time-window keys is refused past a week of them."""
    database_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    Warehouse(database_url).upgrade()
    year_ago = (datetime.now(UTC) - timedelta(days=366)).strftime("%Y-%m-%dT%H:%M:00Z")
    env = stack_env(emulator.url, database_url, tmp_path, HISTORY_START=year_ago)
    probe = subprocess.run(
        [sys.executable, "-c", HOT_PATH_PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert int(probe.stdout.split()[-1]) > 525_600
