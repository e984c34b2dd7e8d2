"""CryptoCompare / CoinDesk Data: the data-api toplist for live minutes, min-api history for past ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import Field

from common.settings import CRYPTOCOMPARE_DATA_API_LIVE_URL, CRYPTOCOMPARE_MIN_API_LIVE_URL
from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamSchemaError,
)
from crypto_pipeline.resources.http import Check, UpstreamHttp, UpstreamResource, raise_for_http_status
from crypto_pipeline.resources.parsing import CC_HISTO_V2, CC_TOP_LIST, HistoryBar, RankingRecord, lookup, parse_records

UPSTREAM = "CryptoCompare"
KEY_SETTING = "CRYPTOCOMPARE_API_KEY"
VOLUME_SORT = "SPOT_MOVING_24_HOUR_QUOTE_VOLUME_USD"
HISTO_MAX_LIMIT = 2000


def check_data_api(response: httpx.Response, body: Any) -> None:
    """data-api errors: a non-empty `Err` object, usually with a 4xx/5xx status."""
    err = lookup(body, "Err")
    if not err and response.status_code < 400:
        return
    message = (err or {}).get("message") or f"HTTP {response.status_code}"
    raise_for_http_status(UPSTREAM, response, message, KEY_SETTING)
    raise UpstreamError(UPSTREAM, message, status=response.status_code)


def check_min_api(response: httpx.Response, body: Any) -> None:
    """min-api errors come with HTTP 200 and `Response: Error`: read the body, not the status."""
    if isinstance(body, dict) and body.get("Response") == "Error":
        message, kind = body.get("Message") or "unknown error", body.get("Type")
        if kind == 99:
            raise UpstreamRateLimited(UPSTREAM, message, code=kind)
        if kind == 1:
            raise UpstreamAuthError(UPSTREAM, f"{message}; check {KEY_SETTING}", code=kind)
        param = body.get("ParamWithError")
        raise UpstreamBadRequest(UPSTREAM, message + (f" (parameter {param})" if param else ""), code=kind)
    raise_for_http_status(UPSTREAM, response, f"HTTP {response.status_code}", KEY_SETTING)


@dataclass
class RankingFetch:
    records: list[RankingRecord]
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    emulated: bool = False


@dataclass
class HistoryFetch:
    bars: list[HistoryBar]
    emulated: bool = False


class CryptoCompareResource(UpstreamResource):
    """CryptoCompare client. The key travels only in the `authorization: Apikey …` header."""

    api_key: str = Field(description="CryptoCompare key; wire it with EnvVar('CRYPTOCOMPARE_API_KEY').")
    data_api_url: str = CRYPTOCOMPARE_DATA_API_LIVE_URL
    min_api_url: str = CRYPTOCOMPARE_MIN_API_LIVE_URL
    page_size: int = Field(default=100, ge=10, le=100)

    def _http(self, base_url: str, check: Check) -> UpstreamHttp:
        headers = {"authorization": f"Apikey {self.api_key}"} if self.api_key else {}
        return self.http(UPSTREAM, base_url, headers, check)

    def top_by_volume(self, depth: int) -> RankingFetch:
        """The top `depth` assets by 24h spot volume in USD, pages fetched concurrently."""
        pages = range(1, -(-depth // self.page_size) + 1)

        def fetch_page(page: int):
            def not_truncated(body: Any) -> None:
                items, total = lookup(body, "Data.LIST"), lookup(body, "Data.STATS.TOTAL_ASSETS")
                offset = (page - 1) * self.page_size
                expected = self.page_size if total is None else min(self.page_size, max(0, int(total) - offset))
                if isinstance(items, list) and len(items) < expected:
                    raise UpstreamMalformed(UPSTREAM, f"toplist page {page} had {len(items)} of {expected} records")

            params = {
                "page": page,
                "page_size": self.page_size,
                "sort_by": VOLUME_SORT,
                "sort_direction": "DESC",
                "toplist_quote_asset": "USD",
                "groups": "ID,BASIC,PRICE,VOLUME,TOPLIST_RANK",
            }
            return http.get(CC_TOP_LIST.path, params, not_truncated)

        with self._http(self.data_api_url, check_data_api) as http:
            replies = list(http.map_concurrently(fetch_page, pages))
        fetch = RankingFetch(records=[])
        for page, reply in zip(pages, replies, strict=True):
            parsed = parse_records(reply.body, CC_TOP_LIST, first_rank=(page - 1) * self.page_size + 1)
            fetch.records.extend(parsed.records)
            fetch.rejected += parsed.rejected
            fetch.reasons.extend(parsed.reasons)
            fetch.emulated |= reply.emulated
        fetch.records = [r for r in fetch.records if r.rank <= depth]
        return fetch

    def history(self, symbol: str, to_ts: int, limit: int, *, hourly: bool = False) -> HistoryFetch:
        """`limit + 1` USD bars of `symbol` ending with the bucket that holds `to_ts` (unix s).

        Minute bars are kept 7 days upstream; older minutes need `hourly=True`.
        """
        if not 1 <= limit <= HISTO_MAX_LIMIT:
            raise ValueError(f"limit must be 1..{HISTO_MAX_LIMIT}")
        path = "/data/v2/histohour" if hourly else "/data/v2/histominute"
        params = {"fsym": symbol, "tsym": "USD", "limit": limit, "toTs": to_ts}

        def complete(body: Any) -> None:
            bars = lookup(body, CC_HISTO_V2.records)
            if isinstance(bars, list) and len(bars) != limit + 1:
                raise UpstreamMalformed(UPSTREAM, f"{path} for {symbol}: {len(bars)} of {limit + 1} bars")

        with self._http(self.min_api_url, check_min_api) as http:
            reply = http.get(path, params, complete)
        parsed = parse_records(reply.body, CC_HISTO_V2)
        if parsed.rejected:
            raise UpstreamSchemaError(
                UPSTREAM, f"{path} for {symbol}: {parsed.rejected} bad bars ({parsed.reasons[0]})"
            )
        return HistoryFetch(bars=parsed.records, emulated=reply.emulated)
