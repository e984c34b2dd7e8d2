"""The day file asset through Dagster: real minute partitions materialized against the emulator,
then their day's file, its checks, and the sensor that writes it again when a minute is rewritten."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from common.settings import Settings
from crypto_pipeline.assets.history_day_file import history_day_file
from crypto_pipeline.definitions import defs
from crypto_pipeline.history_sensor import build_history_day_files_sensor
from crypto_pipeline.resources.history_files import HistoryFilesConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from crypto_pipeline.runs import RANGE_END, RANGE_START
from tests.api.conftest import ApiServer, seed_snapshot
from tests.assets.test_pipeline import ASSETS, resources, this_minute
from warehouse.day_files import DayFiles
from warehouse.store import Warehouse

HISTORY_START = datetime(2026, 11, 1, tzinfo=UTC)


def yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


@pytest.fixture
def day_file(database_url, dagster_instance, tmp_path):
    """Materialize one day's file through Dagster: `day_file(day, raise_on_error=True)`."""

    def run(day: date, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [history_day_file],
            partition_key=day.isoformat(),
            resources={
                "warehouse": WarehouseResource(database_url=database_url),
                "history_files": HistoryFilesConfig(
                    directory=str(tmp_path / "history"), history_start=HISTORY_START.isoformat()
                ),
            },
            instance=dagster_instance,
            raise_on_error=raise_on_error,
        )

    return run


@pytest.fixture
def minutes(emulator, database_url, dagster_instance):
    """Materialize a range of real minutes in one run: `minutes(first, last, **resource_overrides)`."""

    def run(first: datetime, last: datetime, **overrides) -> None:
        tags = {RANGE_START: f"{first:%Y-%m-%d-%H:%M}", RANGE_END: f"{last:%Y-%m-%d-%H:%M}"}
        resources_ = resources(emulator.url, database_url, **overrides)
        assert dg.materialize(ASSETS, tags=tags, resources=resources_, instance=dagster_instance).success

    run(this_minute(), this_minute())  # a stored ranking to draw the past minutes' candidates from
    return run


def file_rows(tmp_path, day: date) -> list[tuple]:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        path = DayFiles(tmp_path / "history").path(day)
        sql = (
            f"SELECT minute, rank, cmc_id, symbol, name, price_usd, volume_24h_usd FROM '{path}' ORDER BY minute, rank"
        )
        return con.execute(sql).fetchall()


def test_a_day_of_real_minutes_is_its_file_as_get_answers_it(minutes, day_file, database_url, tmp_path):
    day = yesterday()
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    minutes(end - timedelta(minutes=2), end)  # the day's last two minutes and the next day's first
    result = day_file(day)

    rows = file_rows(tmp_path, day)
    assert sorted({r[0] for r in rows}) == [end - timedelta(minutes=2), end - timedelta(minutes=1)]
    with ApiServer(Settings(_env_file=None, database_url=database_url, history_start=HISTORY_START)) as api:
        for minute in (end - timedelta(minutes=2), end - timedelta(minutes=1)):
            answer = api.get("/", params={"datetime": minute.isoformat(), "limit": 200}).json()
            assert [r[1:] for r in rows if r[0] == minute] == [
                (d["rank"], d["cmc_id"], d["symbol"], d["name"], d["price_usd"], d["volume_24h_usd"])
                for d in answer["data"]
            ]
    metadata = result.asset_materializations_for_node("history_day_file")[0].metadata
    assert (metadata["rows"].value, metadata["minutes"].value, metadata["missing_minutes"].value) == (400, 2, 1438)
    assert metadata["bytes"].value == DayFiles(tmp_path / "history").path(day).stat().st_size
    assert metadata["path"].value == str(DayFiles(tmp_path / "history").path(day))
    checks = {c.check_name: (c.passed, c.severity) for c in result.get_asset_check_evaluations()}
    ok = dg.AssetCheckSeverity.ERROR
    assert checks == {"minutes_as_stored": (True, ok), "ranks_contiguous": (True, ok), "rows_as_stored": (True, ok),
                      "day_complete": (False, dg.AssetCheckSeverity.WARN)}  # fmt: skip


def test_a_file_failing_its_checks_is_not_published(day_file, database_url, tmp_path, monkeypatch):
    day = yesterday()
    noon = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    for minute in (noon, noon + timedelta(minutes=1)):
        seed_snapshot(Warehouse(database_url), minute, depth=30)
    day_file(day)
    published = DayFiles(tmp_path / "history").path(day).read_bytes()

    day_rows = Warehouse.day_rows

    def a_row_lost(self, wanted):  # the write path loses a row: the checks must see it
        table, newest = day_rows(self, wanted)
        return pa.concat_tables([table.slice(0, 5), table.slice(6)]), newest

    monkeypatch.setattr(Warehouse, "day_rows", a_row_lost)
    result = day_file(day, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "failed its checks and was not published" in failure.event_specific_data.error.message
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"ranks_contiguous", "rows_as_stored", "day_complete"}
    assert not result.get_asset_materialization_events()
    assert DayFiles(tmp_path / "history").path(day).read_bytes() == published


def test_the_sensor_writes_a_settled_day_and_again_when_a_minute_is_rewritten(
    minutes, day_file, database_url, dagster_instance, tmp_path
):
    day = yesterday()
    noon = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    minutes(noon, noon + timedelta(minutes=1))
    sensor = build_history_day_files_sensor(
        Settings(_env_file=None, database_url=database_url, history_start=HISTORY_START)
    )

    def tick(cursor: str | None):
        result = sensor.evaluate_tick(
            dg.build_sensor_context(instance=dagster_instance, cursor=cursor, definitions=defs)
        )
        return [r.partition_key for r in result.run_requests], [r.run_key for r in result.run_requests], result.cursor

    # Today has a stored minute too, but it has not ended: only yesterday is asked for.
    days, keys, cursor = tick(None)
    assert days == [day.isoformat()]
    assert tick(cursor)[1] == keys  # until its file is written, the same request (Dagster runs a key once)
    day_file(day)
    assert tick(cursor)[0] == []  # current: nothing to do
    before = {r[:3]: r[5] for r in file_rows(tmp_path, day)}

    # A re-run that changes a minute's prices: CoinMarketCap's quote of 12:00, then CryptoCompare's 12:01 close.
    rewritten = noon + timedelta(minutes=1)
    minutes(rewritten, rewritten, historical_price_source="cryptocompare")
    days, rewritten_keys, cursor = tick(cursor)
    assert days == [day.isoformat()] and rewritten_keys != keys
    day_file(day)
    after = {r[:3]: r[5] for r in file_rows(tmp_path, day)}
    assert after.keys() == before.keys()
    changed = {key[0] for key in after if after[key] != before[key]}
    assert changed == {rewritten}  # the rewritten minute's prices, and only its
    assert tick(cursor)[0] == []

    minutes(noon + timedelta(minutes=5), noon + timedelta(minutes=5))  # a hole filled (a backfill)
    assert tick(cursor)[0] == [day.isoformat()]
