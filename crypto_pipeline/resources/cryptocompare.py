"""CryptoCompare / CoinDesk Data: the ranking for live minutes, min-api history bars for past ones.

The endpoints are source files (`crypto_pipeline/sources/cc_*.yaml`); this resource picks the
ranking source and asks for the bars of one symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from common.settings import CRYPTOCOMPARE_DATA_API_LIVE_URL, CRYPTOCOMPARE_MIN_API_LIVE_URL
from crypto_pipeline.resources.errors import UpstreamMalformed, UpstreamSchemaError
from crypto_pipeline.resources.parsing import HistoryBar
from crypto_pipeline.resources.sources import Fetched, Query, SourceResource, search

HISTO_MAX_LIMIT = 2000
HISTORY_SOURCES = {"minute": "cc_histominute", "hour": "cc_histohour"}


@dataclass
class HistoryFetch:
    bars: list[HistoryBar]
    emulated: bool = False


class CryptoCompareResource(SourceResource):
    """CryptoCompare client. The key travels only in the `authorization: Apikey …` header."""

    data_api_url: str = CRYPTOCOMPARE_DATA_API_LIVE_URL
    min_api_url: str = CRYPTOCOMPARE_MIN_API_LIVE_URL
    page_size: int = Field(default=100, ge=10, le=100)
    ranking_source: str = Field(default="cc_top_list", description="The source file of the live ranking.")

    def base_urls(self) -> dict[str, str]:
        return {"cryptocompare_data_api_url": self.data_api_url, "cryptocompare_min_api_url": self.min_api_url}

    def source_names(self) -> list[tuple[str, str, Query | None]]:
        return [
            (self.ranking_source, "ranking", "pagination"),
            *((name, "bar", None) for name in HISTORY_SOURCES.values()),
        ]

    def top_by_volume(self, depth: int) -> Fetched:
        """The top `depth` assets by 24h volume in USD, pages fetched concurrently."""
        return self.fetch_ranking(self.ranking_source, depth, self.page_size)

    def history(self, symbol: str, to_ts: int, limit: int, *, hourly: bool = False) -> HistoryFetch:
        """`limit + 1` USD bars of `symbol` ending with the bucket that holds `to_ts` (unix s).

        Minute bars are kept 7 days upstream; older minutes need `hourly=True`.
        """
        if not 1 <= limit <= HISTO_MAX_LIMIT:
            raise ValueError(f"limit must be 1..{HISTO_MAX_LIMIT}")
        client = self.client(HISTORY_SOURCES["hour" if hourly else "minute"], "bar")
        path = client.source.path

        def complete(body: Any) -> None:
            bars = search(client.source.records, body)
            if isinstance(bars, list) and len(bars) != limit + 1:
                raise UpstreamMalformed(client.source.provider, f"{path} for {symbol}: {len(bars)} of {limit + 1} bars")

        with self.open(client) as http:
            reply = client.get(http, {"fsym": symbol, "limit": limit, "toTs": to_ts}, complete)
        parsed = client.parse(reply.body)
        if parsed.rejected:
            raise UpstreamSchemaError(
                client.source.provider, f"{path} for {symbol}: {parsed.rejected} bad bars ({parsed.reasons[0]})"
            )
        return HistoryFetch(bars=parsed.records, emulated=reply.emulated)
