"""A minute captured live is never replaced by a reconstruction from the historical endpoints,
unless the run config says so: a range over it (the UI's "materialize missing" after pruning
or a HISTORY_START move) keeps its raw rows and snapshot, and says so in metadata."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import select

from crypto_pipeline.partitions import MINUTE_FORMAT
from tests.assets.test_pipeline import ASSETS, resources, this_minute
from warehouse.schema import fetches
from warehouse.store import Warehouse

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def modes(store: Warehouse, minute: datetime) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(fetches.c.mode).where(fetches.c.minute == minute)).scalars())


def kept_live(result: dg.ExecuteInProcessResult, asset: str) -> int | None:
    """The run's `kept_live_minutes` for `asset` (a range run repeats its metadata for each partition)."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    (kept,) = {getattr(e.materialization.metadata.get("kept_live_minutes"), "value", None) for e in events}
    return kept


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_range_keeps_the_minutes_captured_live_unless_forced(emulator, database_url, dagster_instance):
    live = this_minute() - timedelta(minutes=1)  # still live (LIVE_WINDOW_MINUTES 3), and past for history
    chosen = resources(emulator.url, database_url, depth=20, ranking_depth=30)

    def materialize(first: datetime, last: datetime, **config) -> dg.ExecuteInProcessResult:
        tags = {RANGE_START: first.strftime(MINUTE_FORMAT), RANGE_END: last.strftime(MINUTE_FORMAT)}
        run_config = {"ops": {"fetch_prices_and_rankings": {"config": config}}} if config else None
        return dg.materialize(ASSETS, resources=chosen, instance=dagster_instance, tags=tags, run_config=run_config)

    store = Warehouse(database_url)
    materialize(live, live)
    assert modes(store, live) == {"latest"}
    captured = store.snapshot_at_or_before(live, timedelta(minutes=1))
    assert captured.live
    served = store.snapshot_rows(live, 20)

    over_raw_rows = materialize(live - timedelta(minutes=1), live)  # a range: from the historical endpoints

    assert modes(store, live) == {"latest"} and store.snapshot_rows(live, 20) == served
    # Merged again from the same raw rows, the snapshot is left as it was: its created_at (the
    # API's Last-Modified) included.
    assert store.snapshot_at_or_before(live, timedelta(minutes=1)) == captured
    assert modes(store, live - timedelta(minutes=1)) == {"historical"}  # the rest of the range is stored
    assert kept_live(over_raw_rows, "prices") == kept_live(over_raw_rows, "rankings") == 1

    store.prune_raw(fetched_before=this_minute() + timedelta(minutes=1))  # only the snapshot is left
    over_snapshot = materialize(live - timedelta(minutes=1), live)

    assert kept_live(over_snapshot, "prices") == kept_live(over_snapshot, "top_assets") == 1
    assert store.snapshot_at_or_before(live, timedelta(minutes=1)) == captured
    assert store.snapshot_rows(live, 20) == served and modes(store, live) == set()

    forced = materialize(live - timedelta(minutes=1), live, replace_live_minutes=True)

    assert kept_live(forced, "prices") is None
    assert modes(store, live) == {"historical"}
    reconstructed = store.snapshot_at_or_before(live, timedelta(minutes=1))
    assert not reconstructed.live and reconstructed.fetched_at > captured.fetched_at


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_minute_captured_live_in_part_is_filled_by_a_range(emulator, database_url, dagster_instance):
    """Live prices stored but the live ranking failed (CryptoCompare down for the live window):
    nothing live is served for that minute, so a range over it reconstructs it instead of keeping
    a half capture that can never become a snapshot."""
    live = this_minute() - timedelta(minutes=1)
    store = Warehouse(database_url)

    def materialize(first: datetime, last: datetime, **overrides) -> dg.ExecuteInProcessResult:
        tags = {RANGE_START: first.strftime(MINUTE_FORMAT), RANGE_END: last.strftime(MINUTE_FORMAT)}
        chosen = resources(emulator.url, database_url, depth=20, ranking_depth=30, **overrides)
        return dg.materialize(ASSETS, resources=chosen, instance=dagster_instance, tags=tags, raise_on_error=False)

    materialize(live - timedelta(minutes=1), live - timedelta(minutes=1))  # a ranking to price the next minute by
    half = materialize(live, live, cc_key="")
    assert not half.success and modes(store, live) == {"latest"}  # prices only
    assert store.snapshot_rows(live, 20) == []

    filled = materialize(live - timedelta(minutes=1), live)

    assert filled.success
    assert modes(store, live) == {"historical"} and len(store.snapshot_rows(live, 20)) == 20
    reconstructed = store.snapshot_at_or_before(live, timedelta(minutes=1))
    assert reconstructed.minute == live and not reconstructed.live


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_live_capture_the_checks_refused_is_fetched_again_not_kept(emulator, database_url, dagster_instance):
    """A truncated quotes answer (half the ranked ids priced) is rightly refused by `row_count`.
    Kept as a live capture, it would fail the same check in every later run: it is marked refused,
    and a range over it (a healer's request, `scripts.backfill_range`) fetches it from the
    historical endpoints instead."""
    live = this_minute() - timedelta(minutes=1)
    store = Warehouse(database_url)

    def materialize(first: datetime, last: datetime) -> dg.ExecuteInProcessResult:
        tags = {RANGE_START: first.strftime(MINUTE_FORMAT), RANGE_END: last.strftime(MINUTE_FORMAT)}
        chosen = resources(emulator.url, database_url, depth=20, ranking_depth=30)
        return dg.materialize(ASSETS, resources=chosen, instance=dagster_instance, tags=tags, raise_on_error=False)

    materialize(live - timedelta(minutes=1), live - timedelta(minutes=1))  # a ranking to choose candidates from
    emulator.set_faults({"cmc_quotes_latest": {"kind": "truncated"}})
    refused = materialize(live, live)
    emulator.set_faults({})

    assert not refused.success and modes(store, live) == {"latest"} and store.snapshot_rows(live, 20) == []
    key = live.strftime(MINUTE_FORMAT)
    assert f"scripts.backfill_range {key}...{key}" in refused.failure_data_for_node("top_assets").error.message
    with store.engine.connect() as conn:
        marks = conn.execute(select(fetches.c.dataset, fetches.c.refused).where(fetches.c.minute == live)).all()
    assert sorted(marks) == [("prices", "row_count"), ("rankings", "row_count")]
    assert store.captured_live(live, live + timedelta(minutes=1)) == []

    healed = materialize(live - timedelta(minutes=1), live)

    assert healed.success and modes(store, live) == {"historical"}
    assert len(store.snapshot_rows(live, 20)) == 20 and not store.snapshot_at_or_before(live, timedelta(minutes=1)).live
