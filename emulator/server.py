"""The emulator's HTTP server: CoinMarketCap and CryptoCompare paths on one origin.

Paths, parameters, auth headers and error envelopes follow the real APIs
(../shared/reference/upstream_apis.md). Every response carries `X-Emulated: true` and CMC's
`status.notice` says so too, so whatever serves this data downstream can label it.

Control endpoints under `/_emulator/` change faults and the CMC plan while it runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulator.faults import Fault, FaultBoard
from emulator.market import Asset, Market

log = logging.getLogger("emulator")

NOTICE = "Emulated data from the crypto-toplist emulator; not market data."
CMC_HISTORICAL_PLANS = {"hobbyist", "startup", "standard", "professional", "enterprise"}
CC_MINUTE_HISTORY_DAYS = 7
CC_HISTO_MAX_LIMIT = 2000
CMC_INTERVAL_MINUTES = {
    "5m": 5, "10m": 10, "15m": 15, "30m": 30, "45m": 45,
    "1h": 60, "hourly": 60, "2h": 120, "3h": 180, "4h": 240, "6h": 360, "12h": 720,
    "24h": 1440, "1d": 1440, "daily": 1440, "2d": 2880, "3d": 4320, "7d": 10080, "weekly": 10080,
}  # fmt: skip


class UpstreamError(Exception):
    """An error answer in the envelope of the API that raised it."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def parse_time(value: str) -> int:
    """Unix seconds from unix seconds or ISO 8601, as CMC accepts both."""
    try:
        return int(float(value))
    except ValueError:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int(dt.replace(tzinfo=dt.tzinfo or UTC).timestamp())


# --- CoinMarketCap ------------------------------------------------------------------------


def cmc_status(error_code: int = 0, message: str | None = None, credits: int = 0, **extra: Any) -> dict:
    return {
        "timestamp": iso(time.time()),
        "error_code": error_code,
        "error_message": message,
        "elapsed": 1,
        "credit_count": credits,
        "notice": NOTICE,
        **extra,
    }


def cmc_error(http: int, code: int, message: str) -> UpstreamError:
    return UpstreamError(http, {"status": cmc_status(code, message)})


def cmc_int(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise cmc_error(400, 400, f'Invalid value for "{name}": "{raw}"') from None
    if not low <= value <= high:
        raise cmc_error(400, 400, f'Invalid value for "{name}": "{raw}"')
    return value


def cmc_ids(params: dict[str, str]) -> list[int]:
    """The comma-separated `id` parameter, as CMC validates it."""
    if not params.get("id"):
        raise cmc_error(400, 400, '"id" or "symbol" is required')
    try:
        return [int(x) for x in params["id"].split(",")]
    except ValueError:
        raise cmc_error(400, 400, 'Invalid value for "id"') from None


def cmc_quote(market: Market, asset: Asset, minute: int) -> dict:
    price = asset.price(minute)
    circulating = asset.supply * 0.8
    wave = None if asset.nulls else round((asset.price(minute) / asset.price(minute - 60) - 1) * 100, 6)
    return {
        "price": price,
        "volume_24h": market.cmc_volume_24h(asset, minute),
        "volume_change_24h": None if asset.nulls else 1.5,
        "percent_change_1h": wave,
        "percent_change_24h": None if asset.nulls else round((price / asset.price(minute - 1440) - 1) * 100, 6),
        "percent_change_7d": None if asset.nulls else 0.0,
        "market_cap": 0 if asset.nulls else round(price * circulating, 2),
        "market_cap_dominance": None if asset.nulls else 0.01,
        "fully_diluted_market_cap": round(price * asset.supply, 2),
        "tvl": None,
        "last_updated": iso(minute * 60),
    }


def cmc_listing(market: Market, asset: Asset, minute: int, rank: int | None) -> dict:
    return {
        "id": asset.cmc_id,
        "name": asset.cmc_name,
        "symbol": asset.cmc_symbol,
        "slug": asset.name.lower().replace(" ", "-"),
        "num_market_pairs": 10 + asset.index % 500,
        "date_added": "2020-01-01T00:00:00.000Z",
        "tags": [],
        "max_supply": None if asset.nulls else asset.supply,
        "circulating_supply": asset.supply * 0.8,
        "total_supply": asset.supply,
        "infinite_supply": False,
        "platform": None,
        "cmc_rank": rank,
        "self_reported_circulating_supply": None,
        "self_reported_market_cap": None,
        "tvl_ratio": None,
        "last_updated": iso(minute * 60),
        "quote": {"USD": cmc_quote(market, asset, minute)},
    }


# --- CryptoCompare ------------------------------------------------------------------------


def cc_min_error(message: str, type_: int, **extra: Any) -> UpstreamError:
    """min-api errors come back with HTTP 200 and `Response: Error` in the body."""
    body = {"Response": "Error", "Message": message, "HasWarning": False, "Type": type_, "RateLimit": {}, "Data": {}}
    return UpstreamError(200, {**body, **extra})


def cc_data_error(http: int, type_: int, message: str, param: str | None = None) -> UpstreamError:
    other = {"param": param, "values": []} if param else {}
    return UpstreamError(http, {"Data": {}, "Err": {"type": type_, "message": message, "other_info": other}})


def cc_alternative_ids(asset: Asset) -> list[dict] | None:
    ids = [{"NAME": "CG", "ID": asset.name.lower().replace(" ", "-")}]
    if asset.cc_alternative_ids == "null":
        return None
    if asset.cc_alternative_ids == "full":
        ids.insert(0, {"NAME": "CMC", "ID": str(asset.cmc_id)})
    return ids


def cc_top_list_item(market: Market, asset: Asset, minute: int, rank: int) -> dict:
    item = {
        "ID": asset.cc_id,
        "TYPE": "162",
        "ID_LEGACY": asset.cc_legacy_id,
        "SYMBOL": asset.cc_symbol,
        "URI": asset.cc_symbol.lower(),
        "ASSET_TYPE": "BLOCKCHAIN",
        "NAME": asset.cc_name,
        "LOGO_URL": None,
        "CREATED_ON": 1659708643,
        "UPDATED_ON": minute * 60,
        "LAUNCH_DATE": None if asset.nulls else 1230940800,
        "ASSET_ALTERNATIVE_IDS": cc_alternative_ids(asset),
        "SUPPLY_CIRCULATING": asset.supply * 0.8,
        "PRICE_USD": asset.price(minute),
        "PRICE_USD_SOURCE": "cadli",
        "PRICE_USD_LAST_UPDATE_TS": minute * 60,
        "CIRCULATING_MKT_CAP_USD": asset.price(minute) * asset.supply * 0.8,
        "SPOT_MOVING_24_HOUR_QUOTE_VOLUME_USD": asset.volume_24h(minute),
        "TOPLIST_BASE_RANK": {"SPOT_MOVING_24_HOUR_QUOTE_VOLUME_USD": rank},
    }
    if asset.cc_alternative_ids == "absent":
        del item["ASSET_ALTERNATIVE_IDS"]
    return item


def cc_totalvolfull_item(asset: Asset, minute: int) -> dict:
    """One min-api toplist entry: CoinInfo (legacy id as a string), RAW numbers, DISPLAY strings."""
    price, volume = asset.price(minute), asset.volume_24h(minute)
    raw = {
        "TYPE": "5", "MARKET": "CCCAGG", "FROMSYMBOL": asset.cc_symbol, "TOSYMBOL": "USD", "FLAGS": "2049",
        "PRICE": price, "LASTUPDATE": minute * 60, "VOLUME24HOUR": round(0.8 * volume / price, 6),
        "VOLUME24HOURTO": round(0.8 * volume, 2), "SUPPLY": asset.supply, "MKTCAP": price * asset.supply,
        "TOTALVOLUME24H": round(volume / price, 6), "TOTALVOLUME24HTO": volume,
        "TOTALTOPTIERVOLUME24H": round(0.6 * volume / price, 6), "TOTALTOPTIERVOLUME24HTO": round(0.6 * volume, 2),
        "IMAGEURL": f"/media/{asset.cc_legacy_id}/{asset.cc_symbol.lower()}.png",
        "CONVERSIONTYPE": "direct", "CONVERSIONSYMBOL": "",
    }  # fmt: skip
    display = {key: f"$ {value:,.2f}" for key, value in raw.items() if key in ("PRICE", "MKTCAP", "TOTALVOLUME24HTO")}
    coin = {
        "Id": str(asset.cc_legacy_id), "Name": asset.cc_symbol, "FullName": asset.cc_name,
        "Internal": asset.cc_symbol, "ImageUrl": raw["IMAGEURL"], "Url": f"/coins/{asset.cc_symbol.lower()}/overview",
        "Algorithm": "N/A", "ProofType": "N/A", "Type": 1, "DocumentType": "Webpagecoinp",
    }  # fmt: skip
    return {"CoinInfo": coin, "RAW": {"USD": raw}, "DISPLAY": {"USD": display}}


# --- the server ---------------------------------------------------------------------------


class Emulator:
    """State shared by request handlers: the market, the faults and the CMC plan."""

    def __init__(self, market: Market, faults: FaultBoard, cmc_plan: str = "standard") -> None:
        self.market, self.faults, self.cmc_plan = market, faults, cmc_plan
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()
        self.routes: dict[str, tuple[str, Callable[[dict[str, str], dict[str, str]], dict]]] = {
            "/v1/cryptocurrency/listings/latest": ("cmc_listings_latest", self.cmc_listings_latest),
            "/v2/cryptocurrency/quotes/latest": ("cmc_quotes_latest", self.cmc_quotes_latest),
            "/v2/cryptocurrency/quotes/historical": ("cmc_quotes_historical", self.cmc_quotes_historical),
            "/asset/v1/top/list": ("cc_top_list", self.cc_top_list),
            "/data/v2/histominute": ("cc_histominute", self.cc_histominute),
            "/data/v2/histohour": ("cc_histohour", self.cc_histohour),
            "/data/top/totalvolfull": ("cc_totalvolfull", self.cc_totalvolfull),
        }

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1

    @staticmethod
    def now_minute() -> int:
        return int(time.time() // 60)

    # auth -------------------------------------------------------------------------------
    def check_cmc_key(self, params: dict[str, str], headers: dict[str, str]) -> None:
        key = headers.get("x-cmc_pro_api_key") or params.get("CMC_PRO_API_KEY")
        if not key:
            raise cmc_error(401, 1002, "API key missing.")
        if key == "invalid":
            raise cmc_error(401, 1001, "This API Key is invalid.")

    @staticmethod
    def cc_key(params: dict[str, str], headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return headers.get("x-api-key") or (auth.removeprefix("Apikey ").strip() or None) or params.get("api_key")

    # CoinMarketCap ----------------------------------------------------------------------
    def cmc_listings_latest(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        self.check_cmc_key(params, headers)
        start = cmc_int(params, "start", 1, 1, 10**9)
        limit = cmc_int(params, "limit", 100, 1, 5000)
        sort = params.get("sort", "market_cap")
        minute = self.now_minute()
        market = self.market
        if sort == "volume_24h":
            ordered = sorted(market.assets, key=lambda a: -market.cmc_volume_24h(a, minute))
        elif sort in ("market_cap", "cmc_rank"):
            ordered = sorted(market.assets, key=lambda a: -a.price(minute) * a.supply)
        else:
            raise cmc_error(400, 400, f'Invalid value for "sort": "{sort}"')
        if params.get("sort_dir") == "asc":
            ordered.reverse()
        page = ordered[start - 1 : start - 1 + limit]
        data = [cmc_listing(market, a, minute, start + i) for i, a in enumerate(page)]
        credits = max(1, -(-len(data) // 200))
        return {"status": cmc_status(credits=credits, total_count=len(market.assets)), "data": data}

    def cmc_quotes_latest(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        """v2 quotes/latest by id: `data` keyed by the id as a string, each value a listing record.

        An id the market does not know fails the call with 400, unless `skip_invalid=true`
        leaves it out. 1 credit per 100 records returned (all plans)."""
        self.check_cmc_key(params, headers)
        ids = cmc_ids(params)
        unknown = [cmc_id for cmc_id in ids if cmc_id not in self.market.by_cmc_id]
        if unknown and params.get("skip_invalid", "false").lower() != "true":
            raise cmc_error(400, 400, f'Invalid value for "id": "{unknown[0]}"')
        minute = self.now_minute()
        data = {
            str(cmc_id): {**cmc_listing(self.market, self.market.by_cmc_id[cmc_id], minute, None),
                          "is_active": 1, "is_fiat": 0}
            for cmc_id in dict.fromkeys(ids) if cmc_id not in unknown
        }  # fmt: skip
        if not data:
            raise cmc_error(400, 400, 'Invalid value for "id"')
        return {"status": cmc_status(credits=-(-len(data) // 100)), "data": data}

    def cmc_quotes_historical(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        self.check_cmc_key(params, headers)
        if self.cmc_plan not in CMC_HISTORICAL_PLANS:
            raise cmc_error(403, 1006, "Your API Key subscription plan doesn't support this endpoint.")
        ids = cmc_ids(params)
        interval = params.get("interval", "5m")
        if interval not in CMC_INTERVAL_MINUTES:
            raise cmc_error(400, 400, f'Invalid value for "interval": "{interval}"')
        step = CMC_INTERVAL_MINUTES[interval]
        count = cmc_int(params, "count", 10, 1, 10000)
        now = time.time()
        try:
            end = parse_time(params["time_end"]) if "time_end" in params else int(now)
            start = parse_time(params["time_start"]) if "time_start" in params else end - count * step * 60
        except ValueError:
            raise cmc_error(400, 400, 'Invalid value for "time_start" or "time_end"') from None
        end = min(end, int(now))
        first = -(-start // (step * 60)) * step  # the first interval boundary at or after start
        minutes = list(range(first, end // 60 + 1, step))[:count]
        data: dict[str, Any] = {}
        for cmc_id in ids:
            asset = self.market.by_cmc_id.get(cmc_id)
            if asset is None:
                continue
            quotes = []
            for m in minutes:
                usd = cmc_quote(self.market, asset, m)
                quotes.append({
                    "timestamp": iso(m * 60),
                    "quote": {"USD": {
                        "price": usd["price"], "volume_24h": usd["volume_24h"], "market_cap": usd["market_cap"],
                        "circulating_supply": asset.supply * 0.8, "total_supply": asset.supply,
                        "timestamp": iso(m * 60),
                    }},
                })  # fmt: skip
            data[str(cmc_id)] = {
                "id": cmc_id, "name": asset.cmc_name, "symbol": asset.cmc_symbol,
                "is_active": 1, "is_fiat": 0, "quotes": quotes,
            }  # fmt: skip
        if not data:
            raise cmc_error(400, 400, 'Invalid value for "id"')
        points = sum(len(v["quotes"]) for v in data.values())
        body = data[str(ids[0])] if len(ids) == 1 else data
        return {"status": cmc_status(credits=max(1, -(-points // 100))), "data": body}

    # CryptoCompare data-api -------------------------------------------------------------
    def cc_top_list(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        if not self.cc_key(params, headers):
            raise cc_data_error(401, 1, "You need a valid auth key or api key to access this endpoint")
        pages = {"page": (1, 1, 1000), "page_size": (100, 10, 100)}
        values = {}
        for name, (default, low, high) in pages.items():
            try:
                values[name] = int(params.get(name, default))
            except ValueError:
                raise cc_data_error(400, 2, f"{name} must be an integer", name) from None
            if not low <= values[name] <= high:
                raise cc_data_error(400, 2, f"{name} must be between {low} and {high}", name)
        sort_by = params.get("sort_by", "CIRCULATING_MKT_CAP_USD")
        minute = self.now_minute()
        if sort_by == "SPOT_MOVING_24_HOUR_QUOTE_VOLUME_USD":
            ordered = self.market.ranked_by_volume(minute)
        elif sort_by == "CIRCULATING_MKT_CAP_USD":
            ordered = sorted(self.market.assets, key=lambda a: -a.price(minute) * a.supply)
        else:
            raise cc_data_error(400, 2, f"sort_by {sort_by!r} is not supported", "sort_by")
        if params.get("sort_direction", "DESC").upper() == "ASC":
            ordered = ordered[::-1]
        offset = (values["page"] - 1) * values["page_size"]
        page = ordered[offset : offset + values["page_size"]]
        items = [cc_top_list_item(self.market, a, minute, offset + i + 1) for i, a in enumerate(page)]
        stats = {"PAGE": values["page"], "PAGE_SIZE": values["page_size"], "TOTAL_ASSETS": len(self.market.assets)}
        return {"Data": {"STATS": stats, "LIST": items}, "Err": {}}

    # CryptoCompare min-api --------------------------------------------------------------
    def cc_histo(self, params: dict[str, str], headers: dict[str, str], bucket_minutes: int) -> dict:
        if not self.cc_key(params, headers):
            raise cc_min_error("You need a valid auth key or api key to access this endpoint", 1)
        for required in ("fsym", "tsym"):
            if not params.get(required):
                raise cc_min_error(f"{required} is a required param.", 2, ParamWithError=required)
        if params["tsym"] != "USD":
            raise cc_min_error(f"There is no data for the toSymbol {params['tsym']} .", 2, ParamWithError="tsym")
        asset = self.market.by_cc_symbol.get(params["fsym"])
        if asset is None:
            raise cc_min_error(f"There is no data for the symbol {params['fsym']} .", 2, ParamWithError="fsym")
        try:
            limit = int(params.get("limit", 1440 if bucket_minutes == 1 else 168))
            to_ts = int(params.get("toTs", time.time()))
        except ValueError:
            raise cc_min_error("limit and toTs must be integers", 2) from None
        if not 1 <= limit <= CC_HISTO_MAX_LIMIT:
            raise cc_min_error(
                f"limit param is not valid, the max value is {CC_HISTO_MAX_LIMIT}", 2, ParamWithError="limit"
            )
        now_minute = self.now_minute()
        last_bucket = min(to_ts // 60, now_minute) // bucket_minutes * bucket_minutes
        first_bucket = last_bucket - limit * bucket_minutes
        if bucket_minutes == 1 and first_bucket < now_minute - CC_MINUTE_HISTORY_DAYS * 1440:
            raise cc_min_error("Minute data is only stored for 7 days; use histohour.", 2, ParamWithError="toTs")
        bars = []
        for start in range(first_bucket, last_bucket + 1, bucket_minutes):
            volume = round(asset.volume_between(start, bucket_minutes), 2)
            close = asset.price(start + bucket_minutes - 1)
            bars.append({
                "time": start * 60, "high": max(close, asset.price(start)), "low": min(close, asset.price(start)),
                "open": asset.price(start), "volumefrom": round(volume / close, 6), "volumeto": volume,
                "close": close, "conversionType": "direct", "conversionSymbol": "",
            })  # fmt: skip
        data = {"Aggregated": False, "TimeFrom": bars[0]["time"], "TimeTo": bars[-1]["time"], "Data": bars}
        return {"Response": "Success", "Message": "", "HasWarning": False, "Type": 100, "RateLimit": {}, "Data": data}

    def cc_histominute(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        return self.cc_histo(params, headers, 1)

    def cc_histohour(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        return self.cc_histo(params, headers, 60)

    def cc_totalvolfull(self, params: dict[str, str], headers: dict[str, str]) -> dict:
        """Top coins by total 24h volume in USD, 0-based pages; no CMC id anywhere, as upstream."""
        if not self.cc_key(params, headers):
            raise cc_min_error("You need a valid auth key or api key to access this endpoint", 1)
        if not params.get("tsym"):
            raise cc_min_error("tsym is a required param.", 2, ParamWithError="tsym")
        if params["tsym"] != "USD":
            raise cc_min_error(f"There is no data for the toSymbol {params['tsym']} .", 2, ParamWithError="tsym")
        try:
            limit, page = int(params.get("limit", 10)), int(params.get("page", 0))
        except ValueError:
            raise cc_min_error("limit and page must be integers", 2, ParamWithError="limit") from None
        limit = min(100, max(10, limit))
        minute = self.now_minute()
        ranked = self.market.ranked_by_volume(minute)
        items = [cc_totalvolfull_item(a, minute) for a in ranked[page * limit : (page + 1) * limit]]
        return {"Message": "Success", "Type": 100, "MetaData": {"Count": len(ranked)}, "SponsoredData": [],
                "Data": items, "RateLimit": {}, "HasWarning": False}  # fmt: skip

    # faults -----------------------------------------------------------------------------
    def fault_response(self, endpoint: str, kind: str, fault: Fault, body: dict) -> tuple[int, bytes, dict]:
        """Render fault `kind` in the envelope of the API that owns `endpoint`."""
        retry = {"Retry-After": str(fault.retry_after_seconds)}
        cmc = endpoint.startswith("cmc_")
        min_api = endpoint in ("cc_histominute", "cc_histohour", "cc_totalvolfull")
        if kind in ("server_error", "unavailable"):
            status = 500 if kind == "server_error" else 503
            error = (
                cmc_error(status, 500, "Internal server error") if cmc else cc_data_error(status, 500, "Internal error")
            )
            return status, json.dumps(error.body).encode(), {}
        if kind == "rate_limited" or (kind == "quota_exhausted" and not min_api):
            if cmc:
                msg = "You've exceeded your API Key's HTTP request rate limit. Rate limits reset every minute."
                return 429, json.dumps(cmc_error(429, 1008, msg).body).encode(), retry
            if min_api:
                error = cc_min_error("You are over your rate limit please upgrade your account!", 99)
                return 200, json.dumps(error.body).encode(), {}
            error = cc_data_error(429, 99, "You are over your rate limit please upgrade your account!")
            return 429, json.dumps(error.body).encode(), {**retry, "X-Ratelimit-Remaining": "0"}
        if kind == "quota_exhausted" and min_api:
            # The day's calls are used up (the free tier's 7,500): Type 99 with HTTP 200, as captured.
            calls = {"second": 1, "minute": 11, "hour": 485, "day": 7500, "month": 82758, "total_calls": 82758}
            limits = {"second": 20, "minute": 300, "hour": 3000, "day": 7500, "month": 100000}
            error = cc_min_error("You are over your rate limit please upgrade your account!", 99,
                                 RateLimit={"calls_made": calls, "max_calls": limits})  # fmt: skip
            return 200, json.dumps(error.body).encode(), {}
        if kind == "malformed":
            return 200, json.dumps(body).encode()[: max(10, len(json.dumps(body)) // 3)], {}
        if kind == "truncated":
            return 200, json.dumps(truncate(body)).encode(), {}
        raise AssertionError(kind)

    def handle(self, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes, dict]:
        if path not in self.routes:
            if path.startswith("/data/"):
                return 200, json.dumps(cc_min_error("Path does not exist", 0).body).encode(), {}
            return 404, json.dumps({"detail": f"no such path {path}"}).encode(), {}
        endpoint, handler = self.routes[path]
        self.count(endpoint)
        kind, fault = self.faults.draw(endpoint)
        if fault.latency_ms:
            time.sleep(fault.latency_ms / 1000)
        if kind == "timeout":
            time.sleep(fault.timeout_seconds)
        try:
            body = handler(params, headers)
        except UpstreamError as error:
            return error.status, json.dumps(error.body).encode(), error.headers
        if kind and kind != "timeout":
            return self.fault_response(endpoint, kind, fault, body)
        return 200, json.dumps(body).encode(), {}


def truncate(body: dict) -> dict:
    """Cut the record list in half, keeping the envelope (a list that silently came back short)."""
    data = body.get("data")
    if isinstance(data, list):
        return {**body, "data": data[: len(data) // 2]}
    if isinstance(data, dict) and "quotes" not in data and all("quote" in v for v in data.values()):
        return {**body, "data": dict(list(data.items())[: len(data) // 2])}  # quotes/latest: fewer ids
    if isinstance(body.get("Data"), list):
        return {**body, "Data": body["Data"][: len(body["Data"]) // 2]}
    if isinstance(body.get("Data"), dict) and isinstance(body["Data"].get("LIST"), list):
        inner = body["Data"]
        return {**body, "Data": {**inner, "LIST": inner["LIST"][: len(inner["LIST"]) // 2]}}
    if isinstance(body.get("Data"), dict) and isinstance(body["Data"].get("Data"), list):
        inner = body["Data"]
        return {**body, "Data": {**inner, "Data": inner["Data"][: len(inner["Data"]) // 2]}}
    return body


class Handler(BaseHTTPRequestHandler):
    server_version = "crypto-toplist-emulator/1"
    emulator: Emulator  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Emulated", "true")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/_emulator/health":
            return self.send(200, b'{"status":"ok"}')
        if url.path == "/_emulator/faults":
            return self.send(200, json.dumps(self.emulator.faults.describe()).encode())
        if url.path == "/_emulator/requests":
            return self.send(200, json.dumps(self.emulator.requests).encode())
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            self.send(*self.emulator.handle(url.path, params, headers))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. a timeout fault); nothing to answer

    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        """`PUT /_emulator/faults` with `{endpoint: {kind, times, rate, latency_ms, …}}`;
        `PUT /_emulator/config` with `{"cmc_plan": "basic"}`."""
        length = int(self.headers.get("Content-Length", 0))
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/_emulator/faults":
                self.emulator.faults.clear()
                for endpoint, spec in payload.items():
                    self.emulator.faults.set(endpoint, Fault(**spec))
                return self.send(200, json.dumps(self.emulator.faults.describe()).encode())
            if self.path == "/_emulator/config":
                self.emulator.cmc_plan = payload.get("cmc_plan", self.emulator.cmc_plan)
                return self.send(200, json.dumps({"cmc_plan": self.emulator.cmc_plan}).encode())
        except (ValueError, TypeError) as error:
            return self.send(400, json.dumps({"detail": str(error)}).encode())
        self.send(404, b'{"detail":"no such control path"}')


def make_server(host: str, port: int, emulator: Emulator) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"emulator": emulator})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
