"""Backfill requests are settled by the data itself: the merge that stores a minute settles it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import seed_snapshot
from warehouse.store import NO_DATA_ERROR, Warehouse

SERVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EMPTY = SERVED + timedelta(minutes=1)  # no upstream data is ever stored for this minute
NOT_LAUNCHED = SERVED + timedelta(minutes=2)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_merge_settles_the_requests_of_its_window(database_url):
    store = Warehouse(database_url)
    for minute in (SERVED, EMPTY, NOT_LAUNCHED):
        store.request_backfill(minute, max_pending=10)
    store.set_backfill_status(SERVED, EMPTY, "launched", run_id="backfill-run")

    seed_snapshot(store, SERVED)  # stores and merges SERVED only
    assert store.backfill_request(SERVED).status == "succeeded"
    assert store.backfill_request(EMPTY).status == "launched"

    store.merge_top_assets(SERVED, NOT_LAUNCHED + timedelta(minutes=1), 200, run_id="range-run")
    served, empty, waiting = (store.backfill_request(m) for m in (SERVED, EMPTY, NOT_LAUNCHED))
    assert (served.status, served.run_id) == ("succeeded", None)  # settled by the first merge, kept
    assert (empty.status, empty.run_id, empty.error) == ("failed", "range-run", NO_DATA_ERROR)
    assert waiting.status == "requested"  # its run has not started: the sensor still owns it
    assert store.count_backfill_requests(["requested", "launched"]) == 1


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_settled_request_stays_settled(database_url):
    """A run that fails after its merge has still served the minute: the failure sensor must not
    turn that request into a failure."""
    store = Warehouse(database_url)
    store.request_backfill(SERVED, max_pending=10)
    seed_snapshot(store, SERVED)
    store.set_backfill_status(SERVED, EMPTY, "failed", run_id="later-failure", error="boom")
    assert store.backfill_request(SERVED).status == "succeeded"
