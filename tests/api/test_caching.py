"""Cache-Control tells the truth: how long each answer stays the right one, over HTTP on both backends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.api.conftest import market_rows, seed_snapshot, store_upstream, this_minute

GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


def iso(minute: datetime) -> str:
    return minute.strftime("%Y-%m-%dT%H:%M:00Z")


def test_now_from_the_current_minute_is_cacheable_until_the_next_minute(api, store):
    with api() as server:
        for _ in range(2):  # a minute boundary may pass between seeding and asking: once more then
            minute = this_minute()
            seed_snapshot(store, minute)
            response = server.get("/")
            asked = datetime.now(UTC)
            if response.headers["x-snapshot-time"] == iso(asked.replace(second=0, microsecond=0)):
                break
    assert response.headers["x-snapshot-time"] == iso(minute)
    max_age = int(response.headers["cache-control"].removeprefix("public, max-age="))
    assert 1 <= max_age <= 60 - asked.second + 1  # never past the start of the next minute


def test_now_from_a_stand_in_must_be_revalidated(api, store):
    """In the first seconds of a minute "now" is served from the minute before: no cache may keep it."""
    seed_snapshot(store, this_minute() - timedelta(minutes=1))
    with api() as server:
        stand_in = server.get("/")
        revalidated = server.get("/", headers={"If-None-Match": stand_in.headers["etag"]})
    assert stand_in.status_code == 200 and stand_in.headers["x-snapshot-time"] != iso(this_minute())
    assert stand_in.headers["cache-control"] == "public, no-cache" and stand_in.headers["etag"]
    assert revalidated.status_code == 304 and revalidated.headers["cache-control"] == "public, no-cache"


def test_a_stored_past_minute_is_revalidated_and_its_etag_changes_when_rewritten(api, store):
    minute = this_minute() - timedelta(minutes=30)
    seed_snapshot(store, minute)
    params = {"datetime": iso(minute), "limit": 200}
    with api(api_stored_max_age_seconds=45) as server:
        first = server.get("/", params=params, headers=IDENTITY)
        ranking_rows, price_rows = market_rows(minute)  # a re-run of the minute stores other prices
        store_upstream(store, minute, ranking_rows, [{**p, "price_usd": p["price_usd"] * 1.01} for p in price_rows])
        store.merge_top_assets(minute, minute + timedelta(minutes=1), 200)
        time.sleep(1.1)  # the API resolves a minute to its snapshot at most once a second
        rewritten = server.get("/", params=params, headers={**IDENTITY, "If-None-Match": first.headers["etag"]})
    assert first.headers["cache-control"] == "public, max-age=45, must-revalidate"
    assert "immutable" not in first.headers["cache-control"]
    assert rewritten.status_code == 200 and rewritten.headers["etag"] != first.headers["etag"]
    assert rewritten.json()["data"][0]["price_usd"] != first.json()["data"][0]["price_usd"]


def test_a_new_snapshot_is_served_at_most_a_second_after_it_is_stored(api, store):
    """Also by a query resolved from a lookup another query made before the store: that one used
    to keep the old snapshot for a second from its own resolution, up to ~2 s after the store.
    Two moments of the same minute share one lookup (minute, limit, format) but not a resolution."""
    past = this_minute() - timedelta(minutes=30)
    later = past + timedelta(minutes=1)  # served by `past`, a stand-in, until it is stored
    seed_snapshot(store, past)
    store_upstream(store, later, *market_rows(later))  # fetched, not yet published
    first = {"datetime": iso(later), "limit": 200}
    second = {"datetime": (later + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), "limit": 200}
    with api() as server:
        for params in (first, second):  # validated once, then served by the fast path
            assert server.get("/", params=params).headers["x-snapshot-time"] == iso(past)
        time.sleep(1.1)  # every resolution has expired
        server.get("/", params=first)  # looks the minute up
        store.merge_top_assets(later, later + timedelta(minutes=1), 200)
        stored = time.monotonic()
        time.sleep(0.3)
        server.get("/", params=second)  # resolved from the lookup made before the store
        time.sleep(stored + 1.05 - time.monotonic())
        answer = server.get("/", params=second)
    assert answer.headers["x-snapshot-time"] == iso(later)


def test_each_encoding_has_its_own_etag_and_the_answers_vary_on_accept_and_encoding(api, store):
    minute = this_minute() - timedelta(minutes=30)
    seed_snapshot(store, minute)
    params = {"datetime": iso(minute), "limit": 200}
    with api() as server:
        plain = server.get("/", params=params, headers=IDENTITY)
        zipped = server.get("/", params=params, headers=GZIP)
        as_csv = server.get("/", params={"datetime": iso(minute)}, headers={**IDENTITY, "Accept": "text/csv"})
        cross = server.get("/", params=params, headers={**GZIP, "If-None-Match": plain.headers["etag"]})
        same = server.get("/", params=params, headers={**GZIP, "If-None-Match": zipped.headers["etag"]})
    assert zipped.headers["content-encoding"] == "gzip" and plain.headers["etag"] != zipped.headers["etag"]
    assert cross.status_code == 200 and same.status_code == 304  # a gzip ETag never validates identity bytes
    assert as_csv.headers["etag"] != plain.headers["etag"]
    for answer in (plain, zipped, as_csv, same):
        assert answer.headers["vary"] == "Accept, Accept-Encoding"


def test_stored_minutes_before_history_start_are_served_and_only_new_backfills_are_refused(api, store):
    stored = this_minute() - timedelta(days=2)
    seed_snapshot(store, stored)
    with api(history_start=this_minute() - timedelta(days=1)) as server:
        served = server.get("/", params={"datetime": iso(stored), "limit": 5})
        missing = server.get("/", params={"datetime": iso(stored - timedelta(hours=1))})
    assert served.status_code == 200 and served.json()["snapshot_time"] == iso(stored)
    assert missing.status_code == 404 and "HISTORY_START" in missing.json()["detail"]
    assert store.requests.count(["requested"]) == 0


def test_now_resolved_just_before_a_minute_boundary_is_not_cached_into_the_next(api, store, monkeypatch):
    """The snapshot for now resolved at hh:mm:59.9 and answered at the next minute (a database read in between) is
    the previous minute's snapshot: a stand-in, not cacheable for the whole new minute."""
    minute = this_minute() - timedelta(minutes=5)
    seed_snapshot(store, minute)
    moments = [minute + timedelta(seconds=59.9), minute + timedelta(seconds=60.1)]  # resolve, then answer

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return moments.pop(0) if len(moments) > 1 else moments[0]

    monkeypatch.setattr("api.service.datetime", Clock)
    with api() as server:
        response = server.get("/", params={"limit": 5})
    assert response.status_code == 200 and response.headers["x-snapshot-time"] == iso(minute)
    assert response.headers["cache-control"] == "public, no-cache"
    assert store.requests.count(["requested"]) == 0
