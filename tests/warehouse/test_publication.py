"""A minute is published only when it passes the blocking checks, whoever writes it and how often."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from tests.api.conftest import market_rows, seed_snapshot, store_upstream
from warehouse.ingest import Fetch
from warehouse.merge import blocked_error
from warehouse.quality import MinuteQuality, required_rows
from warehouse.requests import RequestPolicy
from warehouse.schema import fetches, prices, rankings
from warehouse.store import Warehouse

GOOD = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MINUTE = GOOD + timedelta(minutes=1)
END = MINUTE + timedelta(minutes=1)
TOLERANCE = timedelta(minutes=3)
BACKENDS = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


def served_rows(store: Warehouse, minute: datetime) -> list[tuple]:
    return [
        (minute, r["rank"], r["cmc_id"], r["price_usd"], r["volume_24h_usd"])
        for r in store.snapshot_rows(minute, 10**4)
    ]


def launched_request(store: Warehouse, minute: datetime) -> None:
    store.requests.ask(minute, RequestPolicy())
    store.requests.submit(minute, minute, "key-1")
    store.requests.launch("key-1", "run-1")


@BACKENDS
def test_empty_prices_block_the_minute_and_the_nearest_good_one_is_served(database_url):
    store = Warehouse(database_url)
    seed_snapshot(store, GOOD)
    launched_request(store, MINUTE)
    ranking_rows, _ = market_rows(MINUTE)
    store_upstream(store, MINUTE, ranking_rows, [])

    merge = store.merge_top_assets(MINUTE, END, 200, run_id="run-1", run_key="key-1")
    assert merge.stored == [] and merge.blocked == {MINUTE: ["row_count"]}
    assert merge.quality[MINUTE].rows == 0 and merge.quality[MINUTE].ranked == 250
    assert served_rows(store, MINUTE) == []
    assert store.snapshot_at_or_before(MINUTE, TOLERANCE).minute == GOOD
    request = store.requests.get(MINUTE)
    assert (request.status, request.error) == ("failed", blocked_error(MINUTE, ["row_count"]))
    assert "row_count" in request.error and "scripts.backfill_range 2026" in request.error


@BACKENDS
def test_one_ranked_row_is_published_only_when_priced(database_url):
    store = Warehouse(database_url)
    ranking_rows, price_rows = market_rows(MINUTE)
    priced = next(r for r in ranking_rows if r["cmc_id"] is not None)
    one = [{**priced, "rank": 1}]
    store_upstream(store, MINUTE, one, [p for p in price_rows if p["cmc_id"] == priced["cmc_id"]])
    merge = store.merge_top_assets(MINUTE, END, 200)
    assert [s.row_count for s in merge.stored] == [1] and merge.blocked == {}

    store_upstream(store, MINUTE, one, [p for p in price_rows if p["cmc_id"] != priced["cmc_id"]])
    merge = store.merge_top_assets(MINUTE, END, 200)
    assert merge.stored == [] and merge.blocked == {MINUTE: ["row_count"]}
    # The blocked re-run left the published version alone.
    assert store.snapshot_at_or_before(MINUTE, TOLERANCE).row_count == 1 and len(served_rows(store, MINUTE)) == 1


@BACKENDS
def test_a_missing_source_publishes_nothing(database_url):
    store = Warehouse(database_url)
    launched_request(store, MINUTE)
    ranking_rows, _ = market_rows(MINUTE)
    store_upstream(store, MINUTE, ranking_rows, None)  # the price fetch failed: no prices, no fetch row
    merge = store.merge_top_assets(MINUTE, END, 200, run_id="run-1", run_key="key-1")
    assert merge.stored == [] and served_rows(store, MINUTE) == []
    assert store.snapshot_at_or_before(MINUTE, TOLERANCE) is None
    assert store.requests.get(MINUTE).status == "failed"


@BACKENDS
def test_a_non_positive_price_blocks_the_minute(database_url):
    store = Warehouse(database_url)
    ranking_rows, price_rows = market_rows(MINUTE)
    price_rows[0]["price_usd"] = 0.0
    store_upstream(store, MINUTE, ranking_rows, price_rows)
    merge = store.merge_top_assets(MINUTE, END, 200)
    assert merge.blocked == {MINUTE: ["prices_positive"]} and served_rows(store, MINUTE) == []


@BACKENDS
def test_a_range_publishes_its_good_minutes_and_holds_back_the_others(database_url):
    store = Warehouse(database_url)
    for minute in (GOOD, MINUTE):
        seed_snapshot(store, minute)
    before = served_rows(store, MINUTE)
    ranking_rows, _ = market_rows(MINUTE)
    store_upstream(store, MINUTE, ranking_rows, [])
    merge = store.merge_top_assets(GOOD, END, 200)
    assert [s.minute for s in merge.stored] == [GOOD] and list(merge.blocked) == [MINUTE]
    assert served_rows(store, MINUTE) == before and len(served_rows(store, GOOD)) == 200


def test_the_checks_judge_gaps_duplicates_and_prices():
    def quality(**changes) -> MinuteQuality:
        fields = dict(minute=MINUTE, rows=200, min_rank=1, max_rank=200, distinct_cmc_ids=200, min_price=0.5,
                      ranked=250, matched=230, top_ranked=100, top_matched=95)  # fmt: skip
        return MinuteQuality(**{**fields, **changes})

    assert quality().failed_checks(200, 0.9) == []
    assert quality(max_rank=201).failed_checks(200, 0.9) == ["ranks_contiguous"]
    assert quality(distinct_cmc_ids=199).failed_checks(200, 0.9) == ["unique_cmc_ids"]
    assert quality(min_price=-1.0).failed_checks(200, 0.9) == ["prices_positive"]
    assert quality(rows=179, max_rank=179, distinct_cmc_ids=179).failed_checks(200, 0.9) == ["row_count"]
    assert required_rows(200, 0.9, ranked=250) == 180 and required_rows(200, 0.9, ranked=100) == 90
    assert required_rows(200, 0.9, ranked=1) == 1 and required_rows(200, 0.9, ranked=0) == 1


@BACKENDS
def test_concurrent_writers_of_the_same_minutes_leave_one_consistent_snapshot(database_url):
    """Two writers (say the schedule and a range backfill) write and merge the same minutes at once."""
    minutes = [MINUTE + timedelta(minutes=i) for i in range(3)]
    start, end = minutes[0], minutes[-1] + timedelta(minutes=1)
    versions = []
    for scale in (1.0, 2.0):
        rows = [market_rows(m) for m in minutes]
        versions.append(([r for ranking, _ in rows for r in ranking],
                         [{**p, "price_usd": p["price_usd"] * scale} for _, price in rows for p in price]))  # fmt: skip

    def fetched(dataset: str) -> list[Fetch]:
        return [Fetch(m, dataset, "test", True, "historical", 250, 0, datetime.now(UTC)) for m in minutes]

    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def write(ranking_rows: list[dict], price_rows: list[dict]) -> None:
        store = Warehouse(database_url)  # one engine per writer, as two processes would have
        try:
            for _ in range(3):
                barrier.wait()
                store.replace_rankings(start, end, ranking_rows, fetched("rankings"))
                store.replace_prices(start, end, price_rows, fetched("prices"))
                store.merge_top_assets(start, end, 200)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
            barrier.abort()
        finally:
            store.engine.dispose()

    threads = [threading.Thread(target=write, args=version) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    store = Warehouse(database_url)
    with store.engine.connect() as conn:
        stored_prices = {(r.minute, r.cmc_id): r.price_usd for r in conn.execute(select(prices))}
        ranked = conn.execute(select(rankings.c.minute, rankings.c.rank)).all()
    assert len(ranked) == len(set(ranked)) == 3 * 250
    scales = set()
    for minute in minutes:
        served = served_rows(store, minute)
        assert [row[1] for row in served] == list(range(1, 201))
        # The served prices are exactly the stored prices: no mix of two writers' rows.
        assert all(row[3] == stored_prices[(minute, row[2])] for row in served)
        reference = {p["cmc_id"]: p["price_usd"] for p in versions[0][1] if p["minute"] == minute}
        scales |= {round(row[3] / reference[row[2]], 6) for row in served}
    assert len(scales) == 1  # one writer's version throughout


@BACKENDS
def test_a_merge_after_the_raw_rows_were_pruned_keeps_the_served_minute(database_url):
    """Raw rows go after RAW_RETENTION_DAYS, snapshots stay: re-running the merge of such a
    minute (top_assets alone, from the UI or a backfill) has nothing to publish and must not
    delete what is served."""
    store = Warehouse(database_url)
    seed_snapshot(store, MINUTE)
    before = served_rows(store, MINUTE)
    store.prune_raw(datetime.now(UTC) + timedelta(minutes=1))  # every raw row is past the retention
    merge = store.merge_top_assets(MINUTE, END, 200)
    assert merge.stored == [] and merge.quality == {}
    assert served_rows(store, MINUTE) == before and len(before) == 200


@BACKENDS
def test_raw_rows_are_pruned_an_hour_of_minutes_per_transaction(database_url):
    """The daily prune deletes a day of raw rows (~1.8M); in one transaction it would hold SQLite's
    write lock throughout, and the live minute's writes would wait (30 s at most) and then fail."""
    store = Warehouse(database_url)
    now = datetime.now(UTC)
    # 12:50, 13:10, 13:55, 14:05: three clock hours (an hour from the first old minute would be two)
    old = [GOOD + timedelta(minutes=m) for m in (50, 70, 115, 125)]
    for minute in old:
        store_upstream(store, minute, *market_rows(minute, 3), fetched=now - timedelta(days=8))
    recent = GOOD + timedelta(hours=5)
    store_upstream(store, recent, *market_rows(recent, 3))  # fetched now
    commits = []
    event.listen(store.engine, "commit", commits.append)

    deleted = store.prune_raw(now - timedelta(days=7))

    assert deleted == {"prices": 12, "rankings": 12, "fetches": 8}
    assert len(commits) == 3  # one per clock hour, each committed on its own: a live write waits for one at most
    with store.engine.connect() as conn:
        for table in (prices, rankings, fetches):
            left = conn.execute(select(table.c.minute, func.count()).group_by(table.c.minute)).all()
            assert left == [(recent, 2 if table is fetches else 3)]  # fetches: one row per dataset


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_long_window_is_written_without_exhausting_the_postgres_lock_table(database_url):
    """A month in one transaction (a long chunk): its locks must fit the server's shared lock table."""
    store = Warehouse(database_url)
    start = MINUTE - timedelta(days=30)
    store.replace_rankings(start, MINUTE, [], [])
    store.replace_prices(start, MINUTE, [], [])
    assert store.merge_top_assets(start, MINUTE, 200).stored == []
