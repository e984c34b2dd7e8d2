"""GET /coverage over HTTP, on SQLite and on Postgres: stored vs expected minutes, the holes as
ranges, per-day provenance, and every bad range refused with a reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.conftest import seed_snapshot, this_minute


def iso(minute) -> str:
    return minute.strftime("%Y-%m-%dT%H:%M:00Z")


def test_coverage_reports_stored_minutes_holes_and_provenance(api, store):
    midnight = this_minute().replace(hour=0, minute=0) - timedelta(days=1)  # yesterday's: the range is all past
    start = midnight - timedelta(minutes=3)  # 3 minutes of the day before, 7 of the day after midnight
    seed_snapshot(store, start, depth=20)
    seed_snapshot(store, start + timedelta(minutes=1), depth=20, mode="historical")
    seed_snapshot(store, start + timedelta(minutes=4), depth=20, emulated=False)
    seed_snapshot(store, start + timedelta(minutes=9), depth=20, mode="historical", emulated=False)
    with api() as server:
        response = server.get("/coverage", params={"start": iso(start), "end": iso(start + timedelta(minutes=10))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == (iso(start), iso(start + timedelta(minutes=10)))
    assert {k: body[k] for k in ("expected_minutes", "stored_minutes", "missing_minutes", "complete")} == {
        "expected_minutes": 10, "stored_minutes": 4, "missing_minutes": 6, "complete": False,
    }  # fmt: skip
    assert (body["live_minutes"], body["historical_minutes"], body["emulated_minutes"]) == (2, 2, 2)
    assert [(r["start"], r["end"], r["minutes"]) for r in body["missing_ranges"]] == [
        (iso(start + timedelta(minutes=2)), iso(start + timedelta(minutes=4)), 2),
        (iso(start + timedelta(minutes=5)), iso(start + timedelta(minutes=9)), 4),
    ]
    assert not body["missing_ranges_truncated"]
    before, after = body["days"]
    assert (before["expected_minutes"], before["stored_minutes"], before["live_minutes"]) == (3, 2, 1)
    assert (after["day"], after["expected_minutes"], after["stored_minutes"]) == (midnight.date().isoformat(), 7, 2)
    assert after["emulated_minutes"] == 0 and after["historical_minutes"] == 1 and not after["complete"]


def test_coverage_defaults_to_the_last_day_and_rounds_end_up_to_a_whole_minute(api, store):
    minute = this_minute() - timedelta(minutes=2)
    seed_snapshot(store, minute, depth=20)
    with api() as server:
        head = server.client.head("/coverage")
        default = server.get("/coverage").json()
        rounded = server.get(
            "/coverage", params={"start": iso(minute), "end": (minute + timedelta(seconds=1)).isoformat()}
        )
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "application/json"
    assert default["end"] == iso(this_minute()) and default["expected_minutes"] == 1440
    assert default["stored_minutes"] == 1 and default["missing_minutes"] == 1439
    assert rounded.json()["expected_minutes"] == 1 and rounded.json()["complete"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"start": "2026-12-02T10:00Z", "end": "2026-12-02T10:00Z"}, "must be before end"),
        ({"start": "2026-12-02T10:05Z", "end": "2026-12-02T10:00Z"}, "must be before end"),
        ({"start": "2024-01-01T00:00Z", "end": "2025-06-01T00:00Z"}, "more than 366 days"),
        ({"end": "2999-01-01T00:00Z"}, "end: 2999-01-01T00:00:00Z is in the future"),
        ({"start": "yesterday"}, "start: 'yesterday' is neither ISO 8601 nor unix seconds"),
    ],
)
def test_bad_ranges_are_refused_with_a_reason(api, params, detail):
    with api() as server:
        response = server.get("/coverage", params=params)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
