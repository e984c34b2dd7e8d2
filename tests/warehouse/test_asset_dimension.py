"""The `assets` dimension: one row per CMC id, the newest symbol and name win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from warehouse.schema import assets
from warehouse.store import Warehouse

MINUTE = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def price(cmc_id: int, symbol: str, name: str, minute: datetime = MINUTE) -> dict:
    return {"minute": minute, "cmc_id": cmc_id, "symbol": symbol, "name": name, "price_usd": 1.5}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_renamed_asset_is_updated_and_an_unchanged_one_is_left_alone(database_url):
    store = Warehouse(database_url)
    end = MINUTE + timedelta(minutes=1)
    store.replace_prices(MINUTE, end, [price(1, "BTC", "Bitcoin"), price(2, "OLD", "Old name")], [])
    with store.engine.connect() as conn:
        first_written = dict(conn.execute(select(assets.c.cmc_id, assets.c.updated_at)).tuples().all())

    later, later_end = end, end + timedelta(minutes=1)
    store.replace_prices(later, later_end, [price(1, "BTC", "Bitcoin", later), price(2, "NEW", "New name", later)], [])
    with store.engine.connect() as conn:
        rows = {r.cmc_id: r for r in conn.execute(select(assets))}
    assert (rows[2].symbol, rows[2].name) == ("NEW", "New name")
    assert rows[2].updated_at > first_written[2]
    assert (rows[1].symbol, rows[1].updated_at) == ("BTC", first_written[1])  # no needless rewrite
