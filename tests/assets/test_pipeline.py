"""Real partitions materialized through Dagster against the emulator, into SQLite and Postgres."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from crypto_pipeline import fetching
from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from emulator.market import Market
from warehouse.requests import RequestPolicy
from warehouse.schema import fetches, prices, rankings, snapshots
from warehouse.store import Warehouse

MARKET = Market(3000)
ASSETS = [fetch_prices_and_rankings, top_assets]


def resources(emulator_url: str, database_url: str, **overrides) -> dict:
    client = dict(timeout_seconds=2.0, backoff_seconds=0.01, max_attempts=2)
    return {
        "cmc": CoinMarketCapResource(api_keys={"CMC_API_KEY": "test-key"}, base_url=emulator_url, **client),
        "cryptocompare": CryptoCompareResource(
            api_keys={"CRYPTOCOMPARE_API_KEY": overrides.pop("cc_key", "test-key")},
            data_api_url=emulator_url,
            min_api_url=emulator_url,
            **client,
        ),
        "warehouse": WarehouseResource(database_url=database_url),
        "toplist": ToplistConfig(**{"depth": 200, "ranking_depth": 250, **overrides}),
    }


def this_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def materialize(emulator, database_url, dagster_instance):
    """Materialize one minute of all three assets: `materialize(minute, **resource_overrides)`."""

    def run(
        partition: datetime, raise_on_error: bool = True, tags: dict | None = None, **overrides
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            ASSETS,
            partition_key=partition.strftime(MINUTE_FORMAT),
            tags=tags,
            resources=resources(emulator.url, database_url, **overrides),
            instance=dagster_instance,
            raise_on_error=raise_on_error,
        )

    return run


def rows(store: Warehouse, table, minute: datetime) -> list[dict]:
    with store.engine.connect() as conn:
        query = select(table).where(table.c.minute == minute).order_by(*table.primary_key.columns)
        return [dict(r._mapping) for r in conn.execute(query)]


def test_live_minute_joins_on_cmc_id(materialize, emulator, database_url):
    minute = this_minute()
    result = materialize(minute)
    assert result.success
    store = Warehouse(database_url)
    snapshot = store.latest_snapshot()
    served = store.snapshot_rows(snapshot.minute, 200)
    ranked = rows(store, rankings, snapshot.minute)
    assert snapshot.source == "emulated" and snapshot.row_count == len(served) == 200
    assert [r["rank"] for r in served] == list(range(1, 201))

    # The emulator answered for the minute it was asked in; prices say which.
    (price_minute,) = {r["last_updated"] for r in rows(store, prices, snapshot.minute)}
    served_minute = int(price_minute.timestamp() // 60)
    # Priced: exactly the ranked CMC ids, however low CMC's own volume ranks them.
    assert {r["cmc_id"] for r in rows(store, prices, snapshot.minute)} == {r["cmc_id"] for r in ranked} - {None}
    priced_in_order = [r for r in ranked if r["cmc_id"] is not None][:200]
    assert [r["cmc_id"] for r in served] == [r["cmc_id"] for r in priced_in_order]
    for row in served:
        asset = MARKET.by_cmc_id[row["cmc_id"]]
        assert row["price_usd"] == asset.price(served_minute)
    # Some served assets share their CMC symbol with another asset: each still has its own price.
    symbols = Counter(asset.cmc_symbol for asset in MARKET.assets)
    assert [r for r in served if symbols[MARKET.by_cmc_id[r["cmc_id"]].cmc_symbol] > 1]
    for row in store.snapshot_rows(snapshot.minute, 200):
        assert row["symbol"] == MARKET.by_cmc_id[row["cmc_id"]].cmc_symbol


def test_unmatched_assets_are_counted_and_reported(materialize, emulator, database_url):
    result = materialize(this_minute())
    store = Warehouse(database_url)
    snapshot = store.latest_snapshot()
    ranked = rows(store, rankings, snapshot.minute)
    without_id = [r for r in ranked if r["cmc_id"] is None]
    assert without_id and snapshot.unmatched == len(without_id)
    assert snapshot.matched + snapshot.unmatched == len(ranked) == 250
    metadata = result.asset_materializations_for_node("top_assets")[0].metadata
    assert metadata["unmatched"].value == len(without_id)
    assert metadata["unmatched_symbols"].value == [r["symbol"] for r in without_id][:20]
    assert metadata["source"].value == "emulated"
    cmc_metadata = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("prices")]
    ids = len({r["cmc_id"] for r in ranked} - {None})
    credits = cmc_metadata[0].materialization.metadata["cmc_credits"].value
    assert credits == -(-ids // 100) == 3  # quotes/latest: 1 credit per 100 ids (listings of 1000 cost 5)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == dict.fromkeys(checks, True) and len(checks) == 5


def test_past_minute_rerun_is_identical_and_matches_emulator_history(materialize, emulator, database_url):
    materialize(this_minute())  # a stored ranking to draw candidates from
    past = this_minute() - timedelta(hours=3)
    store = Warehouse(database_url)
    store.requests.ask(past, RequestPolicy())
    result = materialize(past)
    request = store.requests.get(past)  # settled by the run that stored the minute
    assert (request.status, request.run_id) == ("succeeded", result.run_id)
    first = store.snapshot_rows(past, 200)
    materialize(past)
    assert store.snapshot_rows(past, 200) == first and len(first) == 200
    five_minutes_back = int(past.timestamp() // 60) // 5 * 5  # CMC historical quotes come every 5 minutes
    for row in first:
        asset = MARKET.by_cmc_id[row["cmc_id"]]
        assert row["volume_24h_usd"] == pytest.approx(
            asset.volume_24h(int(past.timestamp() // 60)), abs=1440 * 0.005
        )  # bars in cents
        assert row["price_usd"] == asset.price(five_minutes_back)
    volumes = [r["volume_24h_usd"] for r in first]
    assert volumes == sorted(volumes, reverse=True)
    with store.engine.connect() as conn:
        modes = set(conn.execute(select(fetches.c.mode).where(fetches.c.minute == past)).scalars())
    assert modes == {"historical"}


def test_a_minute_failing_a_blocking_check_is_not_published(materialize, emulator, database_url):
    minute = this_minute()
    store = Warehouse(database_url)
    store.requests.ask(minute, RequestPolicy())
    store.requests.submit(minute, minute, "key-1")
    store.requests.launch("key-1", "earlier")
    # 250 rows required of 250 ranked: the assets CryptoCompare knows no CMC id for make it fail.
    tags = {"dagster/run_key": "key-1"}  # the run the request was launched under
    result = materialize(minute, raise_on_error=False, tags=tags, depth=250, row_count_threshold=1.0)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "blocked by checks" in failure.event_specific_data.error.message
    assert f"{minute:%Y-%m-%d %H:%M} failed row_count" in failure.event_specific_data.error.message
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"row_count": False, "ranks_contiguous": True, "unique_cmc_ids": True,
                      "prices_positive": True, "top_100_match_rate": True}  # fmt: skip
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("top_assets")]
    assert rows(store, snapshots, minute) == [] and store.snapshot_rows(minute, 200) == []
    assert len(rows(store, rankings, minute)) == 250  # the upstream data is kept for a re-run
    request = store.requests.get(minute)
    assert request.status == "failed" and "row_count" in request.error


def test_failing_source_leaves_the_other_recorded(materialize, emulator, database_url):
    minute = this_minute()
    materialize(minute - timedelta(minutes=1))
    store = Warehouse(database_url)
    stored_ranking = rows(store, rankings, minute - timedelta(minutes=1))
    result = materialize(minute, cc_key="", raise_on_error=False)
    assert not result.success
    # Without this minute's ranking, the ids of the nearest stored one are priced.
    priced = {r["cmc_id"] for r in rows(store, prices, minute)}
    assert priced == {r["cmc_id"] for r in stored_ranking} - {None}
    assert rows(store, rankings, minute) == [] and rows(store, snapshots, minute) == []
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey("prices")}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "CRYPTOCOMPARE_API_KEY" in failure.event_specific_data.error.message


def test_transient_failure_is_retried_by_the_retry_policy(materialize, emulator, database_url):
    # Three pages x two client attempts fail the first step attempt; the step's RetryPolicy runs it again.
    emulator.set_faults({"cc_top_list": {"kind": "unavailable", "times": 6}})
    result = materialize(this_minute())
    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert Warehouse(database_url).latest_snapshot().row_count == 200


def test_a_past_minute_takes_no_quote_older_than_the_max_age(materialize, emulator, database_url):
    materialize(this_minute())
    past = this_minute() - timedelta(hours=2)
    past -= timedelta(minutes=(past.minute - 3) % 5)  # 3 minutes after a 5-minute quote
    result = materialize(past, raise_on_error=False, max_quote_age_minutes=2)
    store = Warehouse(database_url)
    assert rows(store, prices, past) == [] and rows(store, snapshots, past) == []  # every quote is 3 minutes old
    with store.engine.connect() as conn:
        (rejected,) = conn.execute(
            select(fetches.c.rejected).where(fetches.c.minute == past, fetches.c.dataset == "prices")
        ).one()
    ranked_ids = {r["cmc_id"] for r in rows(store, rankings, past)} - {None}
    assert rejected == len(ranked_ids)  # each ranked id unpriced at this minute, counted
    metadata = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("prices"))
    assert metadata.materialization.metadata["rejected"].value == len(ranked_ids)
    assert not result.success  # and the blocking row_count check kept the minute unpublished

    result = materialize(past, max_quote_age_minutes=3)
    assert result.success and len(store.snapshot_rows(past, 200)) == 200


def test_past_prices_can_come_from_cryptocompare(materialize, emulator, database_url):
    materialize(this_minute())
    past = this_minute() - timedelta(hours=2)
    cmc_history_calls = emulator.requests().get("cmc_quotes_historical", 0)
    materialize(past, historical_price_source="cryptocompare")
    store = Warehouse(database_url)
    snapshot = store.snapshot_at_or_before(past, timedelta(minutes=1))
    assert snapshot.minute == past and snapshot.price_source == "cryptocompare"
    unix_minute = int(past.timestamp() // 60)
    for row in store.snapshot_rows(past, 200):
        assert row["price_usd"] == MARKET.by_cmc_id[row["cmc_id"]].price(unix_minute)  # the minute bar's close
    assert emulator.requests().get("cmc_quotes_historical", 0) == cmc_history_calls


def test_a_plan_without_history_fails_clearly_and_keeps_the_rankings(materialize, emulator, database_url):
    materialize(this_minute())
    emulator.set_plan("basic")
    past = this_minute() - timedelta(hours=1)
    result = materialize(past, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "1006" in failure.event_specific_data.error.message
    assert "plan does not include this endpoint" in failure.event_specific_data.error.message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)  # not transient
    store = Warehouse(database_url)
    assert len(rows(store, rankings, past)) == 250 and rows(store, prices, past) == []


def step_failure(result: dg.ExecuteInProcessResult) -> tuple[bool, bool]:
    """(permanent, retried in the step) of the fetch step's failure."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    permanent = failure.event_specific_data.user_failure_data.metadata["permanent"].value
    return permanent, any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def test_a_rejected_key_is_permanent_even_while_listing_the_assets_to_rank(materialize, emulator):
    """Nothing stored near a past minute: the assets to rank come from CryptoCompare's list,
    before any fetch; a rejected key there is still a failure only an operator can fix."""
    result = materialize(this_minute() - timedelta(hours=2), cc_key="", raise_on_error=False)
    assert step_failure(result) == (True, False)


def test_a_spent_quota_heals_by_itself_so_it_is_not_permanent(materialize, emulator):
    emulator.set_faults({endpoint: {"kind": "quota_exhausted"} for endpoint in ("cc_histominute", "cc_histohour")})
    result = materialize(this_minute() - timedelta(hours=2), raise_on_error=False)
    assert step_failure(result) == (False, False)  # retrying in seconds cannot help either


def test_an_unexpected_error_is_not_permanent_and_is_retried(materialize, emulator, monkeypatch):
    def database_down(*_):
        raise sa_exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(fetching, "record", database_down)
    result = materialize(this_minute(), raise_on_error=False)
    assert step_failure(result) == (False, True)
