"""GET /, /backfills, health and metrics over HTTP, on SQLite and on Postgres."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from api.rendering import render
from common.settings import Settings
from tests.api.conftest import MARKET, seed_snapshot, store_upstream, this_minute
from warehouse.coverage import HealingHorizon
from warehouse.publish import Snapshot
from warehouse.requests import RequestPolicy


def iso(minute) -> str:
    return minute.strftime("%Y-%m-%dT%H:%M:00Z")


def test_json_envelope_and_headers(api, store):
    minute = this_minute() - timedelta(minutes=10)
    seed_snapshot(store, minute)
    with api() as server:
        response = server.get("/", params={"limit": 10, "datetime": iso(minute)})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["snapshot_time"] == iso(minute) and body["count"] == 10 and body["source"] == "emulated"
    assert [row["rank"] for row in body["data"]] == list(range(1, 11))
    first = body["data"][0]
    asset = MARKET.by_cmc_id[first["cmc_id"]]
    assert first["price_usd"] == asset.price(int(minute.timestamp() // 60)) and first["symbol"] == asset.cmc_symbol
    assert set(first) == {"rank", "symbol", "name", "cmc_id", "price_usd", "volume_24h_usd"}
    assert response.headers["x-snapshot-time"] == iso(minute)
    assert response.headers["cache-control"] == "public, max-age=60, must-revalidate"
    assert response.headers["etag"].startswith('"') and response.headers["last-modified"].endswith("GMT")


def test_now_is_the_default_and_cacheable_until_the_next_minute(api, store):
    seed_snapshot(store, this_minute())
    with api() as server:
        response = server.get("/")
    assert response.status_code == 200 and response.json()["count"] == 100
    max_age = int(response.headers["cache-control"].split("max-age=")[1])
    assert 1 <= max_age <= 60


def test_csv_by_parameter_any_case_and_by_accept_header(api, store):
    minute = this_minute() - timedelta(minutes=5)
    seed_snapshot(store, minute)
    with api() as server:
        by_param = server.get("/", params={"limit": 3, "datetime": iso(minute), "format": "CSV"})
        by_accept = server.get("/", params={"limit": 3, "datetime": iso(minute)}, headers={"Accept": "text/csv"})
        as_json = server.get("/", params={"limit": 3, "datetime": iso(minute)})
    assert by_param.headers["content-type"].startswith("text/csv") and by_param.text == by_accept.text
    assert by_param.text.startswith("Rank,Symbol,Price USD\r\n") and by_param.text.count("\r\n") == 4
    rows = list(csv.reader(io.StringIO(by_param.text)))[1:]
    expected = as_json.json()["data"]
    assert [(int(r), s, float(p)) for r, s, p in rows] == [(e["rank"], e["symbol"], e["price_usd"]) for e in expected]


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
JAVA = "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"  # HttpURLConnection's default


@pytest.mark.parametrize(
    ("accept", "fmt", "served"),
    [
        (None, None, "application/json"),
        ("", None, "application/json"),  # empty: as if absent
        ("*/*", None, "application/json"),  # curl, httpx, requests
        (BROWSER, None, "application/json"),
        (JAVA, None, "application/json"),
        ("*", None, "application/json"),  # `*` alone, as old Java clients send it
        ("application/json", None, "application/json"),
        ("application/*", None, "application/json"),
        ("text/csv", None, "text/csv; charset=utf-8"),
        ("TEXT/CSV; charset=utf-8", None, "text/csv; charset=utf-8"),
        ("text/*", None, "text/csv; charset=utf-8"),
        ("text/csv;q=0.5, application/json", None, "application/json"),  # the higher quality
        ("application/json;q=0.5, text/csv", None, "text/csv; charset=utf-8"),
        ("text/*, application/json", None, "application/json"),  # then the more specific range
        ("*/*, text/csv", None, "text/csv; charset=utf-8"),
        ("text/csv, application/json", None, "text/csv; charset=utf-8"),  # then the one listed first
        ("text/csv;q=0, */*", None, "application/json"),  # the most specific range sets the quality
        ("application/json;q=0, */*;q=0.1", None, "text/csv; charset=utf-8"),
        ("text/csv;q=oops", None, "text/csv; charset=utf-8"),  # not a qvalue: 1
        ("application/xml", None, 406),
        ("text/html", None, 406),
        ("application/json;q=0, text/csv;q=0", None, 406),
        ("application/xml", "csv", "text/csv; charset=utf-8"),  # format wins over Accept
        ("application/xml", "JSON", "application/json"),
        ("text/csv", "json", "application/json"),
    ],
)
def test_accept_chooses_the_format_unless_format_does(api, store, accept, fmt, served):
    minute = this_minute() - timedelta(minutes=5)
    seed_snapshot(store, minute)
    params = {"limit": 3, "datetime": iso(minute)} | ({"format": fmt} if fmt else {})
    with api() as server:
        request = server.client.build_request("GET", "/", params=params)
        if accept is None:
            del request.headers["accept"]
        else:
            request.headers["accept"] = accept
        answers = [server.client.send(request) for _ in range(2)]  # FastAPI, then the fast path
    for answer in answers:
        if served == 406:
            assert answer.status_code == 406 and answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["detail"] == (
                f"Accept: {accept!r} admits neither application/json nor text/csv; "
                "ask for one of them (or */*), or use format=json or format=csv"
            )
            assert answer.headers["vary"] == "Accept"
        else:
            assert answer.status_code == 200 and answer.headers["content-type"] == served
            assert answer.headers["vary"] == "Accept, Accept-Encoding"


def test_conditional_get_and_gzip(api, store):
    minute = this_minute() - timedelta(minutes=5)
    seed_snapshot(store, minute)
    params = {"limit": 200, "datetime": iso(minute)}
    with api() as server:
        first = server.get("/", params=params)
        again = server.get("/", params=params, headers={"If-None-Match": first.headers["etag"]})
        zipped = server.get("/", params=params, headers={"Accept-Encoding": "gzip"})
    assert again.status_code == 304 and again.content == b""
    assert zipped.headers["content-encoding"] == "gzip" and zipped.json() == first.json()
    assert first.json()["count"] == 200


@pytest.mark.parametrize(
    "form",
    ["{iso}", "{iso_offset}", "{naive}", "{unix}", "{unix_in_minute}"],
)
def test_datetime_forms_resolve_to_the_same_minute(api, store, form):
    minute = this_minute() - timedelta(minutes=7)
    seed_snapshot(store, minute)
    value = form.format(
        iso=iso(minute),
        iso_offset=(minute + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:00+02:00"),
        naive=minute.strftime("%Y-%m-%dT%H:%M:00"),
        unix=int(minute.timestamp()),
        unix_in_minute=int(minute.timestamp()) + 59,
    )
    with api() as server:
        response = server.get("/", params={"datetime": value, "limit": 1})
    assert response.status_code == 200 and response.json()["snapshot_time"] == iso(minute)


LEAP_MINUTE = datetime(2016, 12, 31, 23, 59, tzinfo=UTC)  # the last minute with a leap second, 23:59:60Z


@pytest.mark.parametrize(
    "leap_second",
    ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.5Z", "2016-12-31T18:59:60-05:00", "2017-01-01T00:59:60+01:00",
     "2016-12-31 23:59:60", "20161231T235960Z"],
)  # fmt: skip
def test_a_leap_second_is_read_as_the_second_before_it_in_the_same_minute(api, store, leap_second):
    seed_snapshot(store, LEAP_MINUTE)
    with api() as server:
        answer = server.get("/", params={"datetime": leap_second, "limit": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["snapshot_time"] == answer.json()["requested_time"] == iso(LEAP_MINUTE)


@pytest.mark.parametrize(
    "second_60", ["2016-12-31T12:30:60Z", "2016-12-31T23:59:60+01:00", "2016-12-31T23:58:60Z", "2016-06-30 11:59:60"]
)
def test_a_second_60_outside_a_utc_days_last_minute_is_refused_as_such(api, store, second_60):
    with api() as server:
        answer = server.get("/", params={"datetime": second_60})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        f"datetime: {second_60!r} has second 60, a leap second, which only a UTC day's last minute "
        "has (23:59:60Z, read as 23:59:59Z)"
    )


@pytest.mark.parametrize(
    "future", ["2030-01-01T00:00:30Z", "2030-01-01T02:00:30.75+02:00", "2029-12-31T19:00:30-05:00", "1893456030"]
)
def test_the_future_is_refused_naming_the_instant_asked_for(api, future):
    with api() as server:
        answer = server.get("/", params={"datetime": future})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "datetime: 2030-01-01T00:00:30Z is in the future"


def test_backfill_status_errors_name_the_minute_in_the_path(api, store):
    asked = this_minute() - timedelta(hours=2)
    with api() as server:
        server.get("/", params={"datetime": iso(asked)})  # requests a backfill
        in_offset = server.get(f"/backfills/{(asked + timedelta(hours=2)):%Y-%m-%dT%H:%M:17+02:00}")
        unknown = server.get("/backfills/2026-11-27T14:05:33+02:00")
        unparsable = server.get("/backfills/yesterday")
        leap = server.get("/backfills/2016-12-31T12:30:60Z")
        too_long = server.get("/backfills/" + "9" * 65)
    assert in_offset.status_code == 200 and in_offset.json()["minute"] == iso(asked)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "No backfill was requested for the minute 2026-11-27T12:05Z."
    assert unparsable.status_code == 422 and unparsable.json()["detail"].startswith("minute: 'yesterday' is neither")
    assert leap.status_code == 422 and leap.json()["detail"].startswith("minute: '2016-12-31T12:30:60Z' has second 60")
    assert too_long.status_code == 422 and too_long.json()["detail"].startswith("minute: String should have at most")


def test_missing_minute_within_tolerance_serves_the_previous_snapshot_and_owes_the_minute(api, store):
    """A stand-in is no silent substitute: the minute asked for is recorded as owed (a request of
    its own, launched like any other) and the answer names it and where to follow it."""
    minute = this_minute() - timedelta(minutes=20)
    seed_snapshot(store, minute)
    asked = minute + timedelta(minutes=2)
    with api(api_tolerance_minutes=2) as server:
        near = server.get("/", params={"datetime": iso(asked), "limit": 1})
        again = server.get("/", params={"datetime": iso(asked), "limit": 1})  # the fast path: the same answer
        exact = server.get("/", params={"datetime": iso(minute), "limit": 1})
        owed = server.get(near.headers["x-owed-backfill"])
        far = server.get("/", params={"datetime": iso(minute + timedelta(minutes=3)), "limit": 1})
    assert near.status_code == 200 and near.headers["x-snapshot-time"] == iso(minute)
    assert near.headers["cache-control"] == "public, no-cache"
    assert near.headers["x-owed-minute"] == iso(asked)
    assert near.headers["x-owed-backfill"] == "/backfills/" + asked.strftime("%Y-%m-%dT%H:%MZ")
    assert (again.headers["x-owed-minute"], again.headers["x-owed-backfill"]) == (
        near.headers["x-owed-minute"], near.headers["x-owed-backfill"],
    )  # fmt: skip
    assert "x-owed-minute" not in exact.headers and "x-owed-backfill" not in exact.headers
    request = store.requests.get(asked)
    assert (request.status, request.origin) == ("requested", "stand-in")
    assert owed.status_code == 200 and (owed.json()["status"], owed.json()["origin"]) == ("requested", "stand-in")
    assert far.status_code == 202


def test_missing_minute_requests_one_backfill_and_reports_its_status(api, store):
    minute = this_minute() - timedelta(hours=3)
    with api() as server:
        first = server.get("/", params={"datetime": iso(minute)})
        second = server.get("/", params={"datetime": iso(minute)})
        status = server.get(first.headers["location"])
        unknown = server.get("/backfills/" + iso(minute - timedelta(hours=1)))
    assert first.status_code == second.status_code == 202
    assert first.headers["location"] == "/backfills/" + minute.strftime("%Y-%m-%dT%H:%MZ")
    assert int(first.headers["retry-after"]) > 0
    assert status.status_code == 200 and status.json()["status"] == "requested"
    assert store.requests.count(["requested"]) == 1
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"


def attempt(store, minute: datetime, key: str, error: str, permanent: bool, failed_at: datetime) -> None:
    """One attempt of the sensor and the run for a requested minute, ending failed at `failed_at`."""
    store.requests.submit(minute, minute, key)
    store.requests.launch(key, f"run-of-{key}")
    store.requests.fail(key, error, permanent, failed_at)


def test_a_failed_backfill_says_why_and_when_asking_again_queues_another_attempt(api, store):
    """A permanent failure (the plan) after the transient ones used up the attempts is no dead end:
    the answer says when the next attempt is allowed, and asking then starts a new count. (A minute
    older than the healing horizon: its attempts are bounded.)"""
    minute, now = this_minute() - timedelta(hours=30), datetime.now(UTC)
    policy = RequestPolicy(max_attempts=2, backoff=timedelta(seconds=120))
    with api(backfill_retry_backoff_seconds=120, backfill_max_attempts=2) as server:
        first = server.get("/", params={"datetime": iso(minute)})
        attempt(store, minute, "key-1", "coinmarketcap: HTTP 503", False, now - timedelta(hours=1))
        store.requests.ask(minute, policy, now - timedelta(minutes=50))
        attempt(store, minute, "key-2", "coinmarketcap: plan has no historical data (CMC error 1006)", True, now)
        refused = server.get("/", params={"datetime": iso(minute)})
        status = server.get(first.headers["location"]).json()
        # after the backoff (doubled: the second attempt), asking again queues attempt 1 of 2 anew
        store.requests.ask(minute, policy, now + timedelta(seconds=241))
        again = server.get(first.headers["location"]).json()
        attempt(store, minute, "key-3", "coinmarketcap: HTTP 503", False, now - timedelta(minutes=30))
        store.requests.ask(minute, policy, now - timedelta(minutes=20))
        attempt(store, minute, "key-4", "coinmarketcap: HTTP 503", False, now - timedelta(minutes=10))
        exhausted = server.get("/", params={"datetime": iso(minute)})
    assert refused.status_code == 202 and 230 <= int(refused.headers["retry-after"]) <= 240
    body = refused.json()
    assert (body["status"], body["permanent"], body["attempts"], body["max_attempts"]) == ("failed", True, 2, 2)
    assert "1006" in body["error"] and "cannot fix" in body["detail"] and "attempt 1 of 2" in body["detail"]
    assert datetime.fromisoformat(body["next_attempt_at"]) == now + timedelta(seconds=240)
    assert status == body
    assert (again["status"], again["attempts"], again["error"], again["run_id"]) == ("requested", 0, None, None)
    assert "attempt 1 of 2" in again["detail"]
    # transient failures only: bounded, and the answer promises no next attempt
    assert exhausted.status_code == 202 and "retry-after" not in exhausted.headers
    assert exhausted.json()["next_attempt_at"] is None and "none is left" in exhausted.json()["detail"]
    assert f"scripts.backfill_range {minute:%Y-%m-%d-%H:%M}...{minute:%Y-%m-%d-%H:%M}" in exhausted.json()["detail"]


def test_a_minute_of_the_healing_horizon_is_retried_by_itself_past_its_attempts(api, store):
    minute, now = this_minute() - timedelta(hours=3), datetime.now(UTC)
    with api(backfill_retry_backoff_seconds=60, backfill_max_backoff_seconds=300, backfill_max_attempts=2) as server:
        location = server.get("/", params={"datetime": iso(minute)}).headers["location"]
        for number in (1, 2, 3):
            attempt(store, minute, f"key-{number}", "coinmarketcap: HTTP 503", False, now)
            if number < 3:
                store.requests.retry(RequestPolicy(max_attempts=2), now + timedelta(hours=1))
        status = server.get(location).json()
    assert (status["status"], status["attempts"]) == ("failed", 3)
    assert datetime.fromisoformat(status["next_attempt_at"]) == now + timedelta(seconds=240)  # doubled, under the cap
    assert "attempt 4; retried until it is published" in status["detail"] and "queued by itself" in status["detail"]


def test_pending_backfills_are_bounded(api, store):
    base = this_minute() - timedelta(hours=5)
    with api(backfill_max_pending=2) as server:
        answers = [server.get("/", params={"datetime": iso(base + timedelta(minutes=i))}) for i in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 429, 429]
    assert answers[2].headers["content-type"] == "application/problem+json" and "pending" in answers[2].json()["detail"]
    assert answers[2].headers["retry-after"]
    assert store.requests.count(["requested"]) == 2


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 422),
        ({"limit": "-1"}, 422),
        ({"limit": "abc"}, 422),
        ({"limit": str(10**12)}, 200),  # capped at the stored depth
        ({"datetime": "yesterday-ish"}, 422),
        ({"datetime": "9999-12-31T00:00:00Z"}, 422),
        ({"datetime": "1e30"}, 422),
        ({"datetime": "0001-01-01T00:00+01:00"}, 422),  # before the year 1 in UTC
        ({"datetime": "9999-12-31T23:59-01:00"}, 422),  # after the year 9999 in UTC
        ({"datetime": "2001-01-01T00:00:00Z"}, 404),  # not stored, and before the history start
        ({"format": "xml"}, 422),
        ({"unknown": "ignored"}, 200),
        ({"datetime": "9" * 5000}, 422),
        ({"limit": "1" * 5000}, 422),
    ],
)
def test_bad_input_is_a_problem_never_a_5xx(api, store, params, status):
    seed_snapshot(store, this_minute())
    with api() as server:
        response = server.get("/", params=params)
    assert response.status_code == status
    if status in (404, 422):
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["status"] == status and problem["title"] and problem["detail"]
    else:
        assert response.json()["count"] == (200 if "limit" in params else 100)


def test_health_readiness_and_metrics(api, store):
    with api(api_ready_max_age_seconds=120) as server:
        assert server.get("/healthz").json() == {"status": "ok"}
        not_ready = server.get("/readyz")
        seed_snapshot(store, this_minute() - timedelta(minutes=10))  # live, then nothing for 10 minutes
        stale = server.get("/readyz")
        seed_snapshot(store, this_minute())
        ready = server.get("/readyz")
        metrics = server.get("/metrics").text
        owed = HealingHorizon.from_settings(Settings()).owed(store, datetime.now(UTC))
        docs, redoc = server.get("/docs"), server.get("/redoc")
    assert not_ready.status_code == 503 and "no snapshot" in not_ready.json()["detail"]
    assert stale.status_code == 503 and "old" in stale.json()["detail"]
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # minutes 9 to 5 ago are past their live window and its grace, and not published: owed
    assert len(owed) == 5 and ready.json()["owed_minutes"] == 5 and ready.json()["oldest_owed_minute"] == iso(owed[0])
    assert "toplist_owed_minutes 5.0" in metrics
    assert 'api_requests_total{path="/readyz",status="503"} 2.0' in metrics
    assert docs.status_code == redoc.status_code == 200


def test_csv_prices_are_plain_decimals_with_full_precision():
    snapshot = Snapshot(this_minute(), 0, 0, 0, "live", "coinmarketcap", this_minute(), this_minute(), True)
    prices = [10.0**e * m for e in range(-10, 7) for m in (1.0, 1.234, 9.87654321)] + [0.00001234, 91234.56]
    rows = [{"rank": i, "symbol": "X", "price_usd": p} for i, p in enumerate(prices, start=1)]
    text = render(snapshot, this_minute(), rows, "csv").identity.body.decode()
    printed = [r[2] for r in list(csv.reader(io.StringIO(text)))[1:]]
    assert printed[-2:] == ["0.00001234", "91234.56"] and printed[0] == "0.0000000001"
    for value, shown in zip(prices, printed, strict=True):
        assert "e" not in shown.lower() and float(shown) == value  # positional, and every digit kept


def test_csv_over_http_prints_the_emulated_markets_sub_cent_prices_positionally(api, store):
    """The emulated market's cheapest assets (prices below 0.0001, like SHIB or PEPE) through the real API."""
    minute = this_minute() - timedelta(minutes=10)
    unix_minute = int(minute.timestamp() // 60)
    cheapest = sorted((a for a in MARKET.assets if a.cc_knows_cmc_id), key=lambda a: a.price(unix_minute))[:3]
    assert all(a.price(unix_minute) < 0.0001 for a in cheapest)
    store_upstream(
        store,
        minute,
        [
            {
                "minute": minute,
                "rank": i,
                "cc_id": a.cc_id,
                "symbol": a.cc_symbol,
                "name": a.name,
                "cmc_id": a.cmc_id,
                "volume_24h_usd": 1.0,
            }
            for i, a in enumerate(cheapest, start=1)
        ],  # fmt: skip
        [
            {
                "minute": minute,
                "cmc_id": a.cmc_id,
                "symbol": a.cmc_symbol,
                "name": a.name,
                "price_usd": a.price(unix_minute),
            }
            for a in cheapest
        ],  # fmt: skip
    )
    store.merge_top_assets(minute, minute + timedelta(minutes=1), 200)
    with api() as server:
        text = server.get("/", params={"datetime": iso(minute), "format": "csv"}).text
    printed = [row[2] for row in csv.reader(io.StringIO(text))][1:]
    assert printed == [format(Decimal(repr(a.price(unix_minute))), "f") for a in cheapest]
    assert all(p.startswith("0.0000") and "e" not in p for p in printed)
