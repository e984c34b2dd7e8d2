"""CoinMarketCap Pro: latest listings for live minutes, quotes/historical for past ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import Field

from common.settings import CMC_LIVE_URL
from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamMalformed,
    UpstreamPlanError,
    UpstreamRateLimited,
)
from crypto_pipeline.resources.http import UpstreamHttp, UpstreamResource, raise_for_http_status, retry_after_seconds
from crypto_pipeline.resources.parsing import (
    CMC_LISTINGS_LATEST,
    CMC_QUOTES_HISTORICAL_PATH,
    PriceRecord,
    lookup,
    parse_cmc_historical,
    parse_records,
)

UPSTREAM = "CoinMarketCap"
KEY_SETTING = "CMC_API_KEY"
AUTH_CODES = {1001, 1002, 1005, 1007}
PLAN_CODES = {1003, 1004, 1006}
RATE_LIMIT_CODES = {1008, 1009, 1010, 1011}
HISTORICAL_BATCH = 100  # ids per quotes/historical call


def check_cmc(response: httpx.Response, body: Any) -> None:
    """Raise the typed error for a CMC `status.error_code` (or, lacking one, the HTTP status)."""
    code = lookup(body, "status.error_code")
    message = lookup(body, "status.error_message") or f"HTTP {response.status_code}"
    if code in (0, None) and response.status_code < 400:
        return
    if code in AUTH_CODES:
        raise UpstreamAuthError(
            UPSTREAM, f"{message} (error {code}); check {KEY_SETTING}", status=response.status_code, code=code
        )
    if code in PLAN_CODES:
        raise UpstreamPlanError(
            UPSTREAM,
            f"{message} (error {code}); the key's plan does not include this endpoint",
            status=response.status_code,
            code=code,
        )
    if code in RATE_LIMIT_CODES:
        raise UpstreamRateLimited(
            UPSTREAM, f"{message} (error {code})", retry_after=retry_after_seconds(response), status=429, code=code
        )
    raise_for_http_status(UPSTREAM, response, f"{message} (error {code})", KEY_SETTING)
    raise UpstreamBadRequest(UPSTREAM, f"{message} (error {code})", status=response.status_code, code=code)


@dataclass
class PriceFetch:
    records: list[PriceRecord]
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    credits: int = 0
    emulated: bool = False


class CoinMarketCapResource(UpstreamResource):
    """CMC Pro API client. The key travels only in the `X-CMC_PRO_API_KEY` header."""

    api_key: str = Field(description="CMC Pro API key; wire it with EnvVar('CMC_API_KEY').")
    base_url: str = CMC_LIVE_URL
    page_size: int = Field(default=5000, ge=1, le=5000)

    def _http(self) -> UpstreamHttp:
        headers = {"X-CMC_PRO_API_KEY": self.api_key} if self.api_key else {}
        return self.http(UPSTREAM, self.base_url, headers, check_cmc)

    def listings_latest(self, depth: int) -> PriceFetch:
        """The top `depth` listings by CMC 24h volume, pages fetched concurrently."""
        starts = range(1, depth + 1, self.page_size)

        def fetch_page(start: int):
            limit = min(self.page_size, depth - start + 1)

            def not_truncated(body: Any) -> None:
                data, total = lookup(body, "data"), lookup(body, "status.total_count")
                expected = limit if total is None else min(limit, max(0, int(total) - start + 1))
                if isinstance(data, list) and len(data) < expected:
                    raise UpstreamMalformed(UPSTREAM, f"listings page at {start} had {len(data)} of {expected} records")

            params = {"start": start, "limit": limit, "sort": "volume_24h", "convert": "USD"}
            return http.get(CMC_LISTINGS_LATEST.path, params, not_truncated)

        with self._http() as http:
            replies = list(http.map_concurrently(fetch_page, starts))
        fetch = PriceFetch(records=[])
        for reply in replies:
            parsed = parse_records(reply.body, CMC_LISTINGS_LATEST)
            fetch.records.extend(parsed.records)
            fetch.rejected += parsed.rejected
            fetch.reasons.extend(parsed.reasons)
            fetch.credits += int(lookup(reply.body, "status.credit_count") or 0)
            fetch.emulated |= reply.emulated
        return fetch

    def quotes_historical(
        self, cmc_ids: list[int], time_start: datetime, time_end: datetime, interval: str = "5m"
    ) -> tuple[dict[int, list[tuple[datetime, PriceRecord]]], PriceFetch]:
        """USD quotes of `cmc_ids` between two instants, ids batched per call (needs a paid plan)."""
        batches = [cmc_ids[i : i + HISTORICAL_BATCH] for i in range(0, len(cmc_ids), HISTORICAL_BATCH)]
        minutes = max(1, int((time_end - time_start).total_seconds() // 60))

        def fetch_batch(batch: list[int]):
            params = {
                "id": ",".join(map(str, batch)),
                "time_start": time_start.isoformat(),
                "time_end": time_end.isoformat(),
                "interval": interval,
                "count": min(10000, minutes + 1),
                "convert": "USD",
            }
            return http.get(CMC_QUOTES_HISTORICAL_PATH, params)

        series: dict[int, list[tuple[datetime, PriceRecord]]] = {}
        fetch = PriceFetch(records=[])
        with self._http() as http:
            for reply in http.map_concurrently(fetch_batch, batches):
                batch_series, parsed = parse_cmc_historical(reply.body)
                series.update(batch_series)
                fetch.records.extend(parsed.records)
                fetch.rejected += parsed.rejected
                fetch.credits += int(lookup(reply.body, "status.credit_count") or 0)
                fetch.emulated |= reply.emulated
        return series, fetch
