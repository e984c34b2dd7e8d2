"""A range is processed in chunks, each committed on its own: a failure keeps the chunks before
it, a retry of the step continues after them, and a re-run completes the range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.execution.backfill import PartitionBackfill
from sqlalchemy import select

from crypto_pipeline import fetching, runs
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.reconstruction import CC_MINUTE_HISTORY
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import UpstreamBadRequest, UpstreamTransientError
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.runs import CANDIDATES_BEFORE_TAG, NICENESS_TAG
from tests.api.conftest import market_rows, store_upstream
from tests.assets.test_pipeline import ASSETS, resources
from warehouse.schema import fetches, prices, rankings
from warehouse.store import Warehouse

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
CHUNK = 2
DEPTH = 20
FAILURES: dict[str, int] = {}  # failures still to inject, per test; resources are rebuilt per run


class FailingFromMinute(CoinMarketCapResource):
    """The real client, except that historical quotes reaching `fail_from` fail `times` times."""

    fail_from: str
    transient: bool = False

    def quotes_historical(self, ids, start, end):
        if end >= datetime.fromisoformat(self.fail_from) and FAILURES.get(self.fail_from, 0) > 0:
            FAILURES[self.fail_from] -= 1
            error = UpstreamTransientError if self.transient else UpstreamBadRequest
            raise error("CoinMarketCap", "injected: the upstream failed in the middle of the range")
        return super().quotes_historical(ids, start, end)


def price_minutes(store: Warehouse) -> list[datetime]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(prices.c.minute).group_by(prices.c.minute).order_by(prices.c.minute)).scalars())


def range_resources(emulator_url: str, database_url: str, cmc=None, cryptocompare=None) -> dict:
    chosen = resources(emulator_url, database_url)
    # A short list keeps three chunks of upstream calls quick: 30 ranked, one CMC call per chunk.
    chosen["toplist"] = ToplistConfig(depth=DEPTH, ranking_depth=30, price_depth=100, chunk_minutes=CHUNK)
    if cmc is not None:
        chosen["cmc"] = cmc
    if cryptocompare is not None:
        chosen["cryptocompare"] = cryptocompare
    return chosen


def range_tags(first: datetime, minutes: int) -> dict[str, str]:
    last = first + timedelta(minutes=minutes - 1)
    return {RANGE_START: first.strftime(MINUTE_FORMAT), RANGE_END: last.strftime(MINUTE_FORMAT)}


def materialize_range(
    emulator, database_url, instance, first: datetime, minutes: int, cmc=None, cryptocompare=None, tags=None
):
    return dg.materialize(
        ASSETS,
        resources=range_resources(emulator.url, database_url, cmc, cryptocompare),
        instance=instance,
        tags={**range_tags(first, minutes), **(tags or {})},
        raise_on_error=False,
    )


def past_range() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)


def failing_cmc(emulator, fail_from: datetime, times: int, transient: bool) -> FailingFromMinute:
    FAILURES[fail_from.isoformat()] = times
    return FailingFromMinute(api_keys={"CMC_API_KEY": "test-key"}, base_url=emulator.url, timeout_seconds=2.0,
                             backoff_seconds=0.01, max_attempts=2, fail_from=fail_from.isoformat(),
                             transient=transient)  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_failure_keeps_the_chunks_before_it_and_a_rerun_completes(emulator, database_url, dagster_instance):
    first = past_range()
    store = Warehouse(database_url)
    broken = failing_cmc(emulator, first + timedelta(minutes=CHUNK), times=1, transient=False)

    failed = materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK, cmc=broken)

    assert not failed.success
    assert price_minutes(store) == [first + timedelta(minutes=m) for m in range(CHUNK)]  # the first chunk, committed
    stored_keys = {e.partition for e in failed.get_asset_materialization_events() if e.asset_key.path == ["prices"]}
    assert stored_keys == {(first + timedelta(minutes=m)).strftime(MINUTE_FORMAT) for m in range(CHUNK)}
    assert store.snapshot_at_or_before(first + timedelta(minutes=3 * CHUNK), timedelta(minutes=10)) is None

    rerun = materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK)

    assert rerun.success
    minutes = [first + timedelta(minutes=m) for m in range(3 * CHUNK)]
    assert price_minutes(store) == minutes
    for minute in minutes:
        assert len(store.snapshot_rows(minute, DEPTH)) == DEPTH


def range_job() -> dg.JobDefinition:
    """The range's job for `execute_job`, which re-executes only a reconstructable job. Dagster
    builds it once per process, so what differs between tests comes from the environment when
    each run starts (EnvVar); CMC fails where RANGE_FAIL_FROM says, as often as FAILURES says."""
    emulator_url, database_url = dg.EnvVar("RANGE_EMULATOR_URL"), dg.EnvVar("RANGE_DATABASE_URL")
    cmc = FailingFromMinute(api_keys={"CMC_API_KEY": "test-key"}, base_url=emulator_url, timeout_seconds=2.0,
                            backoff_seconds=0.01, max_attempts=2, fail_from=dg.EnvVar("RANGE_FAIL_FROM"))  # fmt: skip
    job = dg.define_asset_job("range", executor_def=dg.in_process_executor)
    return dg.Definitions(
        assets=ASSETS, resources=range_resources(emulator_url, database_url, cmc), jobs=[job]
    ).resolve_job_def("range")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_reexecution_from_failure_continues_after_the_stored_chunks(
    emulator, database_url, dagster_instance, monkeypatch
):
    """Dagster's "Re-execute from failure" (same run family) fetches only what the failed run did
    not store; a new run would fetch the whole range again."""
    first = past_range()
    fail_from = (first + timedelta(minutes=2 * CHUNK)).isoformat()
    for variable, value in {"RANGE_EMULATOR_URL": emulator.url, "RANGE_DATABASE_URL": database_url,
                            "RANGE_FAIL_FROM": fail_from}.items():  # fmt: skip
        monkeypatch.setenv(variable, value)
    FAILURES[fail_from] = 1
    job = dg.reconstructable(range_job)

    with dg.execute_job(job, dagster_instance, tags=range_tags(first, 3 * CHUNK), raise_on_error=False) as failed:
        assert not failed.success
    assert price_minutes(Warehouse(database_url)) == [first + timedelta(minutes=m) for m in range(2 * CHUNK)]
    calls_before = emulator.requests().get("cmc_quotes_historical", 0)

    options = dg.ReexecutionOptions.from_failure(failed.run_id, dagster_instance)
    with dg.execute_job(job, dagster_instance, tags=failed.dagster_run.tags, reexecution_options=options) as rerun:
        assert rerun.success
        assert rerun.dagster_run.root_run_id == failed.run_id

    assert emulator.requests().get("cmc_quotes_historical", 0) - calls_before == 1  # the third chunk only
    store = Warehouse(database_url)
    assert price_minutes(store) == [first + timedelta(minutes=m) for m in range(3 * CHUNK)]
    assert all(len(store.snapshot_rows(first + timedelta(minutes=m), DEPTH)) == DEPTH for m in range(3 * CHUNK))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_retried_step_continues_after_the_chunks_it_stored(emulator, database_url, dagster_instance):
    first = past_range()
    flaky = failing_cmc(emulator, first + timedelta(minutes=2 * CHUNK), times=1, transient=True)
    calls_before = emulator.requests().get("cmc_quotes_historical", 0)

    result = materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK, cmc=flaky)

    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    # One quotes/historical call per chunk: the retry fetched only the last chunk again, not
    # the two it had stored.
    assert emulator.requests().get("cmc_quotes_historical", 0) - calls_before == 3
    # The failed attempt marked its two stored chunks materialized; the retry, the whole range.
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["prices"]]
    assert len(events) == 2 * CHUNK + 3 * CHUNK
    metadata = events[-1].materialization.metadata
    assert metadata["resumed_minutes"].value == 2 * CHUNK
    store = Warehouse(database_url)
    assert all(len(store.snapshot_rows(first + timedelta(minutes=m), DEPTH)) == DEPTH for m in range(3 * CHUNK))


class WithoutHistoryAtFirst(CryptoCompareResource):
    """The real client, except that `symbol` has no history in the range's first chunk."""

    symbol: str
    first_chunk_end: int

    def history(self, symbol, to_ts, limit, *, hourly=False):
        if symbol == self.symbol and to_ts < self.first_chunk_end:
            raise UpstreamBadRequest("CryptoCompare", f"injected: no history for {symbol} yet")
        return super().history(symbol, to_ts, limit, hourly=hourly)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_chunk_ranks_the_candidates_of_the_range(emulator, database_url, dagster_instance):
    """The candidates are chosen once per range: an asset without history in one chunk is still
    ranked in the next, not dropped because an earlier chunk's stored ranking lacked it."""
    first = past_range()
    real = resources(emulator.url, database_url)["cryptocompare"]
    symbol = real.top_by_volume(30).records[5].symbol
    late = WithoutHistoryAtFirst(**real.model_dump(), symbol=symbol,
                                 first_chunk_end=int((first + timedelta(minutes=CHUNK)).timestamp()))  # fmt: skip

    assert materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK, cryptocompare=late).success

    store = Warehouse(database_url)
    with store.engine.connect() as conn:
        ranked = set(conn.execute(select(rankings.c.minute).where(rankings.c.symbol == symbol)).scalars())
    assert ranked == {first + timedelta(minutes=m) for m in range(CHUNK, 3 * CHUNK)}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_range_across_the_minute_bar_limit_uses_one_bar_size(emulator, database_url, dagster_instance):
    """CryptoCompare keeps minute bars 7 days: a range starting before the limit ranks every chunk
    from hourly bars, also the chunks after it, so one range never mixes two volume measures."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - (CC_MINUTE_HISTORY - timedelta(days=1)) - timedelta(minutes=CHUNK)  # the middle chunk on the edge
    before = emulator.requests()

    result = materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK)

    after = emulator.requests()
    assert result.success
    assert after.get("cc_histohour", 0) > before.get("cc_histohour", 0)
    assert after.get("cc_histominute", 0) == before.get("cc_histominute", 0)


@pytest.mark.parametrize(("block", "blocks"), [(fetching.HOURLY_BAR_BLOCK, 1), (timedelta(minutes=2 * CHUNK), 2)])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hourly_bars_are_fetched_once_per_block_and_rank_as_one_fetch(
    emulator, database_url, dagster_instance, monkeypatch, block, blocks
):
    """A range older than a week asks CryptoCompare once per asset per block of chunks, not per
    chunk, and each chunk ranks exactly as bars fetched once for the whole range would."""
    monkeypatch.setattr(fetching, "HOURLY_BAR_BLOCK", block)
    # Across a clock hour: the first chunk in one hourly bar, the next two in the following one,
    # so a chunk given only its block's first hours ranks differently.
    first = (past_range() - timedelta(days=10)).replace(minute=0) - timedelta(minutes=CHUNK)
    calls_before = emulator.requests().get("cc_histohour", 0)

    assert materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK).success

    store = Warehouse(database_url)
    with store.engine.connect() as conn:
        stored = conn.execute(select(rankings).order_by(rankings.c.minute, rankings.c.rank)).mappings().all()
    ranked = list({row["cc_id"]: dict(row) for row in stored}.values())  # the run's candidates, all ranked
    assert len(ranked) == 30
    assert emulator.requests().get("cc_histohour", 0) - calls_before == blocks * len(ranked)
    with store.engine.connect() as conn:
        labels = conn.execute(select(fetches.c.emulated).where(fetches.c.dataset == "rankings")).scalars().all()
    assert labels == [True] * 3 * CHUNK  # what the emulator said stays labelled so, also from held bars
    # Independently of the pipeline's bar code: 48 hourly bars in one call, and per minute the
    # volumes of the 24 bars ending with the one that holds it.
    cryptocompare = resources(emulator.url, database_url)["cryptocompare"]
    end = int((first + timedelta(minutes=3 * CHUNK)).timestamp())
    bars = {c["cc_id"]: cryptocompare.history(c["symbol"], end, 48, hourly=True).bars for c in ranked}
    for minute in {row["minute"] for row in stored}:
        hour = int(minute.timestamp()) // 3600 * 3600
        volume = {c: sum(b.volumeto for b in got if hour - 24 * 3600 < b.time <= hour) for c, got in bars.items()}
        expected = sorted(volume, key=lambda cc_id: (-volume[cc_id], cc_id))
        here = [row for row in stored if row["minute"] == minute]
        assert [row["cc_id"] for row in here] == expected
        assert [row["volume_24h_usd"] for row in here] == pytest.approx([volume[c] for c in expected], abs=0.01)


REFUSALS: dict[str, int] = {}  # refusals still to inject, per symbol


class RefusingOnce(CryptoCompareResource):
    """The real client, except that the first history call for a symbol in REFUSALS is refused."""

    def history(self, symbol, to_ts, limit, *, hourly=False):
        if REFUSALS.get(symbol, 0) > 0:
            REFUSALS[symbol] -= 1
            raise UpstreamBadRequest("CryptoCompare", f"injected: {symbol} refused once")
        return super().history(symbol, to_ts, limit, hourly=hourly)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_hourly_series_is_asked_again_by_the_next_chunk(emulator, database_url, dagster_instance):
    """A refusal is not held for the block: the asset misses the chunk that was refused, not a week."""
    first = past_range() - timedelta(days=10)
    real = resources(emulator.url, database_url)["cryptocompare"]
    symbol = real.top_by_volume(30).records[5].symbol
    REFUSALS[symbol] = 1

    assert materialize_range(emulator, database_url, dagster_instance, first, 3 * CHUNK,
                             cryptocompare=RefusingOnce(**real.model_dump())).success  # fmt: skip

    store = Warehouse(database_url)
    with store.engine.connect() as conn:
        ranked = set(conn.execute(select(rankings.c.minute).where(rankings.c.symbol == symbol)).scalars())
    assert ranked == {first + timedelta(minutes=m) for m in range(CHUNK, 3 * CHUNK)}


def recorded_backfill(instance, chosen: dict, launched: datetime, first: datetime | None = None) -> PartitionBackfill:
    """A backfill of the range's first chunk as the UI records it, launched at `launched`."""
    first = first or past_range()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=f"b{launched.timestamp():.0f}",
        asset_graph=dg.Definitions(assets=ASSETS, resources=chosen).resolve_asset_graph(),
        partition_names=[(first + timedelta(minutes=m)).strftime(MINUTE_FORMAT) for m in range(CHUNK)],
        asset_selection=[dg.AssetKey(n) for n in ("prices", "rankings", "top_assets")],
        backfill_timestamp=launched.timestamp(), tags={}, dynamic_partitions_store=instance,
        all_partitions=False, title=None, description=None, run_config=None,
    )  # fmt: skip
    instance.add_backfill(backfill)
    return backfill


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_the_runs_of_a_backfill_choose_candidates_stored_before_it_began(emulator, database_url, dagster_instance):
    """A backfill's day runs work side by side: each chooses its candidates from the rankings
    stored before the backfill was launched, not from what a run beside it stored meanwhile."""
    first = past_range()
    store = Warehouse(database_url)
    launched = datetime.now(UTC) - timedelta(minutes=30)
    earlier, _ = market_rows(first - timedelta(minutes=10), 30)
    store_upstream(store, first - timedelta(minutes=10), earlier, None, fetched=launched - timedelta(hours=1))
    meanwhile = [
        {**row, "rank": rank} for rank, row in enumerate(market_rows(first - timedelta(minutes=1), 60)[0][40:43], 1)
    ]
    store_upstream(store, first - timedelta(minutes=1), meanwhile, None)  # nearer, stored after the launch
    after = first + timedelta(minutes=CHUNK)
    store_upstream(store, after, [{**row, "minute": after} for row in meanwhile], None)  # after the range, the same
    chosen = range_resources(emulator.url, database_url)
    backfill = recorded_backfill(dagster_instance, chosen, launched, first)
    result = dg.materialize(
        ASSETS, resources=chosen, instance=dagster_instance,
        tags={**range_tags(first, CHUNK), "dagster/backfill": backfill.backfill_id, NICENESS_TAG: "0"},
    )  # fmt: skip

    assert result.success
    with store.engine.connect() as conn:
        ranked = set(conn.execute(select(rankings.c.cc_id).where(rankings.c.minute == first)).scalars())
    assert ranked == {row["cc_id"] for row in earlier}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_re_execution_chooses_from_when_its_first_run_or_backfill_began(database_url, dagster_instance):
    """Dagster copies a backfill's tag to a re-execution only while the backfill runs: a day
    re-executed later still chooses from the rankings stored before the backfill was launched,
    and the runs of scripts.backfill_range from before the script started."""
    launched = datetime.now(UTC) - timedelta(hours=1)  # after the minutes it targets, as any backfill
    backfill = recorded_backfill(dagster_instance, range_resources("http://127.0.0.1:9", database_url), launched)
    script_began = datetime.now(UTC) - timedelta(minutes=30)
    cases = (
        ({"dagster/backfill": backfill.backfill_id}, launched),
        # "Re-execute backfill": a new backfill, the first one's id in root_backfill_id
        ({"dagster/backfill": "therexecution", "dagster/root_backfill_id": backfill.backfill_id}, launched),
        ({CANDIDATES_BEFORE_TAG: script_began.isoformat()}, script_began),
    )
    for root_tags, expected in cases:
        root = dg.DagsterRun(
            job_name="__ASSET_JOB", run_id=f"root-{len(root_tags)}-{expected:%H%M%S%f}", tags=root_tags
        )
        dagster_instance.add_run(root)
        child = dg.DagsterRun(job_name="__ASSET_JOB", run_id=f"child-{root.run_id}", root_run_id=root.run_id,
                              parent_run_id=root.run_id)  # fmt: skip
        dagster_instance.add_run(child)

        created, began = runs.run_family(SimpleNamespace(run=child, instance=dagster_instance))

        assert began == expected
        assert created == dagster_instance.get_run_record_by_id(root.run_id).create_timestamp.replace(tzinfo=UTC)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_malformed_candidates_tag_fails_the_run_naming_it(emulator, database_url, dagster_instance):
    result = materialize_range(
        emulator, database_url, dagster_instance, past_range(), CHUNK, tags={CANDIDATES_BEFORE_TAG: "yesterday"}
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert CANDIDATES_BEFORE_TAG in failure.step_failure_data.error.message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
