"""The arithmetic of a run's minutes, kept free of I/O so it is easy to reason about and test.

A run covers a window of minutes: one live minute, or a range worked chunk by chunk. A past
minute's 24h volume is the sum of the CryptoCompare bars that end with it; its price is the
newest quote at or before it (CoinMarketCap's historical quotes come every 5 minutes).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from crypto_pipeline.resources.parsing import HistoryBar

T = TypeVar("T")

MINUTES_PER_DAY = 1440
CC_MINUTE_HISTORY = timedelta(days=7) - timedelta(hours=1)  # keep clear of the 7-day edge
MAX_BARS_PER_CALL = 2000


def minutes_in(start: datetime, end: datetime) -> list[datetime]:
    """Every minute start in [start, end)."""
    count = int((end - start).total_seconds() // 60)
    return [start + timedelta(minutes=i) for i in range(count)]


def chunk_bounds(start: datetime, end: datetime, minutes: int) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most `minutes` (bounded work per chunk)."""
    step = timedelta(minutes=minutes)
    return [(first, min(first + step, end)) for first in minutes_in(start, end)[::minutes]]


def uses_minute_bars(start: datetime, now: datetime) -> bool:
    """Minute bars are kept 7 days upstream; older windows fall back to hourly bars."""
    return now - start + timedelta(days=1) < CC_MINUTE_HISTORY


class Window:
    """The minutes a run covers, and whether they are live."""

    def __init__(
        self, start: datetime, end: datetime, now: datetime, live_window: timedelta, minute_bars: bool | None = None
    ) -> None:
        self.start, self.end, self.now = start, end, now
        self.minutes = minutes_in(start, end)
        self.live = len(self.minutes) == 1 and start <= now < start + live_window
        # CryptoCompare's bar size, chosen once per range like the candidates: chunks on both sides
        # of the 7-day minute-bar limit would rank with minute bars on one side, hourly on the other.
        self.minute_bars = uses_minute_bars(start, now) if minute_bars is None else minute_bars

    @property
    def mode(self) -> str:
        return "latest" if self.live else "historical"

    def chunks(self, minutes: int) -> list[Window]:
        """Consecutive windows of at most `minutes`, covering this one (a live minute is one chunk)."""
        if self.live:
            return [self]
        return [
            Window(start, end, self.now, timedelta(0), self.minute_bars)
            for start, end in chunk_bounds(self.start, self.end, minutes)
        ]


def bar_requests(start: datetime, end: datetime, minute_bars: bool) -> list[tuple[int, int]]:
    """(to_ts, limit) calls that cover 24h before `start` through the last minute before `end`."""
    step = 60 if minute_bars else 3600
    last = int((end - timedelta(minutes=1)).timestamp()) // step * step
    first = (int(start.timestamp()) - (MINUTES_PER_DAY - 1) * 60) // step * step
    requests = []
    to_ts = last
    while to_ts >= first:
        limit = min(MAX_BARS_PER_CALL, (to_ts - first) // step)
        requests.append((to_ts, max(limit, 1)))
        to_ts -= (limit + 1) * step
    return requests


def rolling_24h_volume(
    bars: Sequence[HistoryBar], minutes: Sequence[datetime], minute_bars: bool
) -> dict[datetime, float]:
    """24h USD volume ending with each minute: 1440 minute bars, or 24 hour bars as an approximation."""
    ordered = sorted({bar.time: bar for bar in bars}.values(), key=lambda b: b.time)
    times = [bar.time for bar in ordered]
    prefix = [0.0]
    for bar in ordered:
        prefix.append(prefix[-1] + bar.volumeto)
    step, span = (60, MINUTES_PER_DAY) if minute_bars else (3600, 24)
    volumes = {}
    for minute in minutes:
        last = int(minute.timestamp()) // step * step
        hi = bisect_right(times, last)
        lo = bisect_right(times, last - span * step)
        volumes[minute] = prefix[hi] - prefix[lo]
    return volumes


def latest_at_each(
    quotes: Sequence[tuple[datetime, T]], minutes: Sequence[datetime], max_age: timedelta | None = None
) -> dict[datetime, T]:
    """For each minute (ascending), the newest quote at or before it and at most `max_age` old
    (a minute with none is left out); one pass over both lists."""
    quotes = sorted(quotes, key=lambda quote: quote[0])
    found: dict[datetime, T] = {}
    index = 0
    for minute in minutes:
        while index < len(quotes) and quotes[index][0] <= minute:
            index += 1
        if index and (max_age is None or minute - quotes[index - 1][0] <= max_age):
            found[minute] = quotes[index - 1][1]
    return found
