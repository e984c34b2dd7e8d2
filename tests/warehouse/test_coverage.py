"""Which minutes the system owes itself: the healing horizon's bounds and its unpublished minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.conftest import seed_snapshot
from warehouse.coverage import HealingHorizon, coverage, first_live_minute, unpublished
from warehouse.schema import ONE_MINUTE
from warehouse.store import Warehouse

NOW = datetime(2026, 12, 3, 18, 45, 30, tzinfo=UTC)
HORIZON = HealingHorizon(
    horizon=timedelta(hours=24), history_start=datetime(2026, 11, 1, tzinfo=UTC), live_window=timedelta(minutes=3)
)


def at(hh_mm: str, day: int = 3) -> datetime:
    hour, minute = map(int, hh_mm.split(":"))
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("first_live", "history_start", "expected"),
    [
        (at("10:00", day=1), None, (at("18:45", day=2), at("18:41"))),  # the horizon binds: 24 h back
        (at("12:00"), None, (at("12:00"), at("18:41"))),  # nothing is owed from before the first live minute
        (at("10:00", day=1), at("15:00"), (at("15:00"), at("18:41"))),  # nor from before HISTORY_START
        (at("18:41"), None, None),  # captured live only since minutes not due yet
        (None, None, None),  # never captured live: a new installation owes nothing
    ],
)
def test_the_window_ends_after_the_live_window_and_its_grace(first_live, history_start, expected):
    """At 18:45:30, with a 3-minute live window and the 2-minute grace, 18:40 is the last minute
    owed (its live run had until 18:45); 18:41 is still the live schedule's."""
    horizon = HORIZON if history_start is None else HealingHorizon(HORIZON.horizon, history_start, HORIZON.live_window)
    assert horizon.window(NOW, first_live) == expected


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_unpublished_minutes_are_the_gaps_of_the_window_from_the_first_live_one(database_url):
    store = Warehouse(database_url)
    assert first_live_minute(store) is None and HORIZON.owed(store, NOW) == []
    for minute in (at("18:30"), at("18:31"), at("18:34"), at("18:40")):
        seed_snapshot(store, minute, depth=30)
    assert first_live_minute(store) == at("18:30")
    assert unpublished(store, at("18:30"), at("18:41")) == [at(f"18:{m}") for m in (32, 33, 35, 36, 37, 38, 39)]
    assert unpublished(store, at("18:30"), at("18:32")) == []
    assert HORIZON.owed(store, NOW) == unpublished(store, at("18:30"), at("18:41"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_coverage_counts_each_day_and_merges_the_missing_minutes_into_ranges(database_url):
    """Across a UTC midnight: stored minutes per day with their provenance, and every missing
    minute in exactly one range (before the first stored, between two, after the last)."""
    store = Warehouse(database_url)
    live = [at("23:57", day=2), at("23:58", day=2), at("00:01")]
    for minute in live:
        seed_snapshot(store, minute, depth=20)
    seed_snapshot(store, at("00:02"), depth=20, mode="historical")
    seed_snapshot(store, at("00:05"), depth=20, mode="historical", emulated=False)
    report = coverage(store, at("23:55", day=2), at("00:08"))
    assert [(d.day.day, d.expected, d.stored, d.live, d.emulated) for d in report.days] == [
        (2, 5, 2, 2, 2),
        (3, 8, 3, 1, 2),
    ]
    assert report.missing == [
        (at("23:55", day=2), at("23:57", day=2)),
        (at("23:59", day=2), at("00:01")),
        (at("00:03"), at("00:05")),
        (at("00:06"), at("00:08")),
    ]
    missing = {first + i * ONE_MINUTE for first, end in report.missing for i in range((end - first) // ONE_MINUTE)}
    assert missing == set(unpublished(store, at("23:55", day=2), at("00:08")))
    assert coverage(store, at("00:01"), at("00:03")).missing == []
    empty = coverage(store, at("12:00"), at("12:10"))
    assert empty.missing == [(at("12:00"), at("12:10"))] and empty.days[0].stored == 0
