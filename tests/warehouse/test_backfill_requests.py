"""The request lifecycle (warehouse/requests.py): one test per transition, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import seed_snapshot
from warehouse.requests import NO_DATA_ERROR, Origin, RequestPolicy
from warehouse.schema import backfill_requests, snapshots
from warehouse.store import Warehouse

MINUTE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NEXT = MINUTE + timedelta(minutes=1)
NOW = datetime.now(UTC).replace(microsecond=0)  # the wall clock: launch() stamps with it too
LATER = NEXT + timedelta(days=1)  # every minute of the tests is due before it
POLICY = RequestPolicy(max_pending=10, max_attempts=3, backoff=timedelta(minutes=1))

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def requests(database_url):
    return Warehouse(database_url).requests


def launched(requests, *minutes: datetime, key: str = "key-1", run_id: str = "run-1") -> None:
    """Ask for the minutes, submit them under `key`, and let Dagster 'create' run `run_id`."""
    for minute in minutes:
        requests.ask(minute, POLICY, NOW)
    requests.submit(min(minutes), max(minutes), key, NOW)
    requests.launch(key, run_id)


def test_ask_records_a_request_within_the_bound(requests):
    first = requests.ask(MINUTE, POLICY, NOW)
    assert (first.status, first.attempts, first.run_key) == ("requested", 0, None)
    assert requests.ask(MINUTE, POLICY, NOW) == first  # once per minute
    full = RequestPolicy(max_pending=1)
    assert requests.ask(NEXT, full, NOW) is None  # the bound: the API answers 429
    assert requests.count(["requested"]) == 1


def test_submit_hands_due_minutes_to_one_run_key(requests):
    for minute in (MINUTE, NEXT):
        requests.ask(minute, POLICY, NOW)
    assert [r.minute for r in requests.due(10, LATER)] == [MINUTE, NEXT]
    assert requests.submit(MINUTE, NEXT, "key-1", NOW) == 2
    assert requests.due(10, LATER) == []
    submitted = requests.get(MINUTE)
    assert (submitted.status, submitted.run_key, submitted.submitted_at, submitted.run_id, submitted.attempts) == (
        "requested", "key-1", NOW, None, 1,
    )  # fmt: skip
    assert requests.submit(MINUTE, NEXT, "key-2", NOW) == 0  # already handed over
    assert {r.minute for r in requests.in_flight()} == {MINUTE, NEXT}


def test_launch_needs_the_run_dagster_created(requests):
    launched(requests, MINUTE, NEXT, run_id="0f0e-real-run-id")
    request = requests.get(MINUTE)
    assert (request.status, request.run_id, request.attempts) == ("launched", "0f0e-real-run-id", 1)
    assert requests.launch("key-1", "another-run") == 0  # only from requested


def test_release_returns_a_never_created_run_to_requested(requests):
    requests.ask(MINUTE, POLICY, NOW)
    requests.submit(MINUTE, MINUTE, "key-1", NOW)
    assert requests.release("key-1") == 1
    request = requests.get(MINUTE)
    assert (request.status, request.run_key, request.attempts) == ("requested", None, 0)  # no attempt was made
    assert [r.minute for r in requests.due(10, LATER)] == [MINUTE]


def test_succeed_when_the_merge_serves_the_minute_from_any_unsettled_state(requests, database_url):
    store = Warehouse(database_url)
    launched(requests, MINUTE)
    requests.ask(NEXT, POLICY, NOW)  # never launched: a minute run stored it anyway
    seed_snapshot(store, MINUTE)
    seed_snapshot(store, NEXT)
    for minute in (MINUTE, NEXT):
        request = store.requests.get(minute)
        assert (request.status, request.error, request.run_key) == ("succeeded", None, None)
    assert requests.fail("key-1", "late failure report", True) == 0  # succeeded stays succeeded


def test_a_run_that_stores_its_minute_before_the_sensor_sees_it_counts_its_attempt(requests, database_url):
    requests.ask(MINUTE, POLICY, NOW)
    requests.submit(MINUTE, MINUTE, "key-1", NOW)  # the run is quick: merged before any `launch`
    seed_snapshot(Warehouse(database_url), MINUTE)
    request = requests.get(MINUTE)
    assert (request.status, request.attempts) == ("succeeded", 1)


def test_a_run_retry_that_stores_a_failed_minute_makes_it_succeed(requests, database_url):
    launched(requests, MINUTE)
    requests.fail("key-1", "run worker crashed", False, NOW)
    seed_snapshot(Warehouse(database_url), MINUTE)
    assert requests.get(MINUTE).status == "succeeded"  # /backfills agrees with /


def test_fail_records_the_error_and_when_to_ask_again(requests):
    launched(requests, MINUTE)
    assert requests.fail("key-1", "CMC error 1006: plan", True, NOW) == 1
    request = requests.get(MINUTE)
    assert (request.status, request.error, request.permanent) == ("failed", "CMC error 1006: plan", True)
    assert POLICY.next_attempt(request) == NOW + timedelta(minutes=1)


def test_requeue_a_launched_request_whose_run_record_is_gone(requests):
    launched(requests, MINUTE)
    assert requests.requeue("key-1") == 1
    request = requests.get(MINUTE)
    assert (request.status, request.run_key, request.run_id, request.attempts) == ("requested", None, None, 1)


def test_ask_again_after_a_failure_is_bounded_with_backoff(requests):
    backoffs = []
    for attempt in range(1, POLICY.max_attempts + 1):
        launched(requests, MINUTE, key=f"key-{attempt}", run_id=f"run-{attempt}")
        failed_at = NOW + timedelta(hours=attempt)
        requests.fail(f"key-{attempt}", "upstream down", False, failed_at)
        failed = requests.get(MINUTE)
        assert failed.attempts == attempt
        if (next_attempt := POLICY.next_attempt(failed)) is None:
            break
        backoffs.append(next_attempt - failed_at)
        early = requests.ask(MINUTE, POLICY, next_attempt - timedelta(seconds=1))
        assert early.status == "failed"  # too early: unchanged, and it says until when
        again = requests.ask(MINUTE, POLICY, next_attempt)
        assert (again.status, again.attempts, again.error, again.run_key) == ("requested", attempt, None, None)
        assert requests.ask(MINUTE, POLICY, next_attempt + timedelta(seconds=1)) == again  # asking twice re-queues once
    assert backoffs == [timedelta(minutes=1), timedelta(minutes=2)]  # doubling
    exhausted = requests.get(MINUTE)
    assert (exhausted.attempts, POLICY.next_attempt(exhausted)) == (POLICY.max_attempts, None)
    assert requests.ask(MINUTE, POLICY, NOW + timedelta(days=30)).status == "failed"  # no attempt left


def test_asking_for_an_open_request_never_starts_it_over(requests):
    """However long a run waits in Dagster's queue, asking again launches no second run for the
    minute: only Dagster's run records (the sensor) move an open request back to `requested`."""
    launched(requests, MINUTE)
    requests.ask(NEXT, POLICY, NOW)
    requests.submit(NEXT, NEXT, "key-2", NOW)
    for minute, status in ((MINUTE, "launched"), (NEXT, "requested")):
        before = requests.get(minute)
        assert before.status == status
        assert requests.ask(minute, POLICY, NOW + timedelta(days=1)) == before
        assert requests.get(minute) == before  # same key, same run: nothing to launch again
    assert requests.due(10, LATER) == []


def test_a_permanent_failure_never_uses_up_the_attempts(requests):
    """The plan or the key is fixed outside: after its backoff, asking again starts a new count."""
    for attempt in range(1, POLICY.max_attempts):
        launched(requests, MINUTE, key=f"key-{attempt}")
        requests.fail(f"key-{attempt}", "upstream down", False, NOW)
        requests.ask(MINUTE, POLICY, NOW + timedelta(hours=attempt))
    launched(requests, MINUTE, key="key-last")
    requests.fail("key-last", "CMC error 1006: plan", True, NOW)
    refused = requests.get(MINUTE)
    assert (refused.attempts, POLICY.next_attempt(refused)) == (POLICY.max_attempts, NOW + timedelta(minutes=4))
    again = requests.ask(MINUTE, POLICY, NOW + timedelta(minutes=4))
    assert (again.status, again.attempts, again.permanent) == ("requested", 0, False)


def test_a_merge_fails_only_the_requests_launched_under_its_run(requests, database_url):
    """Two runs cover the same window (a range run, a re-run): the one that stored nothing fails
    its own requests, never those another run is still working on."""
    store = Warehouse(database_url)
    launched(requests, MINUTE, key="key-1", run_id="run-1")
    launched(requests, NEXT, key="key-2", run_id="run-2")
    store.merge_top_assets(MINUTE, NEXT + timedelta(minutes=1), 200, run_id="run-1", run_key="key-1")  # no data
    assert (requests.get(MINUTE).status, requests.get(MINUTE).error) == ("failed", NO_DATA_ERROR)
    assert (requests.get(NEXT).status, requests.get(NEXT).run_id) == ("launched", "run-2")


def test_a_run_failing_for_a_minute_another_run_stored_makes_it_succeed(requests, database_url):
    """The API's lookup missed the minute, another run stored it, then the API asked for it (the
    miss is kept a second): the request's own run failing must not make /backfills say failed
    while / serves the minute."""
    seed_snapshot(Warehouse(database_url), MINUTE)
    launched(requests, MINUTE, NEXT)
    assert requests.fail("key-1", "coinmarketcap: HTTP 503", False, NOW) == 2
    served, unserved = requests.get(MINUTE), requests.get(NEXT)
    assert (served.status, served.error, served.run_key) == ("succeeded", None, None)
    assert (unserved.status, unserved.error) == ("failed", "coinmarketcap: HTTP 503")


def test_owe_records_each_new_minute_once_beyond_the_bound_of_asked_ones(requests):
    """Stand-ins and the healer owe minutes without the API's bound (the gaps bound them); an owed
    minute already requested, settled or failed is left as it is; asked requests alone count."""
    full = RequestPolicy(max_pending=1)
    assert requests.owe([MINUTE, NEXT], Origin.HEALER, NOW) == 2
    assert requests.owe([MINUTE], Origin.STAND_IN, NOW) == 0  # already owed: unchanged
    assert (requests.get(MINUTE).status, requests.get(MINUTE).origin) == ("requested", "healer")
    assert requests.ask(MINUTE + timedelta(minutes=5), full, NOW).origin == "asked"  # the healer's do not count
    assert requests.ask(MINUTE + timedelta(minutes=6), full, NOW) is None  # the asked one does


def test_due_minutes_wait_for_the_live_window_and_asked_ones_go_first(requests):
    """A minute the live schedule may still store is not handed to a backfill run; among the due,
    a person's requests go before the healer's."""
    healed, asked, live = MINUTE, NEXT, NEXT + timedelta(minutes=1)
    requests.owe([healed], Origin.HEALER, NOW)
    requests.ask(asked, POLICY, NOW)
    requests.owe([live], Origin.STAND_IN, NOW)
    assert [r.minute for r in requests.due(10, live)] == [asked, healed]
    assert [r.minute for r in requests.due(1, live)] == [asked]


RECENT = NOW.replace(second=0) - timedelta(hours=1)  # within the healing horizon (24 h)


def test_retry_requeues_transient_failures_of_the_horizon_after_their_backoff(requests):
    """Within the healing horizon the sensor queues another attempt by itself; an older minute waits
    for someone to ask again, and a permanent failure for an operator."""
    launched(requests, RECENT, RECENT + timedelta(minutes=1), MINUTE)
    requests.fail("key-1", "upstream down", False, NOW)
    assert requests.retry(POLICY, NOW + timedelta(seconds=59)) == 0  # its backoff is not over
    assert requests.retry(POLICY, NOW + timedelta(minutes=1)) == 2  # the recent ones, not MINUTE
    again = requests.get(RECENT)
    assert (again.status, again.attempts, again.error, again.run_key) == ("requested", 1, None, None)
    assert again.run_id is None and requests.get(MINUTE).status == "failed"
    assert requests.ask(MINUTE, POLICY, NOW + timedelta(minutes=1)).status == "requested"  # asked: retried
    launched(requests, RECENT, key="key-2")
    requests.fail("key-2", "CMC error 1006: plan", True, NOW)
    assert requests.retry(POLICY, NOW + timedelta(days=1)) == 0  # a permanent failure waits for an operator


def test_the_backoff_stops_growing_and_the_horizon_is_retried_until_published(requests, database_url):
    """Outside the healing horizon a minute gets max_attempts; inside it, a fault longer than the
    attempts would otherwise leave it owed for ever, so it is retried at most max_backoff apart,
    however many attempts it has made."""
    policy = RequestPolicy(max_attempts=2, backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=3))
    for attempt in range(1, 5):
        launched(requests, RECENT, key=f"key-{attempt}")
        failed_at = NOW + timedelta(hours=attempt)
        requests.fail(f"key-{attempt}", "upstream down", False, failed_at)
        backoff = policy.next_attempt(requests.get(RECENT), failed_at)
        assert backoff - failed_at == min(timedelta(minutes=2 ** (attempt - 1)), timedelta(minutes=3))
        assert requests.retry(policy, backoff) == 1
    launched(requests, MINUTE, key="old-1")
    requests.fail("old-1", "upstream down", False, NOW)
    requests.ask(MINUTE, policy, NOW + timedelta(minutes=1))
    launched(requests, MINUTE, key="old-2")
    requests.fail("old-2", "upstream down", False, NOW)
    assert policy.next_attempt(requests.get(MINUTE), NOW) is None  # its attempts are used up
    with Warehouse(database_url).engine.begin() as conn:  # a minute failing for a day, every few minutes
        conn.execute(backfill_requests.update().where(backfill_requests.c.minute == RECENT).values(attempts=1000))
    launched(requests, RECENT, key="key-1000")
    requests.fail("key-1000", "upstream down", False, NOW)
    assert policy.next_attempt(requests.get(RECENT), NOW) == NOW + timedelta(minutes=3)
    assert requests.retry(policy, NOW + timedelta(minutes=3)) == 1


def test_owe_reopens_a_minute_whose_snapshot_is_gone_and_stored_ones_need_no_run(requests, database_url):
    """A succeeded request whose snapshot was lost (a partial restore) is owed again; a requested
    one whose minute got stored before any run was handed it succeeds without a run."""
    store = Warehouse(database_url)
    seed_snapshot(store, MINUTE, depth=30)
    requests.owe([MINUTE, NEXT], Origin.HEALER, NOW)
    assert requests.get(MINUTE).status == "requested"  # owed just before its merge committed
    assert requests.succeed_stored() == 1
    assert (requests.get(MINUTE).status, requests.get(NEXT).status) == ("succeeded", "requested")
    assert requests.owe([MINUTE], Origin.HEALER, NOW) == 0  # stored: nothing to reopen
    with store.engine.begin() as conn:
        conn.execute(snapshots.delete().where(snapshots.c.minute == MINUTE))
    assert requests.owe([MINUTE], Origin.HEALER, NOW) == 1
    assert requests.get(MINUTE).status == "requested"
