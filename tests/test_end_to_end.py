"""The real stack (dagster dev: webserver, daemon, code server; the API; the emulator) answering
a question about the past: 202, a sensor-launched backfill, then the minute's snapshot.

Runs with SQLite for both warehouse and Dagster instance, and with Postgres for both.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from common.settings import Settings
from crypto_pipeline.reconstruction import minutes_in
from emulator.market import Market
from scripts.run_stack import PRODUCTION_INSTANCE, Stack, postgres_instance_env, stack_environment
from tests.api.conftest import seed_snapshot
from tests.conftest import free_port
from warehouse.coverage import HealingHorizon, unpublished
from warehouse.store import Warehouse

MARKET = Market(3000)


def poll_status(api: str, location: str, wanted: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(api + location, timeout=10).json()
        if status["status"] in wanted:
            return status
        time.sleep(2)
    raise TimeoutError(f"{location} still {status['status']} after {timeout} s")


@pytest.fixture
def stack_settings() -> dict[str, str]:
    """Settings the stack runs with beyond the fixture's own; a test parametrizes it to change them.
    No healing: the tests of requests follow only the minutes they ask for."""
    return {"HEAL_HORIZON_HOURS": "0"}


@pytest.fixture
def stack(emulator, database_url, tmp_path, stack_settings):
    """`make run`'s stack on free ports, Dagster's instance on the same backend as the warehouse."""
    env, _ = stack_environment({"PATH": os.environ["PATH"]})
    home = tmp_path / "dagster"
    home.mkdir()
    env.update(DATABASE_URL=database_url, DAGSTER_HOME=str(home), EMULATOR_URL=emulator.url,
               BACKFILL_MAX_MINUTES_PER_RUN="30", BACKFILL_RETRY_BACKOFF_SECONDS="0", LOG_CONSOLE="false",
               **stack_settings)  # fmt: skip
    if database_url.startswith("postgresql"):
        shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")  # the production instance, on Postgres
        env.update(postgres_instance_env(database_url))
    running = Stack(env, with_emulator=False, api_port=free_port(), dagster_port=free_port(), quiet=True)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_a_past_minute_is_backfilled_on_request(stack, emulator, database_url):
    api = f"http://127.0.0.1:{stack.api_port}"
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    asked = minute.strftime("%Y-%m-%dT%H:%MZ")

    first = httpx.get(api + "/", params={"datetime": asked, "limit": 200}, timeout=10)
    assert first.status_code == 202 and first.headers["location"] == f"/backfills/{asked}"
    status = poll_status(api, first.headers["location"], {"succeeded", "failed"})
    assert status["status"] == "succeeded", status["error"]
    assert status["run_id"] and status["snapshot_url"]

    answer = httpx.get(api + "/", params={"datetime": asked, "limit": 200}, timeout=10)
    assert answer.status_code == 200 and answer.headers["x-snapshot-time"] == minute.strftime("%Y-%m-%dT%H:%M:00Z")
    body = answer.json()
    assert body["count"] == 200 and body["source"] == "emulated"
    unix_minute = int(minute.timestamp() // 60)
    for row in body["data"]:
        asset = MARKET.by_cmc_id[row["cmc_id"]]
        assert row["volume_24h_usd"] == pytest.approx(asset.volume_24h(unix_minute), abs=1440 * 0.005)
        assert row["price_usd"] == asset.price(unix_minute // 5 * 5)  # CMC's 5-minute historical quotes

    # A CMC plan without historical data: the request fails, and its status says why.
    emulator.set_plan("basic")
    refused = (minute - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%MZ")
    location = httpx.get(api + "/", params={"datetime": refused}, timeout=10).headers["location"]
    failed = poll_status(api, location, {"succeeded", "failed"})
    assert failed["status"] == "failed" and "1006" in failed["error"] and "plan" in failed["error"]
    assert failed["permanent"] and failed["attempts"] == 1
    assert Warehouse(database_url).snapshot_at_or_before(minute, timedelta(minutes=1)) is not None

    # The plan is fixed: asking again queues a new attempt under a new run key, and it is served.
    emulator.set_plan("standard")
    again = httpx.get(api + "/", params={"datetime": refused}, timeout=10)
    assert again.status_code == 202 and again.json()["status"] == "requested"
    recovered = poll_status(api, location, {"succeeded", "failed"})
    assert recovered["status"] == "succeeded" and recovered["attempts"] == 1 and recovered["run_id"] != failed["run_id"]
    assert httpx.get(api + "/", params={"datetime": refused}, timeout=10).status_code == 200


def request_runs(home) -> list:
    """The Dagster runs launched for backfill requests, from the instance's own records."""
    import dagster as dg

    from crypto_pipeline.runs import REQUEST_TAG

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [r for r in instance.get_runs() if REQUEST_TAG in r.tags]


@pytest.mark.timeout(1200)  # runs must end before the restart and after it: minutes on a loaded machine
def test_no_request_is_left_open_across_a_daemon_restart(stack, emulator, database_url, tmp_path, monkeypatch):
    """Requests in flight while `dagster dev` (daemon, code server, webserver) is stopped and
    started again: once every request run has ended, no request stays open."""
    from crypto_pipeline.sensors import REQUEST_INTERVAL_SECONDS

    api = f"http://127.0.0.1:{stack.api_port}"
    # A range run fetches one CryptoCompare series per candidate (up to ranking_depth of them),
    # upstream_concurrency at a time. Slowed so that it lasts about 2.5 sensor intervals, a run is
    # still working when the tick after its creation marks its request launched, whatever the
    # interval; the latency (~1.2 s at 30 s) stays far below the client's timeout.
    rounds = Settings.model_fields["ranking_depth"].default / Settings.model_fields["upstream_concurrency"].default
    latency_ms = int(2.5 * REQUEST_INTERVAL_SECONDS * 1000 / rounds)
    assert latency_ms < Settings.model_fields["upstream_timeout_seconds"].default * 1000 / 4
    emulator.set_faults({"cc_histominute": {"latency_ms": latency_ms}})
    # To read the Dagster instance the stack uses: its config reads DAGSTER_HOME (and Postgres' variables).
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    if database_url.startswith("postgresql"):
        for variable, value in postgres_instance_env(database_url).items():
            monkeypatch.setenv(variable, value)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    asked = [now - timedelta(hours=hours, minutes=m) for hours in (2, 4, 6) for m in (0, 1)]  # three ranges
    for minute in asked:
        answer = httpx.get(api + "/", params={"datetime": minute.strftime("%Y-%m-%dT%H:%MZ")}, timeout=10)
        assert answer.status_code == 202
    store = Warehouse(database_url)
    deadline = time.monotonic() + 180
    while store.requests.count(["launched"]) == 0:  # a real run exists for at least one
        assert time.monotonic() < deadline, "nothing was launched"
        time.sleep(1)

    dagster = stack.component("dagster dev")
    os.killpg(dagster.process.pid, signal.SIGINT)
    # dagster dev exited within a second in every run seen; its old code server (gRPC process)
    # finishes the runs in flight on its own and exits after them (the stack's stop reaps it if
    # not). Bounded for a loaded machine.
    dagster.process.wait(420)
    stack.spawn(dagster)

    deadline = time.monotonic() + 420
    while runs := request_runs(tmp_path / "dagster"):
        if all(run.is_finished and not run.is_complete_and_waiting_to_retry for run in runs):
            break
        assert time.monotonic() < deadline, [(r.run_id, r.status) for r in runs]
        time.sleep(5)
    ended = time.monotonic()
    while store.requests.count(["requested", "launched"]):  # reconciled within two minutes
        assert time.monotonic() - ended < 120, [store.requests.get(m) for m in asked]
        time.sleep(2)
    statuses = {store.requests.get(m).status for m in asked}
    assert statuses <= {"succeeded", "failed"}
    assert all(httpx.get(api + "/", params={"datetime": m.strftime("%Y-%m-%dT%H:%MZ")}, timeout=10).status_code
               == (200 if store.requests.get(m).status == "succeeded" else 202) for m in asked)  # fmt: skip


@pytest.fixture
def lost_minutes(database_url) -> datetime:
    """A warehouse whose stack ran live until 12 minutes ago, then was down (seeded before the stack starts)."""
    last_live = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=12)
    seed_snapshot(Warehouse(database_url), last_live)
    return last_live


@pytest.mark.parametrize("stack_settings", [{"HEAL_HORIZON_HOURS": "1"}])
def test_minutes_lost_while_the_stack_was_down_heal_by_themselves(lost_minutes, stack, database_url):
    """Nobody asks: the request sensor finds the lost minutes, launches them, and they are served;
    meanwhile a stand-in for one of them says it is owed, and after it is the minute itself."""
    api = f"http://127.0.0.1:{stack.api_port}"
    owed = lost_minutes + timedelta(minutes=1)
    stand_in = httpx.get(api + "/", params={"datetime": owed.strftime("%Y-%m-%dT%H:%MZ")}, timeout=10)
    assert stand_in.status_code == 200 and stand_in.headers["x-snapshot-time"] == lost_minutes.strftime(
        "%Y-%m-%dT%H:%M:00Z"
    )
    assert stand_in.headers["x-owed-minute"] == owed.strftime("%Y-%m-%dT%H:%M:00Z")

    store, started = Warehouse(database_url), datetime.now(UTC)
    horizon = HealingHorizon.from_settings(Settings(heal_horizon_hours=1))
    due = [m for m in minutes_in(lost_minutes, horizon.due_before(started))]
    deadline = time.monotonic() + 240  # within the test's timeout: the failure then shows the requests
    while unpublished(store, lost_minutes, horizon.due_before(started)):
        assert time.monotonic() < deadline, [store.requests.get(m) for m in due]
        time.sleep(5)
    requests = {m: store.requests.get(m) for m in due[1:]}
    assert {r.status for r in requests.values()} == {"succeeded"}
    # the daemon's first tick may come before the stand-in: the minute is owed once, by whichever was first
    assert {r.origin for m, r in requests.items() if m != owed} == {"healer"}
    healed = httpx.get(api + "/", params={"datetime": owed.strftime("%Y-%m-%dT%H:%MZ")}, timeout=10)
    assert (
        healed.headers["x-snapshot-time"] == owed.strftime("%Y-%m-%dT%H:%M:00Z")
        and "x-owed-minute" not in healed.headers
    )
