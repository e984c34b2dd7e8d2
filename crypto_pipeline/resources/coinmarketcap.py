"""CoinMarketCap Pro: the latest prices for live minutes, quotes/historical for past ones.

The endpoints are source files (`crypto_pipeline/sources/cmc_*.yaml`); this resource picks
which one serves live prices and groups historical quotes into a series per id.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from common.settings import CMC_LIVE_URL
from crypto_pipeline.resources.parsing import PriceRecord
from crypto_pipeline.resources.sources import Fetched, SourceResource


class CoinMarketCapResource(SourceResource):
    """CMC Pro API client. The key travels only in the header its source files name."""

    base_url: str = CMC_LIVE_URL
    page_size: int = Field(default=5000, ge=1, le=5000)
    live_source: str = Field(default="cmc_listings_latest", description="The source file of live prices.")
    historical_source: str = Field(default="cmc_quotes_historical", description="The source file of past prices.")

    key_env = "CMC_API_KEY"

    def base_urls(self) -> dict[str, str]:
        return {"cmc_base_url": self.base_url}

    def listings_latest(self, depth: int) -> Fetched:
        """The top `depth` listings by CMC 24h volume, pages fetched concurrently."""
        client = self.client(self.live_source, "price")
        with self.open(client) as http:
            return client.fetch_list(http, depth, self.page_size)

    def quotes_historical(
        self, cmc_ids: list[int], time_start: datetime, time_end: datetime, interval: str = "5m"
    ) -> tuple[dict[int, list[tuple[datetime, PriceRecord]]], Fetched]:
        """USD quotes of `cmc_ids` between two instants, ids batched per call (needs a paid plan)."""
        minutes = max(1, int((time_end - time_start).total_seconds() // 60))
        params = {
            "time_start": time_start.isoformat(),
            "time_end": time_end.isoformat(),
            "interval": interval,
            "count": min(10000, minutes + 1),
        }
        client = self.client(self.historical_source, "price")
        with self.open(client) as http:
            fetched = client.fetch_batches(http, cmc_ids, params)
        series: dict[int, list[tuple[datetime, PriceRecord]]] = {}
        for record in fetched.records:
            series.setdefault(record.cmc_id, []).append((record.last_updated, record))
        return series, fetched
