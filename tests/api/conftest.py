"""A real uvicorn server on loopback per test, over a warehouse seeded through its own write path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.service import ToplistQuery
from common.settings import Settings
from emulator.market import Market
from tests.conftest import free_port
from warehouse.ingest import Fetch
from warehouse.store import Warehouse

MARKET = Market(3000)


def market_rows(minute: datetime, depth: int = 250) -> tuple[list[dict], list[dict]]:
    """The emulated market's ranking and price rows for one minute, as the pipeline stores them."""
    unix_minute = int(minute.timestamp() // 60)
    ranked = MARKET.ranked_by_volume(unix_minute)[:depth]
    ranking_rows = [
        {"minute": minute, "rank": i, "cc_id": a.cc_id, "symbol": a.cc_symbol, "name": a.name,
         "cmc_id": a.cmc_id if a.cc_knows_cmc_id else None, "volume_24h_usd": a.volume_24h(unix_minute)}
        for i, a in enumerate(ranked, start=1)
    ]  # fmt: skip
    price_rows = [
        {
            "minute": minute,
            "cmc_id": a.cmc_id,
            "symbol": a.cmc_symbol,
            "name": a.name,
            "price_usd": a.price(unix_minute),
        }
        for a in ranked
    ]
    return ranking_rows, price_rows


def store_upstream(
    store: Warehouse,
    minute: datetime,
    ranking_rows: list[dict] | None,
    price_rows: list[dict] | None,
    fetched: datetime | None = None,
    mode: str = "latest",
    emulated: bool = True,
):
    """Write one minute's fetched datasets (None: that upstream was not fetched) as the pipeline would, fetched now
    unless `fetched` says when, from the `latest` endpoints (captured live) or the `historical` ones."""
    end = minute + timedelta(minutes=1)
    fetched = fetched or datetime.now(UTC)
    if ranking_rows is not None:
        fetch = Fetch(minute, "rankings", "cryptocompare", emulated, mode, len(ranking_rows), 0, fetched)
        store.replace_rankings(minute, end, ranking_rows, [fetch])
    if price_rows is not None:
        fetch = Fetch(minute, "prices", "coinmarketcap", emulated, mode, len(price_rows), 0, fetched)
        store.replace_prices(minute, end, price_rows, [fetch])


def seed_snapshot(store: Warehouse, minute: datetime, depth: int = 250, **provenance) -> None:
    """Store one minute as the pipeline would (rankings, prices, merge), from the emulated market;
    `provenance`: store_upstream's `mode` and `emulated`."""
    store_upstream(store, minute, *market_rows(minute, depth), **provenance)
    store.merge_top_assets(minute, minute + timedelta(minutes=1), 200)


class ApiServer:
    """uvicorn as the tests start it (its defaults: httptools, as `uvicorn[standard]` installs), serving
    the API made from `settings`, or `app`."""

    def __init__(self, settings: Settings, app=None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app or create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=10, limits=httpx.Limits(max_connections=32))

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, path: str = "/", **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)


@pytest.fixture
def api(database_url) -> Iterator[Callable[..., ApiServer]]:
    """Start an API over `database_url` with settings overrides: `with api(**overrides) as server:`."""

    def start(**overrides) -> ApiServer:
        overrides.setdefault("database_url", database_url)
        overrides.setdefault("history_start", datetime.now(UTC) - timedelta(days=30))
        return ApiServer(Settings(**overrides))

    yield start


@pytest.fixture
def store(database_url) -> Warehouse:
    return Warehouse(database_url)


def this_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def validations(monkeypatch) -> list[int]:
    """Counts how often the FastAPI route validated a query (the fast path never does)."""
    calls = [0]
    parse = ToplistQuery.parse.__func__

    def counting(cls, *args, **kwargs):
        calls[0] += 1
        return parse(cls, *args, **kwargs)

    monkeypatch.setattr(ToplistQuery, "parse", classmethod(counting))
    return calls
