"""The `assets` dimension: one row per CMC id, the newest symbol and name win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.api.conftest import seed_snapshot
from warehouse.schema import PackedArray, assets
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


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_rename_committed_late_is_served_after_the_next_refresh(database_url, monkeypatch):
    """A rename whose transaction commits after the API looked, with an `updated_at` from before
    that look (a long range write), is still picked up at the next refresh of the names."""
    store = Warehouse(database_url)
    seed_snapshot(store, MINUTE)
    first = store.snapshot_rows(MINUTE, 1)[0]  # names read and kept
    with store.engine.begin() as conn:  # committed now, stamped well before the look above
        renamed = assets.update().where(assets.c.cmc_id == first["cmc_id"])
        conn.execute(renamed.values(symbol="RENAMED", updated_at=MINUTE - timedelta(days=1)))
    assert store.snapshot_rows(MINUTE, 1)[0]["symbol"] == first["symbol"]  # until the next refresh
    later = datetime.now(UTC) + timedelta(minutes=2)
    monkeypatch.setattr("warehouse.serve.utcnow", lambda: later)  # past the refresh interval
    assert store.snapshot_rows(MINUTE, 1)[0]["symbol"] == "RENAMED"


def test_the_packed_ids_refuse_a_value_beyond_int32_by_name():
    """Parsing rejects such a CMC id first; the packed column still never wraps or truncates one."""
    with pytest.raises(ValueError, match="int32"):
        PackedArray("i").process_bind_param([1, 2**31], None)
