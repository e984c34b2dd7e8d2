"""One chunk of each dataset, fetched from its upstream and stored: what the minute assets run.

The two datasets are `prices` (CoinMarketCap) and `rankings` (CryptoCompare). A live minute
asks for the ranking first, then the live price source for exactly the ranked CMC ids; a past
chunk is reconstructed from the historical endpoints (reconstruction.py does the arithmetic).
Each dataset is fetched and written on its own thread, so one failing never stops the other.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from crypto_pipeline.reconstruction import Window, bar_requests, latest_at_each, rolling_24h_volume
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import UpstreamBadRequest, UpstreamError
from crypto_pipeline.resources.parsing import HistoryBar
from crypto_pipeline.resources.toplist import ToplistConfig
from warehouse.ingest import Fetch
from warehouse.store import Warehouse

PRICES, RANKINGS = "prices", "rankings"

# How much of a range one fetch of hourly bars covers (BarBlocks): ~190 bars per asset held.
HOURLY_BAR_BLOCK = timedelta(days=7)


@dataclass
class UpstreamRows:
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


def candidates(
    store: Warehouse, window: Window, cryptocompare: CryptoCompareResource, depth: int, began: datetime
) -> list[dict]:
    """Assets to rank in the past: those ranked in the nearest ranking stored before `began`
    (when the run family, or the backfill it belongs to, began), else today's list. Rankings
    stored since do not count: a backfill's day runs, two at a time, and a retry choose as its
    first run did, not from what the runs beside them happen to have stored.

    Survivorship caveat (docs/architecture.md#time-and-partitions): an asset that was top-ranked
    then but never stored near the window cannot appear.
    """
    nearest = store.ranked_near(window.start, depth, fetched_before=began)
    if nearest:
        return nearest
    return [r.model_dump() for r in cryptocompare.top_by_volume(depth).records]


def cmc_ids_of(ranked: list[dict]) -> list[int]:
    """The distinct CMC ids of ranked assets (those CryptoCompare knows one for)."""
    return sorted({r["cmc_id"] for r in ranked if r["cmc_id"] is not None})


def live_prices(cmc: CoinMarketCapResource, window: Window, ranked: list[dict]) -> UpstreamRows:
    """Prices of exactly the ranked ids; one the live source does not answer is counted, not fatal."""
    fetch = cmc.quotes_latest(cmc_ids_of(ranked))
    rows = [{**r.model_dump(), "minute": window.start} for r in fetch.records]
    return UpstreamRows(rows, fetch.provider, fetch.emulated, fetch.rejected, fetch.reasons, fetch.credits)


def ranked_to_price(ranking: Future, store: Warehouse, window: Window, depth: int) -> list[dict]:
    """This minute's ranking; if CryptoCompare failed, the nearest stored one, so prices are still recorded."""
    try:
        return ranking.result().rows
    except UpstreamError:
        nearest = store.ranked_near(window.start, depth)
        if not nearest:
            raise
        return nearest


def past_prices_from_cmc(
    cmc: CoinMarketCapResource, window: Window, ranked: list[dict], max_age: timedelta
) -> UpstreamRows:
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
    return UpstreamRows(rows, fetch.provider, fetch.emulated, fetch.rejected + stale, reasons, fetch.credits, unpriced)


def past_prices_from_cryptocompare(series: CryptoCompareSeries, window: Window) -> UpstreamRows:
    """Closing prices of the bars already fetched for the ranking (HISTORICAL_PRICE_SOURCE=cryptocompare)."""
    rows = []
    for candidate, _, closes in series.summaries:
        if candidate["cmc_id"] is None:
            continue
        asset = {key: candidate[key] for key in ("cmc_id", "symbol", "name")}
        rows.extend({"minute": minute, **asset, "price_usd": close} for minute, close in closes.items())
    return UpstreamRows(rows, "cryptocompare", series.emulated)


def live_rankings(cryptocompare: CryptoCompareResource, window: Window, depth: int) -> UpstreamRows:
    fetch = cryptocompare.top_by_volume(depth)
    rows = [{**r.model_dump(exclude={"price_usd"}), "minute": window.start} for r in fetch.records]
    return UpstreamRows(rows, fetch.provider, fetch.emulated, fetch.rejected, fetch.reasons)


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


def past_rankings(series: CryptoCompareSeries, window: Window, depth: int) -> UpstreamRows:
    """Candidates ranked per minute by the 24h volume ending with that minute."""
    volumes: dict[datetime, list[tuple[float, dict]]] = {m: [] for m in window.minutes}
    for candidate, by_minute, _ in series.summaries:
        for minute, volume in by_minute.items():
            volumes[minute].append((volume, candidate))
    rows = []
    for minute, ranked_here in volumes.items():
        ranked_here.sort(key=lambda pair: (-pair[0], pair[1]["cc_id"]))
        for rank, (volume, candidate) in enumerate(ranked_here[:depth], start=1):
            asset = {key: candidate[key] for key in ("cc_id", "symbol", "name", "cmc_id")}
            rows.append({"minute": minute, "rank": rank, **asset, "volume_24h_usd": round(volume, 2)})
    return UpstreamRows(rows, "cryptocompare", series.emulated, series.rejected, series.reasons)


@dataclass
class Upstreams:
    """What a range is fetched from and stored in, and how deep and from where (the toplist config)."""

    cmc: CoinMarketCapResource
    cryptocompare: CryptoCompareResource
    store: Warehouse
    toplist: ToplistConfig


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

    def add(self, window: Window, written: Stored) -> None:
        self.minutes += window.minutes
        self.rows += written.rows
        self.rejected += written.rejected
        self.reasons += written.reasons[: 20 - len(self.reasons)]
        if written.credits is not None:
            self.credits = (self.credits or 0) + written.credits
        self.without_cmc_id += written.without_cmc_id
        self.provider, self.source = written.provider, written.source


def rejected_at(rows: UpstreamRows, minute: datetime) -> int:
    """Records rejected for one minute: its own count, or the window's (a record rejected from
    the window's fetch is missing from each of its minutes)."""
    return rows.rejected if rows.rejected_at is None else rows.rejected_at.get(minute, 0)


def record(store: Warehouse, dataset: str, window: Window, rows: UpstreamRows, keep: list[datetime]) -> Stored:
    """Replace the window's rows of one dataset but the minutes in `keep` (one transaction) and say
    what was written."""
    counts = Counter(row["minute"] for row in rows.rows)
    fetches = [
        Fetch(m, dataset, rows.provider, rows.emulated, window.mode, counts[m], rejected_at(rows, m), window.now)
        for m in window.minutes
    ]
    replace = store.replace_prices if dataset == PRICES else store.replace_rankings
    replace(window.start, window.end, rows.rows, fetches, keep)
    return Stored(
        rows=len(rows.rows),
        rejected=rows.rejected,
        reasons=rows.reasons[:20],
        credits=rows.credits,
        without_cmc_id=sum(1 for r in rows.rows if dataset == RANKINGS and r["cmc_id"] is None),
        provider=rows.provider,
        source="emulated" if rows.emulated else "live",
    )


def fetch_range(
    whole: Window, datasets: list[str], ranked: list[dict], kept: set[datetime], since: datetime, upstreams: Upstreams
) -> tuple[dict[str, Stored], list[tuple[str, BaseException]]]:
    """Fetch and store `whole` chunk by chunk, each committed on its own: memory is one chunk's,
    a failure keeps the chunks before it (and ends the range), and a retry (or a re-execution)
    skips what its run family stored since `since`. Minutes in `kept` stay as captured live.
    Returns what each dataset stored and the failures."""
    stored = {dataset: Stored() for dataset in datasets}
    blocks = BarBlocks(whole, upstreams.toplist.chunk_minutes)
    for window in whole.chunks(upstreams.toplist.chunk_minutes):
        keep = [minute for minute in window.minutes if minute in kept]
        todo = []
        for dataset in datasets:
            stored[dataset].kept_live += len(keep)
            if len(keep) == len(window.minutes):
                stored[dataset].minutes += window.minutes
            elif window.live or not upstreams.store.fetched_since(window.start, window.end, dataset, since):
                todo.append(dataset)
            else:
                stored[dataset].minutes += window.minutes
                stored[dataset].resumed += len(window.minutes)
        outcomes = fetch_chunk(window, todo, ranked, blocks, upstreams, keep)
        failures = [(dataset, outcome) for dataset, outcome in outcomes.items() if isinstance(outcome, BaseException)]
        for dataset, outcome in outcomes.items():
            if not isinstance(outcome, BaseException):
                stored[dataset].add(window, outcome)
        if failures:
            return stored, failures
    return stored, []


def fetch_chunk(
    window: Window,
    datasets: list[str],
    ranked: list[dict],
    blocks: BarBlocks,
    upstreams: Upstreams,
    keep: list[datetime],
) -> dict[str, Stored | BaseException]:
    """Fetch and store one chunk of each dataset concurrently, but the minutes in `keep`; one
    failing never stops the other."""
    if not datasets:
        return {}
    cmc, cryptocompare, store, toplist = upstreams.cmc, upstreams.cryptocompare, upstreams.store, upstreams.toplist
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
            needs_series = RANKINGS in datasets or toplist.historical_price_source == "cryptocompare"
            series = pool.submit(cryptocompare_series, cryptocompare, window, ranked, blocks) if needs_series else None
            fetchers = {
                PRICES: (lambda: past_prices_from_cryptocompare(series.result(), window))
                if toplist.historical_price_source == "cryptocompare"
                else (lambda: past_prices_from_cmc(cmc, window, ranked, max_quote_age)),
                RANKINGS: lambda: past_rankings(series.result(), window, toplist.ranking_depth),
            }
        futures = {
            dataset: pool.submit(lambda dataset=dataset: record(store, dataset, window, fetchers[dataset](), keep))
            for dataset in datasets
        }
    return {dataset: future.exception() or future.result() for dataset, future in futures.items()}
