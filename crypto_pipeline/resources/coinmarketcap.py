"""CoinMarketCap Pro: the ranked ids' latest prices for live minutes, quotes/historical for past ones.

The endpoints are source files (`crypto_pipeline/sources/cmc_*.yaml`); this resource picks
which one serves what, counts the ids a reply left out and windows long historical ranges.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from common.settings import CMC_LIVE_URL
from crypto_pipeline.resources.parsing import PriceRecord
from crypto_pipeline.resources.sources import Fetched, Query, SourceResource

MAX_POINTS_PER_CALL = 10000  # quotes/historical `count` cap
INTERVAL_MINUTES = {"5m": 5, "10m": 10, "15m": 15, "30m": 30, "45m": 45, "1h": 60}


class CoinMarketCapResource(SourceResource):
    """CMC Pro API client. The key travels only in the header its source files name."""

    base_url: str = CMC_LIVE_URL
    live_source: str = Field(
        default="cmc_quotes_latest", description="The source file of live prices, asked for ids (batch or lookup)."
    )
    historical_source: str = Field(default="cmc_quotes_historical", description="The source file of past prices.")

    def base_urls(self) -> dict[str, str]:
        return {"cmc_base_url": self.base_url}

    def source_names(self) -> list[tuple[str, str, Query | None]]:
        return [(self.live_source, "price", "ids"), (self.historical_source, "price", "batch")]

    def quotes_latest(self, cmc_ids: list[int]) -> Fetched:
        """Latest USD quotes of exactly `cmc_ids`, from the live source: by id (`quotes/latest`,
        which skips ids CMC does not know) or looked up in its listings (`listings/latest`). Each
        id asked for and not answered is counted as rejected: a stale id must not fail the minute."""
        client = self.client(self.live_source, "price", "ids")
        with self.open(client) as http:
            return client.fetch_ids(http, cmc_ids)

    def quotes_historical(
        self, cmc_ids: list[int], time_start: datetime, time_end: datetime, interval: str = "5m"
    ) -> tuple[dict[int, list[tuple[datetime, PriceRecord]]], Fetched]:
        """USD quotes of `cmc_ids` between two instants (needs a paid plan).

        Ids are batched per call, and a long range is cut into windows of at most
        MAX_POINTS_PER_CALL points each (> ~34 days of 5-minute quotes), so nothing past the
        cap goes missing."""
        ids = sorted(set(cmc_ids))
        client = self.client(self.historical_source, "price", "batch")
        fetched = Fetched(client.source.provider.lower())
        with self.open(client) as http:
            for start, end, points in quote_windows(time_start, time_end, interval):
                params = {"time_start": start.isoformat(), "time_end": end.isoformat(), "interval": interval,
                          "count": points}  # fmt: skip
                window = client.fetch_batches(http, ids, params)
                fetched.records.extend(window.records)
                fetched.rejected += window.rejected
                fetched.reasons.extend(window.reasons[: max(0, 20 - len(fetched.reasons))])
                fetched.credits += window.credits
                fetched.emulated |= window.emulated
        series: dict[int, list[tuple[datetime, PriceRecord]]] = {}
        for record in fetched.records:
            series.setdefault(record.cmc_id, []).append((record.last_updated, record))
        return series, fetched


def quote_windows(time_start: datetime, time_end: datetime, interval: str) -> list[tuple[datetime, datetime, int]]:
    """(start, end, points) windows covering [time_start, time_end], each within the `count` cap."""
    step = timedelta(minutes=INTERVAL_MINUTES[interval])
    span = step * (MAX_POINTS_PER_CALL - 1)
    windows = []
    start = time_start
    while True:
        end = min(start + span, time_end)
        windows.append((start, end, min(MAX_POINTS_PER_CALL, int((end - start) / step) + 2)))
        if end >= time_end:
            return windows
        start = end + timedelta(seconds=1)
