"""The backfill sensor: requested minutes become bounded, deduplicated range runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from common.settings import Settings
from crypto_pipeline.definitions import defs
from crypto_pipeline.sensors import RANGE_END, RANGE_START, adjacent_ranges, build_backfill_requests_sensor
from tests.api.conftest import ApiServer
from warehouse.store import Warehouse

BASE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def minutes(*offsets: int) -> list[datetime]:
    return [BASE + timedelta(minutes=o) for o in offsets]


def test_adjacent_minutes_share_a_range_up_to_the_chunk_size():
    assert adjacent_ranges(minutes(5, 0, 1, 2, 7, 8), 10) == [
        (BASE, BASE + timedelta(minutes=2)),
        (BASE + timedelta(minutes=5), BASE + timedelta(minutes=5)),
        (BASE + timedelta(minutes=7), BASE + timedelta(minutes=8)),
    ]
    assert adjacent_ranges(minutes(*range(5)), 2) == [
        (BASE, BASE + timedelta(minutes=1)),
        (BASE + timedelta(minutes=2), BASE + timedelta(minutes=3)),
        (BASE + timedelta(minutes=4), BASE + timedelta(minutes=4)),
    ]


def evaluate(database_url: str, max_minutes_per_run: int = 120, max_runs_per_tick: int = 10) -> dg.SensorResult:
    sensor = build_backfill_requests_sensor(database_url, max_minutes_per_run, max_runs_per_tick)
    with dg.instance_for_test() as instance:
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_idle_tick_builds_no_dagster_instance(database_url):
    """The daemon hands the code server an instance ref; building the instance from it costs
    ~60 ms of CPU, four times a minute, so a tick with nothing requested must not."""
    sensor = build_backfill_requests_sensor(database_url, max_minutes_per_run=120, max_runs_per_tick=10)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs)
        assert sensor.evaluate_tick(context).skip_message == "no backfill requested"
        assert context._instance is None  # noqa: SLF001 - no public way to ask whether it was built


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_sensor_launches_each_range_once_and_marks_it(database_url):
    store = Warehouse(database_url)
    for minute in minutes(0, 1, 2, 10):
        store.request_backfill(minute, max_pending=100)
    result = evaluate(database_url)
    tags = sorted((r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests)
    assert tags == [("2026-11-20-12:00", "2026-11-20-12:02"), ("2026-11-20-12:10", "2026-11-20-12:10")]
    assert all(r.run_key.startswith("backfill-") for r in result.run_requests)
    assert {store.backfill_request(m).status for m in minutes(0, 1, 2, 10)} == {"launched"}
    assert evaluate(database_url).run_requests == []  # nothing requested any more


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_burst_of_10000_requests_never_exceeds_the_bound(database_url):
    bound = 300
    store = Warehouse(database_url)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=15)  # 10,000 x 2 min = ~14 days
    settings = Settings(database_url=database_url, history_start=start - timedelta(days=1), backfill_max_pending=bound)
    # Every other minute: distinct requests that cannot share ranges, the worst case for runs.
    targets = [(start + timedelta(minutes=2 * i)).strftime("%Y-%m-%dT%H:%MZ") for i in range(10_000)]
    with ApiServer(settings) as server, ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda t: server.get("/", params={"datetime": t}).status_code, targets))
    assert statuses.count(202) == bound and statuses.count(429) == 10_000 - bound
    recorded = store.count_backfill_requests(["requested"])
    assert recorded == bound
    runs, ticks = 0, 0
    while (result := evaluate(database_url, max_runs_per_tick=50)).run_requests:
        assert len(result.run_requests) <= 50
        runs, ticks = runs + len(result.run_requests), ticks + 1
    assert runs == bound and ticks == bound // 50
