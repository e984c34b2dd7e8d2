"""Upstream records: endpoints described as data, validated by typed models.

An `EndpointSpec` says where an endpoint's records sit in the body and where each field sits
in a record (a dotted path; `KEY[NAME=CMC]` picks the list element whose NAME is CMC). Adding
a source is then mostly a new spec. Paths are looked up, never evaluated.

Parsing is lenient where upstreams are messy (nulls, numbers as strings, unknown or missing
optional fields) and strict where the product depends on it: a record without an id or with
a non-positive price is rejected and counted, never stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, ValidationError

from crypto_pipeline.resources.errors import UpstreamSchemaError


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


Text = Annotated[str, BeforeValidator(_blank_to_none)]
# The bound sits on the float alone: on the union, pydantic would apply it to None and crash.
OptionalNumber = Annotated[Annotated[float, Field(ge=0)] | None, BeforeValidator(_blank_to_none)]


class PriceRecord(BaseModel):
    """A USD quote of one CMC asset."""

    model_config = ConfigDict(frozen=True)

    cmc_id: PositiveInt
    symbol: Text
    name: Text
    price_usd: Annotated[float, Field(gt=0)]
    volume_24h_usd: OptionalNumber = None
    market_cap_usd: OptionalNumber = None
    last_updated: datetime | None = None


class RankingRecord(BaseModel):
    """One place in a 24h-volume ranking; `cmc_id` is the join key and may be unknown."""

    model_config = ConfigDict(frozen=True)

    rank: PositiveInt
    cc_id: PositiveInt
    symbol: Text
    name: Text
    cmc_id: Annotated[PositiveInt | None, BeforeValidator(_blank_to_none)] = None
    volume_24h_usd: OptionalNumber = None
    price_usd: Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_blank_to_none)] = None


class HistoryBar(BaseModel):
    """One CryptoCompare OHLCV bucket; `time` is the bucket's start in unix seconds."""

    time: int
    close: Annotated[float, Field(ge=0)]
    volumeto: Annotated[float, Field(ge=0)]


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    path: str
    records: str  # dotted path to the record list in the body
    fields: Mapping[str, str]  # record field -> dotted path inside one upstream record
    model: type[BaseModel]


@dataclass
class Parsed:
    records: list = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few, for metadata and logs


_SEGMENT = re.compile(r"^(?P<key>[^\[\]]+)(?:\[(?P<match_key>\w+)=(?P<match_value>[^\]]*)\])?$")


def lookup(node: Any, path: str) -> Any:
    """The value at dotted `path` in `node`, or None where any step is missing or null."""
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(f"bad field path segment {segment!r}")
        if not isinstance(node, Mapping):
            return None
        node = node.get(match["key"])
        if match["match_key"]:
            if not isinstance(node, list):
                return None
            node = next(
                (x for x in node if isinstance(x, Mapping) and str(x.get(match["match_key"])) == match["match_value"]),
                None,
            )
    return node


def parse_records(body: Any, spec: EndpointSpec, first_rank: int | None = None) -> Parsed:
    """Typed records from `body`; `first_rank` numbers ranking records by list position."""
    items = lookup(body, spec.records)
    if not isinstance(items, list):
        raise UpstreamSchemaError(spec.name, f"expected a list at {spec.records!r}, got {type(items).__name__}")
    parsed = Parsed()
    failed_fields: Counter[str] = Counter()
    for position, item in enumerate(items):
        values = {name: lookup(item, path) for name, path in spec.fields.items()}
        if first_rank is not None:
            values["rank"] = first_rank + position
        try:
            parsed.records.append(spec.model.model_validate(values))
        except ValidationError as error:
            first = error.errors()[0]
            path = f"{spec.records}[].{spec.fields.get(str(first['loc'][0]), first['loc'][0])}"
            failed_fields[path] += 1
            parsed.rejected += 1
            if len(parsed.reasons) < 20:
                parsed.reasons.append(f"record {position}: {path}: {first['msg']}")
    raise_if_all_rejected(spec.name, parsed, failed_fields)
    return parsed


def raise_if_all_rejected(endpoint: str, parsed: Parsed, failed_fields: Counter[str]) -> None:
    """A body whose every record fails validation is a changed format, not an empty answer."""
    if parsed.rejected and not parsed.records:
        (path, _), *_ = failed_fields.most_common(1)
        raise UpstreamSchemaError(
            endpoint, f"all {parsed.rejected} records rejected; field path {path} failed ({parsed.reasons[0]})"
        )


# --- the endpoints, as data ---------------------------------------------------------------

CMC_LISTINGS_LATEST = EndpointSpec(
    name="cmc_listings_latest",
    path="/v1/cryptocurrency/listings/latest",
    records="data",
    fields={
        "cmc_id": "id",
        "symbol": "symbol",
        "name": "name",
        "price_usd": "quote.USD.price",
        "volume_24h_usd": "quote.USD.volume_24h",
        "market_cap_usd": "quote.USD.market_cap",
        "last_updated": "quote.USD.last_updated",
    },
    model=PriceRecord,
)

CMC_QUOTES_HISTORICAL_PATH = "/v2/cryptocurrency/quotes/historical"
CMC_HISTORICAL_QUOTE_FIELDS = {
    "price_usd": "quote.USD.price",
    "volume_24h_usd": "quote.USD.volume_24h",
    "market_cap_usd": "quote.USD.market_cap",
    "last_updated": "timestamp",
}

CC_TOP_LIST = EndpointSpec(
    name="cc_top_list",
    path="/asset/v1/top/list",
    records="Data.LIST",
    fields={
        "cc_id": "ID",
        "symbol": "SYMBOL",
        "name": "NAME",
        "cmc_id": "ASSET_ALTERNATIVE_IDS[NAME=CMC].ID",
        "volume_24h_usd": "SPOT_MOVING_24_HOUR_QUOTE_VOLUME_USD",
        "price_usd": "PRICE_USD",
    },
    model=RankingRecord,
)

# min-api toplists rank by volume too but carry no CMC id (see upstream_apis.md §2.2).
CC_TOTALVOLFULL = EndpointSpec(
    name="cc_totalvolfull",
    path="/data/top/totalvolfull",
    records="Data",
    fields={
        "cc_id": "CoinInfo.Id",
        "symbol": "CoinInfo.Name",
        "name": "CoinInfo.FullName",
        "volume_24h_usd": "RAW.USD.TOTALVOLUME24HTO",
        "price_usd": "RAW.USD.PRICE",
    },
    model=RankingRecord,
)

CC_TOPTIERVOL = EndpointSpec(
    name="cc_totaltoptiervol",
    path="/data/top/totaltoptiervol",
    records="Data",
    fields={"cc_id": "CoinInfo.Id", "symbol": "CoinInfo.Name", "name": "CoinInfo.FullName"},
    model=RankingRecord,
)

CC_HISTO_V2 = EndpointSpec(
    name="cc_histo", path="/data/v2/histominute", records="Data.Data",
    fields={"time": "time", "close": "close", "volumeto": "volumeto"}, model=HistoryBar,
)  # fmt: skip
CC_HISTO_V1 = EndpointSpec(
    name="cc_histo_v1", path="/data/histominute", records="Data",
    fields=CC_HISTO_V2.fields, model=HistoryBar,
)  # fmt: skip


def parse_cmc_historical(body: Any) -> tuple[dict[int, list[tuple[datetime, PriceRecord]]], Parsed]:
    """CMC v2 quotes/historical: one object per id (wrapped in an id-keyed map when several)."""
    data = lookup(body, "data")
    if not isinstance(data, Mapping):
        raise UpstreamSchemaError("cmc_quotes_historical", "expected an object at 'data'")
    assets = [data] if "quotes" in data else list(data.values())
    series: dict[int, list[tuple[datetime, PriceRecord]]] = {}
    summary = Parsed()
    failed_fields: Counter[str] = Counter()
    for asset in assets:
        if not isinstance(asset, Mapping) or not isinstance(asset.get("quotes"), list):
            summary.rejected += 1
            failed_fields["data.<id>.quotes"] += 1
            summary.reasons.append("data.<id>.quotes: not a list")
            continue
        for quote in asset["quotes"]:
            values = {"cmc_id": asset.get("id"), "symbol": asset.get("symbol"), "name": asset.get("name"),
                      **{name: lookup(quote, path) for name, path in CMC_HISTORICAL_QUOTE_FIELDS.items()}}  # fmt: skip
            try:
                record = PriceRecord.model_validate(values)
            except ValidationError as error:
                field_name = str(error.errors()[0]["loc"][0])
                inner = CMC_HISTORICAL_QUOTE_FIELDS.get(field_name)
                path = f"data.<id>.quotes[].{inner}" if inner else f"data.<id>.{field_name}"
                failed_fields[path] += 1
                summary.rejected += 1
                if len(summary.reasons) < 20:
                    summary.reasons.append(f"{path}: {error.errors()[0]['msg']}")
                continue
            series.setdefault(record.cmc_id, []).append((record.last_updated, record))
            summary.records.append(record)
    raise_if_all_rejected("cmc_quotes_historical", summary, failed_fields)
    return series, summary
