"""Upstream records as typed models: what every source's records must be before they are stored.

Where each field sits in an upstream body is data (`crypto_pipeline/sources/*.yaml`, read by
`crypto_pipeline.resources.sources`); what a valid record is stays here, in code. Parsing is
lenient where upstreams are messy (nulls, numbers as strings, unknown or missing optional
fields) and strict where the product depends on it: a record without an id or with
a non-positive price is rejected and counted, never stored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


Text = Annotated[str, BeforeValidator(_blank_to_none)]
# The served list packs CMC ids as int32 (warehouse.schema.PackedArray); real ids are below 100,000.
CmcId = Annotated[int, Field(gt=0, lt=2**31)]
# The bound sits on the float alone: on the union, pydantic would apply it to None and crash.
OptionalNumber = Annotated[Annotated[float, Field(ge=0)] | None, BeforeValidator(_blank_to_none)]


class PriceRecord(BaseModel):
    """A USD quote of one CMC asset."""

    model_config = ConfigDict(frozen=True)

    cmc_id: CmcId
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
    cmc_id: Annotated[CmcId | None, BeforeValidator(_blank_to_none)] = None
    volume_24h_usd: OptionalNumber = None
    price_usd: Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_blank_to_none)] = None


class CmcIdLink(BaseModel):
    """Where an upstream's own asset id leads in CoinMarketCap: one entry of an id map that
    bridges a list without CMC ids (CryptoCompare's min-api toplists) to the CMC join key."""

    model_config = ConfigDict(frozen=True)

    id: PositiveInt
    cmc_id: Annotated[CmcId | None, BeforeValidator(_blank_to_none)] = None


class HistoryBar(BaseModel):
    """One CryptoCompare OHLCV bucket; `time` is the bucket's start in unix seconds."""

    time: int
    close: Annotated[float, Field(ge=0)]
    volumeto: Annotated[float, Field(ge=0)]


@dataclass
class Parsed:
    records: list = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few, for metadata and logs
    failed: Counter[str] = field(default_factory=Counter)  # rejections by the field path that failed
