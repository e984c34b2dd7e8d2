"""`prices` (CoinMarketCap) and `rankings` (CryptoCompare): one step, two assets, fetched concurrently.

One step keeps a minute to one lean run; the two fetches run on two threads. Each upstream is
its own failure domain: if one fails, the other is still written and materialized, then the
step fails so Dagster retries it (only what may heal in seconds) and shows the failure.

A partition younger than `live_window_minutes` is fetched from the latest endpoints: the
ranking first, then the live price source asked for exactly the ranked CMC ids (by id, or
looked up in a volume-sorted list). An older one, or a range, comes from the historical
endpoints, chunk by chunk (BACKFILL_CHUNK_MINUTES), each committed on its own.
"""

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from crypto_pipeline.history import (
    bar_requests,
    chunk_bounds,
    latest_at_each,
    minutes_in,
    rolling_24h_volume,
    uses_minute_bars,
)
from crypto_pipeline.partitions import MINUTE_FORMAT, RANGE_RUN_POLICY, minute_partitions
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import PERMANENT_ERRORS, UpstreamBadRequest, UpstreamError, worth_a_quick_retry
from crypto_pipeline.resources.parsing import HistoryBar
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from crypto_pipeline.runs import run_family, yield_cpu
from warehouse.store import Fetch

PRICES = dg.AssetKey("prices")
RANKINGS = dg.AssetKey("rankings")


class FetchConfig(dg.Config):
    """Run configuration of `fetch_prices_and_rankings` (the launchpad's config editor)."""

    replace_live_minutes: bool = Field(
        default=False,
        description="Replace minutes captured live with reconstructions from the historical endpoints. "
        "Off: a range keeps what was captured live (raw rows and snapshot) and says so in `kept_live_minutes`.",
    )


# How much of a range one fetch of hourly bars covers (BarBlocks): ~190 bars per asset held.
HOURLY_BAR_BLOCK = timedelta(days=7)

UPSTREAM_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class Window:
    """The minutes a run covers, and whether they are live."""

    def __init__(
        self, start: datetime, end: datetime, now: datetime, live_window: timedelta, minute_bars: bool | None = None
    ) -> None:
        self.start, self.end, self.now = start, end, now
        self.minutes = minutes_in(start, end)
        self.live = len(self.minutes) == 1 and start <= now < start + live_window
        # CryptoCompare's bar size, chosen once per range like the candidates: chunks on both sides
        # of the 7-day minute-bar limit would rank with minute bars on one side, hourly on the other.
        self.minute_bars = uses_minute_bars(start, now) if minute_bars is None else minute_bars

    @property
    def mode(self) -> str:
        return "latest" if self.live else "historical"

    def chunks(self, minutes: int) -> list["Window"]:
        """Consecutive windows of at most `minutes`, covering this one (a live minute is one chunk)."""
        if self.live:
            return [self]
        return [
            Window(start, end, self.now, timedelta(0), self.minute_bars)
            for start, end in chunk_bounds(self.start, self.end, minutes)
        ]


@dataclass
class Batch:
    """What one upstream said for a window, ready to write."""

    rows: list[dict]
    provider: str
    emulated: bool
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    credits: int | None = None
    rejected_at: dict[datetime, int] | None = None  # per minute, when it differs between minutes


@dataclass
class CryptoCompareSeries:
    """Per candidate, what its CryptoCompare bars say about each minute of the window: the 24h
    volume ending with it and the close at or before it. The bars themselves (the window and
    the 24h before it) are not kept here (BarBlocks says which are held, and for how long)."""

    summaries: list[tuple[dict, dict[datetime, float], dict[datetime, float]]]  # candidate, volumes, closes
    emulated: bool
    rejected: int
    reasons: list[str]


def candidates(store, window: Window, cryptocompare: CryptoCompareResource, depth: int, began: datetime) -> list[dict]:
    """Assets to rank in the past: those ranked in the nearest ranking stored before `began`
    (when the run family, or the backfill it belongs to, began), else today's list. Rankings
    stored since do not count: a backfill's day runs, two at a time, and a retry choose as its
    first run did, not from what the runs beside them happen to have stored.

    Survivorship caveat (README): an asset that was top-ranked then but never stored near
    the window cannot appear.
    """
    nearest = store.ranked_near(window.start, depth, fetched_before=began)
    if nearest:
        return nearest
    return [r.model_dump() for r in cryptocompare.top_by_volume(depth).records]


def cmc_ids_of(ranked: list[dict]) -> list[int]:
    """The distinct CMC ids of ranked assets (those CryptoCompare knows one for)."""
    return sorted({r["cmc_id"] for r in ranked if r["cmc_id"] is not None})


def live_prices(cmc: CoinMarketCapResource, window: Window, ranked: list[dict]) -> Batch:
    """Prices of exactly the ranked ids; one the live source does not answer is counted, not fatal."""
    fetch = cmc.quotes_latest(cmc_ids_of(ranked))
    rows = [{**r.model_dump(), "minute": window.start} for r in fetch.records]
    return Batch(rows, fetch.provider, fetch.emulated, fetch.rejected, fetch.reasons, fetch.credits)


def ranked_to_price(ranking: Future, store, window: Window, depth: int) -> list[dict]:
    """This minute's ranking; if CryptoCompare failed, the nearest stored one, so prices are still recorded."""
    try:
        return ranking.result().rows
    except UpstreamError:
        nearest = store.ranked_near(window.start, depth)
        if not nearest:
            raise
        return nearest


def past_prices_from_cmc(cmc: CoinMarketCapResource, window: Window, ranked: list[dict], max_age: timedelta) -> Batch:
    """One quotes/historical series per asset for the whole window (5-minute quotes).

    A minute takes the newest quote at most `max_age` old: an asset with none (a gap in CMC's
    data) is unpriced at that minute, and counted per minute as rejected."""
    ids = cmc_ids_of(ranked)
    series, fetch = cmc.quotes_historical(ids, window.start - max_age, window.end - timedelta(minutes=1))
    rows = []
    unpriced = dict.fromkeys(window.minutes, 0)
    for cmc_id in ids:
        found = latest_at_each(series.get(cmc_id, []), window.minutes, max_age)
        rows.extend({**quote.model_dump(), "minute": minute} for minute, quote in found.items())
        for minute in window.minutes:
            unpriced[minute] += minute not in found
    stale = sum(unpriced.values())
    reasons = [*fetch.reasons, *([f"{stale} asset-minutes without a quote at most {max_age} old"] if stale else [])]
    return Batch(rows, fetch.provider, fetch.emulated, fetch.rejected + stale, reasons, fetch.credits, unpriced)


def past_prices_from_cryptocompare(series: CryptoCompareSeries, window: Window) -> Batch:
    """Closing prices of the bars already fetched for the ranking (HISTORICAL_PRICE_SOURCE=cryptocompare)."""
    rows = []
    for candidate, _, closes in series.summaries:
        if candidate["cmc_id"] is None:
            continue
        for minute, close in closes.items():
            rows.append({"minute": minute, "cmc_id": candidate["cmc_id"], "symbol": candidate["symbol"],
                         "name": candidate["name"], "price_usd": close})  # fmt: skip
    return Batch(rows, "cryptocompare", series.emulated)


def live_rankings(cryptocompare: CryptoCompareResource, window: Window, depth: int) -> Batch:
    fetch = cryptocompare.top_by_volume(depth)
    rows = [{**r.model_dump(exclude={"price_usd"}), "minute": window.start} for r in fetch.records]
    return Batch(rows, fetch.provider, fetch.emulated, fetch.rejected, fetch.reasons)


class BarBlocks:
    """Each candidate's CryptoCompare bars for a range, fetched once per block of chunks.

    Hourly bars (ranges older than a week): a block is the whole chunks that fit in
    HOURLY_BAR_BLOCK, and its bars (~190 per asset) are held until the next block. Fetched per
    120-minute chunk, a 30-day range asked for the same bars 360 times per asset: 90,000 calls
    for 250 assets, more than CryptoCompare's free 50,000 a month; per block it is 1,250.
    Minute bars: a chunk already needs its 24 hours before (1,560 bars, one call), so a block
    is one chunk and nothing is held.
    """

    def __init__(self, whole: Window, chunk_minutes: int) -> None:
        chunk = timedelta(minutes=chunk_minutes)
        self.start, self.end, self.minute_bars = whole.start, whole.end, whole.minute_bars
        self.block = chunk if whole.minute_bars else max(1, HOURLY_BAR_BLOCK // chunk) * chunk
        self.held: dict[str, tuple[datetime, list[HistoryBar], bool]] = {}

    def bars(self, cryptocompare: CryptoCompareResource, symbol: str, window: Window) -> tuple[list[HistoryBar], bool]:
        """The bars of `symbol` covering `window` (a chunk) and the 24 hours before it, and
        whether they are emulated. A refusal (e.g. no history yet) is raised, not held: the
        next chunk asks again, so one odd reply costs a chunk of the asset, not a block."""
        start = self.start + (window.start - self.start) // self.block * self.block
        held = self.held.get(symbol)
        if held is not None and held[0] == start:
            return held[1], held[2]
        calls = bar_requests(start, min(start + self.block, self.end), self.minute_bars)
        fetched = [cryptocompare.history(symbol, to_ts, limit, hourly=not self.minute_bars) for to_ts, limit in calls]
        bars, emulated = [bar for h in fetched for bar in h.bars], any(h.emulated for h in fetched)
        if not self.minute_bars:
            self.held[symbol] = start, bars, emulated
        return bars, emulated


def cryptocompare_series(
    cryptocompare: CryptoCompareResource, window: Window, ranked: list[dict], blocks: BarBlocks
) -> CryptoCompareSeries:
    """Every candidate's bars for the window, `concurrency` series at a time, each summarized
    per minute on its thread (minute bars are dropped once summarized; hourly ones stay held by
    `blocks` for the rest of their block)."""

    def summary_of(candidate: dict):
        try:
            bars, emulated = blocks.bars(cryptocompare, candidate["symbol"], window)
        except UpstreamBadRequest as error:  # e.g. CryptoCompare has no history for this symbol
            return candidate, error
        quotes = [(datetime.fromtimestamp(bar.time, UTC), bar.close) for bar in bars if bar.close > 0]
        volumes = rolling_24h_volume(bars, window.minutes, window.minute_bars)
        return candidate, (emulated, volumes, latest_at_each(quotes, window.minutes))

    series = CryptoCompareSeries([], False, 0, [])
    with ThreadPoolExecutor(max_workers=cryptocompare.concurrency) as pool:
        for candidate, result in pool.map(summary_of, ranked):
            if isinstance(result, UpstreamError):
                series.rejected += 1
                series.reasons.append(f"{candidate['symbol']}: {result}")
                continue
            emulated, volumes, closes = result
            series.emulated |= emulated
            series.summaries.append((candidate, volumes, closes))
    return series


def past_rankings(series: CryptoCompareSeries, window: Window, depth: int) -> Batch:
    """Candidates ranked per minute by the 24h volume ending with that minute."""
    volumes: dict[datetime, list[tuple[float, dict]]] = {m: [] for m in window.minutes}
    for candidate, by_minute, _ in series.summaries:
        for minute, volume in by_minute.items():
            volumes[minute].append((volume, candidate))
    rows = []
    for minute, ranked_here in volumes.items():
        ranked_here.sort(key=lambda pair: (-pair[0], pair[1]["cc_id"]))
        for rank, (volume, c) in enumerate(ranked_here[:depth], start=1):
            rows.append({"minute": minute, "rank": rank, "cc_id": c["cc_id"], "symbol": c["symbol"],
                         "name": c["name"], "cmc_id": c["cmc_id"], "volume_24h_usd": round(volume, 2)})  # fmt: skip
    return Batch(rows, "cryptocompare", series.emulated, series.rejected, series.reasons)


@dataclass
class Stored:
    """What the chunks of a range stored for one dataset, summed into its materialization."""

    minutes: list[datetime] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    credits: int | None = None
    without_cmc_id: int = 0
    resumed: int = 0  # minutes an earlier attempt of this run had stored: not fetched again
    kept_live: int = 0  # minutes captured live, kept instead of reconstructed
    provider: str = ""
    source: str = ""

    def add(self, window: Window, written: "Stored") -> None:
        self.minutes += window.minutes
        self.rows += written.rows
        self.rejected += written.rejected
        self.reasons += written.reasons[: 20 - len(self.reasons)]
        if written.credits is not None:
            self.credits = (self.credits or 0) + written.credits
        self.without_cmc_id += written.without_cmc_id
        self.provider, self.source = written.provider, written.source

    def metadata(self, key: dg.AssetKey, mode: str) -> dict:
        metadata = {
            "rows": dg.MetadataValue.int(self.rows),
            "rejected": dg.MetadataValue.int(self.rejected),
            "rejected_examples": dg.MetadataValue.json(self.reasons),
            "provider": self.provider,
            "source": self.source,
            "mode": mode,
        }
        if self.credits is not None:
            metadata["cmc_credits"] = dg.MetadataValue.int(self.credits)
        if key == RANKINGS:
            metadata["without_cmc_id"] = dg.MetadataValue.int(self.without_cmc_id)
        if self.resumed:
            metadata["resumed_minutes"] = dg.MetadataValue.int(self.resumed)
        if self.kept_live:
            metadata["kept_live_minutes"] = dg.MetadataValue.int(self.kept_live)
        return metadata


def rejected_at(batch: Batch, minute: datetime) -> int:
    """Records rejected for one minute: its own count, or the window's (a record rejected from
    the window's fetch is missing from each of its minutes)."""
    return batch.rejected if batch.rejected_at is None else batch.rejected_at.get(minute, 0)


def record(store, key: dg.AssetKey, window: Window, batch: Batch, keep: list[datetime]) -> Stored:
    """Replace the window's rows of one dataset but the minutes in `keep` (one transaction) and say
    what was written."""
    counts = Counter(row["minute"] for row in batch.rows)
    dataset = key.path[-1]
    fetches = [
        Fetch(m, dataset, batch.provider, batch.emulated, window.mode, counts[m], rejected_at(batch, m), window.now)
        for m in window.minutes
    ]
    replace = store.replace_prices if key == PRICES else store.replace_rankings
    replace(window.start, window.end, batch.rows, fetches, keep)
    return Stored(
        rows=len(batch.rows), rejected=batch.rejected, reasons=batch.reasons[:20], credits=batch.credits,
        without_cmc_id=sum(1 for r in batch.rows if key == RANKINGS and r["cmc_id"] is None),
        provider=batch.provider, source="emulated" if batch.emulated else "live",
    )  # fmt: skip


@dg.multi_asset(
    name="fetch_prices_and_rankings",
    specs=[
        dg.AssetSpec(
            PRICES,
            description="USD price, 24h volume and market cap of each CMC asset, per minute (CoinMarketCap).",
            group_name="upstream",
            kinds={"coinmarketcap", "sql"},
            skippable=True,
        ),
        dg.AssetSpec(
            RANKINGS,
            description="Assets ranked by 24h spot volume in USD, per minute, with their CMC id (CryptoCompare).",
            group_name="upstream",
            kinds={"cryptocompare", "sql"},
            skippable=True,
        ),
    ],
    partitions_def=minute_partitions,
    backfill_policy=RANGE_RUN_POLICY,
    retry_policy=UPSTREAM_RETRY,
    can_subset=True,
)
def fetch_prices_and_rankings(
    context: dg.AssetExecutionContext,
    cmc: CoinMarketCapResource,
    cryptocompare: CryptoCompareResource,
    warehouse: WarehouseResource,
    toplist: ToplistConfig,
    config: FetchConfig,
):
    yield_cpu(context.run.tags)
    whole = Window(
        context.partition_time_window.start.astimezone(UTC),
        context.partition_time_window.end.astimezone(UTC),
        datetime.now(UTC),
        timedelta(minutes=toplist.live_window_minutes),
    )
    store = warehouse.store
    selected = [key for key in (PRICES, RANKINGS) if key in context.selected_asset_keys]
    since, began = run_family(context)
    stored = {key: Stored() for key in selected}
    failures: list[tuple[dg.AssetKey, BaseException]] = []
    # One candidate list for the whole range: chosen per chunk, it would be the previous chunk's
    # stored ranking, losing for the rest of the range every asset one chunk could not rank.
    try:
        ranked = [] if whole.live else candidates(store, whole, cryptocompare, toplist.ranking_depth, began)
    except UpstreamError as error:  # the asset list comes from CryptoCompare too: classified like a fetch
        raise step_failure([(RANKINGS, error)]) from error
    # What was captured live is never replaced by a reconstruction unless the run config says so
    # (a range re-run over the UI's "missing" partitions after pruning or a HISTORY_START move).
    replaceable = whole.live or config.replace_live_minutes
    kept = set() if replaceable else set(store.captured_live(whole.start, whole.end))
    if kept:
        context.log.info("%d minutes captured live are kept, not reconstructed (replace_live_minutes)", len(kept))
    # Chunk by chunk, each committed on its own: memory is one chunk's, a failure keeps the
    # chunks before it, and a retry (or a re-execution) skips what its run family stored.
    blocks = BarBlocks(whole, toplist.chunk_minutes)
    for window in whole.chunks(toplist.chunk_minutes):
        keep = [minute for minute in window.minutes if minute in kept]
        todo = []
        for key in selected:
            stored[key].kept_live += len(keep)
            if len(keep) == len(window.minutes):
                stored[key].minutes += window.minutes
            elif window.live or not store.fetched_since(window.start, window.end, key.path[-1], since):
                todo.append(key)
            else:
                stored[key].minutes += window.minutes
                stored[key].resumed += len(window.minutes)
        outcomes = fetch_chunk(window, todo, ranked, blocks, cmc, cryptocompare, store, toplist, keep)
        for key, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                context.log.error("%s failed: %s", key.to_user_string(), outcome)
                failures.append((key, outcome))
            else:
                stored[key].add(window, outcome)
        if failures:
            break
    for key, done in stored.items():
        if len(done.minutes) == len(whole.minutes):  # complete (if anything failed, the other dataset did)
            yield dg.MaterializeResult(asset_key=key, metadata=done.metadata(key, whole.mode))
        else:  # the minutes stored before the failure count as materialized, the rest do not
            for minute in done.minutes:
                yield dg.AssetMaterialization(asset_key=key, partition=minute.strftime(MINUTE_FORMAT))
    if failures:
        raise step_failure(failures)


def step_failure(failures: list[tuple[dg.AssetKey, BaseException]]) -> dg.Failure:
    """The step's failure, classified: retried in the step only if every error may heal in
    seconds; `permanent` (read back by the request sensor) if an operator must fix something."""
    errors = [error for _, error in failures]
    return dg.Failure(
        description="; ".join(f"{key.to_user_string()}: {error}" for key, error in failures),
        allow_retries=all(worth_a_quick_retry(error) for error in errors),
        metadata={"permanent": any(isinstance(error, PERMANENT_ERRORS) for error in errors)},
    )


def fetch_chunk(
    window: Window,
    selected: list[dg.AssetKey],
    ranked: list[dict],
    blocks: BarBlocks,
    cmc: CoinMarketCapResource,
    cryptocompare: CryptoCompareResource,
    store,
    toplist: ToplistConfig,
    keep: list[datetime],
) -> dict[dg.AssetKey, Stored | BaseException]:
    """Fetch and store one chunk of each selected dataset concurrently, but the minutes in `keep`;
    one failing never stops the other."""
    if not selected:
        return {}
    # Worker threads do I/O only; all logging and events stay on the asset's thread.
    with ThreadPoolExecutor(max_workers=3) as pool:
        if window.live:  # the ranking first: the prices are those of exactly the ranked ids
            depth = toplist.ranking_depth
            ranking = pool.submit(live_rankings, cryptocompare, window, depth)
            fetchers = {
                PRICES: lambda: live_prices(cmc, window, ranked_to_price(ranking, store, window, depth)),
                RANKINGS: ranking.result,
            }
        else:
            max_quote_age = timedelta(minutes=toplist.max_quote_age_minutes)
            needs_series = RANKINGS in selected or toplist.historical_price_source == "cryptocompare"
            series = pool.submit(cryptocompare_series, cryptocompare, window, ranked, blocks) if needs_series else None
            fetchers = {
                PRICES: (lambda: past_prices_from_cryptocompare(series.result(), window))
                if toplist.historical_price_source == "cryptocompare"
                else (lambda: past_prices_from_cmc(cmc, window, ranked, max_quote_age)),
                RANKINGS: lambda: past_rankings(series.result(), window, toplist.ranking_depth),
            }
        futures = {
            key: pool.submit(lambda key=key: record(store, key, window, fetchers[key](), keep)) for key in selected
        }
    return {key: future.exception() or future.result() for key, future in futures.items()}
