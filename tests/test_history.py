"""Window arithmetic for past minutes: which bars to ask for, and how they add up."""

from datetime import UTC, datetime, timedelta

from crypto_pipeline.reconstruction import (
    bar_requests,
    latest_at_each,
    minutes_in,
    rolling_24h_volume,
    uses_minute_bars,
)
from crypto_pipeline.resources.parsing import HistoryBar

START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_bar_requests_cover_the_day_before_the_window_without_gaps_or_overlap():
    end = START + timedelta(minutes=1440)
    calls = bar_requests(START, end, minute_bars=True)
    assert all(limit <= 2000 for _, limit in calls)
    covered = sorted(t for to_ts, limit in calls for t in range(to_ts - limit * 60, to_ts + 1, 60))
    first_needed = int(START.timestamp()) - 1439 * 60
    last_needed = int(end.timestamp()) - 60
    assert covered == list(range(first_needed, last_needed + 1, 60))


def test_rolling_volume_sums_exactly_the_1440_bars_ending_with_each_minute():
    bars = [HistoryBar(time=int(START.timestamp()) + 60 * i, close=1.0, volumeto=i + 2000.0) for i in range(-2000, 10)]
    minutes = minutes_in(START, START + timedelta(minutes=3))
    volumes = rolling_24h_volume(bars, minutes, minute_bars=True)
    for offset, minute in enumerate(minutes):
        assert volumes[minute] == sum(i + 2000.0 for i in range(offset - 1439, offset + 1))


def test_hourly_bars_approximate_with_the_24_hours_ending_with_the_minutes_hour():
    bars = [HistoryBar(time=int(START.timestamp()) + 3600 * i, close=1.0, volumeto=1.0) for i in range(-30, 2)]
    volumes = rolling_24h_volume(bars, [START + timedelta(minutes=30)], minute_bars=False)
    assert volumes[START + timedelta(minutes=30)] == 24.0


def test_price_is_the_newest_quote_at_or_before_each_minute():
    quotes = [(START + timedelta(minutes=5 * i), f"q{i}") for i in range(3)]
    minutes = [START - timedelta(minutes=1), START + timedelta(minutes=7), START + timedelta(minutes=10)]
    assert latest_at_each(quotes, minutes) == {minutes[1]: "q1", minutes[2]: "q2"}


def test_minute_bars_only_within_the_seven_days_upstream_keeps_them():
    assert uses_minute_bars(START, START + timedelta(days=5))
    assert not uses_minute_bars(START, START + timedelta(days=6, hours=12))


def test_latest_at_each_takes_no_quote_older_than_max_age():
    base = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    quotes = [(base, "q0"), (base + timedelta(minutes=5), "q5"), (base + timedelta(minutes=40), "q40")]
    minutes = [base + timedelta(minutes=m) for m in (0, 4, 10, 15, 16, 39, 40)]
    found = latest_at_each(quotes, minutes, max_age=timedelta(minutes=10))
    assert {int((m - base).total_seconds() // 60): q for m, q in found.items()} == {
        0: "q0",
        4: "q0",
        10: "q5",
        15: "q5",
        40: "q40",
    }  # 16 and 39: the newest quote is 11 and 34 minutes old, so they stay unpriced
    assert len(latest_at_each(quotes, minutes)) == len(minutes)  # without a bound, any age is taken
