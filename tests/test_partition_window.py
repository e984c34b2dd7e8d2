"""Moving the partition window: HISTORY_START forward, as an operator does it
(docs/architecture.md#time-and-partitions)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_pipeline.partitions import RECOMMENDED_MAX_PARTITIONS, window_warning
from tests.test_cli_and_hot_path import minute_key, stack_env
from warehouse.store import Warehouse

COMMAND = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "crypto_pipeline.definitions",
           "--select", "prices,rankings,top_assets", "--partition"]  # fmt: skip


def test_moving_history_start_forward_keeps_what_is_stored_and_refuses_older_runs(emulator, tmp_path, project_dir):
    database_url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    store = Warehouse(database_url)
    store.upgrade()
    home = tmp_path / "dagster"
    home.mkdir()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = now - timedelta(hours=2)

    def materialize(minute: datetime, history_start: datetime) -> subprocess.CompletedProcess:
        env = stack_env(emulator.url, database_url, home, HISTORY_START=history_start.isoformat())
        return subprocess.run([*COMMAND, minute_key(minute)], env=env, cwd=project_dir, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    assert materialize(old, history_start=now - timedelta(hours=3)).returncode == 0

    moved = now - timedelta(hours=1)  # the operator moves the window past the stored minute
    refused = materialize(old, history_start=moved)
    assert refused.returncode != 0 and minute_key(old) in refused.stderr
    assert materialize(now, history_start=moved).returncode == 0  # the window's minutes still run

    assert store.snapshot_at_or_before(old, timedelta(minutes=1)).minute == old  # nothing stored is lost
    assert store.latest_snapshot().minute == now
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == 2


def test_the_code_location_says_when_the_window_outgrows_the_recommended_size():
    now = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    assert window_warning(now - timedelta(minutes=RECOMMENDED_MAX_PARTITIONS - 1), now) is None
    warning = window_warning(datetime(2026, 11, 1, tzinfo=UTC), now)
    assert "HISTORY_START 2026-11-01T00:00Z makes 193,681 minute partitions" in warning
    assert "HISTORY_START=2027-01-01T00:00Z" in warning  # month-aligned, about 60 days back
