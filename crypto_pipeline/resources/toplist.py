"""How deep each list goes and what the checks accept: configuration shown in the Dagster UI."""

from typing import Literal

import dagster as dg
from pydantic import Field


class ToplistConfig(dg.ConfigurableResource):
    depth: int = Field(default=200, ge=1, description="Rows kept per snapshot in top_assets.")
    ranking_depth: int = Field(
        default=250, ge=1, description="Ranked assets fetched (more than depth: some go unpriced)."
    )
    max_quote_age_minutes: int = Field(
        default=10, ge=0, description="A past minute takes a CMC quote at most this old; older is unmatched."
    )
    live_window_minutes: int = Field(
        default=3, ge=1, description="A minute younger than this uses the latest endpoints."
    )
    match_rate_threshold: float = Field(default=0.9, ge=0, le=1, description="Top-100 match rate below this warns.")
    row_count_threshold: float = Field(default=0.9, ge=0, le=1, description="A snapshot needs depth x this many rows.")
    chunk_minutes: int = Field(
        default=120, ge=1, description="A range is fetched, stored and merged this many minutes at a time."
    )
    historical_price_source: Literal["coinmarketcap", "cryptocompare"] = Field(
        default="coinmarketcap", description="Where past minutes' prices come from; stored with each snapshot."
    )
