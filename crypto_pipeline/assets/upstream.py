"""`prices` (CoinMarketCap) and `rankings` (CryptoCompare): one step, two assets, fetched concurrently.

One step keeps a minute to one lean run; the two fetches run on two threads. Each upstream is
its own failure domain: if one fails, the other is still written and materialized, then the
step fails so Dagster retries it (transient errors only) and shows the failure.

A partition younger than `live_window_minutes` is fetched from the latest endpoints; an older
one, or a range, from the historical endpoints, once per upstream series for the whole range.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_pipeline.history import (
    bar_requests,
    minutes_in,
    price_at,
    rolling_24h_volume,
    uses_minute_bars,
)
from crypto_pipeline.partitions import minute_partitions
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import UpstreamBadRequest, UpstreamError, UpstreamTransientError
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from warehouse.store import Fetch

PRICES = dg.AssetKey("prices")
RANKINGS = dg.AssetKey("rankings")

UPSTREAM_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class Window:
    """The minutes a run covers, and whether they are live."""

    def __init__(self, start: datetime, end: datetime, now: datetime, live_window: timedelta) -> None:
        self.start, self.end, self.now = start, end, now
        self.minutes = minutes_in(start, end)
        self.live = len(self.minutes) == 1 and start <= now < start + live_window

    @property
    def mode(self) -> str:
        return "latest" if self.live else "historical"


def _fetch_rows(window: Window, dataset: str, provider: str, emulated: bool, counts: dict) -> list[Fetch]:
    return [
        Fetch(minute, dataset, provider, emulated, window.mode, counts.get(minute, 0), 0, window.now)
        for minute in window.minutes
    ]


def candidates(store, window: Window, cryptocompare: CryptoCompareResource, depth: int) -> list[dict]:
    """Assets to rank in the past: those ranked in the nearest stored ranking, else today's list.

    Survivorship caveat (README): an asset that was top-ranked then but never stored near
    the window cannot appear.
    """
    nearest = store.ranked_near(window.start, depth)
    if nearest:
        return nearest
    return [r.model_dump() for r in cryptocompare.top_by_volume(depth).records]


def record_prices(window: Window, cmc: CoinMarketCapResource, store, config: ToplistConfig, ranked: list[dict]) -> dict:
    if window.live:
        fetch = cmc.listings_latest(config.price_depth)
        rows = [{**r.model_dump(), "minute": window.start} for r in fetch.records]
    else:
        ids = sorted({c["cmc_id"] for c in ranked if c["cmc_id"] is not None})
        series, fetch = cmc.quotes_historical(
            ids, window.start - timedelta(minutes=5), window.end - timedelta(minutes=1)
        )
        rows = []
        for minute in window.minutes:
            for quotes in series.values():
                quote = price_at(quotes, minute)
                if quote is not None:
                    rows.append({**quote.model_dump(), "minute": minute})
    counts: dict[datetime, int] = {}
    for row in rows:
        counts[row["minute"]] = counts.get(row["minute"], 0) + 1
    store.replace_prices(
        window.start, window.end, rows, _fetch_rows(window, "prices", "coinmarketcap", fetch.emulated, counts)
    )
    return {
        "rows": dg.MetadataValue.int(len(rows)),
        "rejected": dg.MetadataValue.int(fetch.rejected),
        "rejected_examples": dg.MetadataValue.json(fetch.reasons[:20]),
        "cmc_credits": dg.MetadataValue.int(fetch.credits),
        "source": "emulated" if fetch.emulated else "live",
        "mode": window.mode,
    }


def record_rankings(
    window: Window, cryptocompare: CryptoCompareResource, store, config: ToplistConfig, ranked: list[dict]
) -> dict:
    emulated, rejected, reasons = False, 0, []
    if window.live:
        fetch = cryptocompare.top_by_volume(config.ranking_depth)
        rows = [{**r.model_dump(exclude={"price_usd"}), "minute": window.start} for r in fetch.records]
        emulated, rejected, reasons = fetch.emulated, fetch.rejected, fetch.reasons
    else:
        minute_bars = uses_minute_bars(window.start, window.now)
        volumes: dict[datetime, list[tuple[float, dict]]] = {m: [] for m in window.minutes}

        def volumes_of(candidate: dict):
            """(candidate, {minute: volume}, emulated), or (candidate, error) when CC has no history for it."""
            bars, emulated = [], False
            try:
                for to_ts, limit in bar_requests(window.start, window.end, minute_bars):
                    history = cryptocompare.history(candidate["symbol"], to_ts, limit, hourly=not minute_bars)
                    bars += history.bars
                    emulated |= history.emulated
            except UpstreamBadRequest as error:
                return candidate, error, False
            return candidate, rolling_24h_volume(bars, window.minutes, minute_bars), emulated

        with ThreadPoolExecutor(max_workers=cryptocompare.concurrency) as pool:
            for candidate, result, from_emulator in pool.map(volumes_of, ranked):
                if isinstance(result, UpstreamError):
                    rejected += 1
                    reasons.append(f"{candidate['symbol']}: {result}")
                    continue
                emulated |= from_emulator
                for minute, volume in result.items():
                    volumes[minute].append((volume, candidate))
        rows = []
        for minute, ranked_here in volumes.items():
            ranked_here.sort(key=lambda pair: (-pair[0], pair[1]["cc_id"]))
            for rank, (volume, c) in enumerate(ranked_here[: config.ranking_depth], start=1):
                rows.append({
                    "minute": minute, "rank": rank, "cc_id": c["cc_id"], "symbol": c["symbol"],
                    "name": c["name"], "cmc_id": c["cmc_id"], "volume_24h_usd": round(volume, 2),
                })  # fmt: skip
    counts = {}
    for row in rows:
        counts[row["minute"]] = counts.get(row["minute"], 0) + 1
    store.replace_rankings(
        window.start, window.end, rows, _fetch_rows(window, "rankings", "cryptocompare", emulated, counts)
    )
    return {
        "rows": dg.MetadataValue.int(len(rows)),
        "rejected": dg.MetadataValue.int(rejected),
        "rejected_examples": dg.MetadataValue.json(reasons[:20]),
        "without_cmc_id": dg.MetadataValue.int(sum(1 for r in rows if r["cmc_id"] is None)),
        "source": "emulated" if emulated else "live",
        "mode": window.mode,
    }


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
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=UPSTREAM_RETRY,
    can_subset=True,
)
def fetch_prices_and_rankings(
    context: dg.AssetExecutionContext,
    cmc: CoinMarketCapResource,
    cryptocompare: CryptoCompareResource,
    warehouse: WarehouseResource,
    toplist: ToplistConfig,
):
    window = Window(
        context.partition_time_window.start.astimezone(UTC),
        context.partition_time_window.end.astimezone(UTC),
        datetime.now(UTC),
        timedelta(minutes=toplist.live_window_minutes),
    )
    store = warehouse.store
    ranked = [] if window.live else candidates(store, window, cryptocompare, toplist.ranking_depth)
    jobs = {
        PRICES: lambda: record_prices(window, cmc, store, toplist, ranked),
        RANKINGS: lambda: record_rankings(window, cryptocompare, store, toplist, ranked),
    }
    selected = [key for key in jobs if key in context.selected_asset_keys]
    # Worker threads do I/O only; all logging and events stay on this thread.
    with ThreadPoolExecutor(max_workers=len(selected)) as pool:
        futures = {key: pool.submit(jobs[key]) for key in selected}
    failures = []
    for key, future in futures.items():
        error = future.exception()
        if error is None:
            metadata = future.result()
            context.log.info("%s: %s rows for %d minute(s), %s", key.to_user_string(), metadata["rows"].value,
                             len(window.minutes), window.mode)  # fmt: skip
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        else:
            context.log.error("%s failed: %s", key.to_user_string(), error)
            failures.append((key, error))
    if failures:
        transient = all(isinstance(error, UpstreamTransientError) for _, error in failures)
        raise dg.Failure(
            description="; ".join(f"{key.to_user_string()}: {error}" for key, error in failures),
            allow_retries=transient,
        )
