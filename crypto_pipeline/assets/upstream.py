"""`prices` (CoinMarketCap) and `rankings` (CryptoCompare): one step, two assets, fetched concurrently.

One step keeps a minute to one lean run (crypto_pipeline/fetching.py fetches and stores). Each
upstream is its own failure domain: if one fails, the other is still written and materialized,
then the step fails so Dagster retries it (only what may heal in seconds) and shows the failure.

A partition younger than `live_window_minutes` is fetched from the latest endpoints. An older
one, or a range, comes from the historical endpoints, chunk by chunk (BACKFILL_CHUNK_MINUTES),
each committed on its own.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from crypto_pipeline import fetching
from crypto_pipeline.fetching import Stored, Upstreams, candidates, fetch_range
from crypto_pipeline.partitions import MINUTE_FORMAT, RANGE_RUN_POLICY, minute_partitions
from crypto_pipeline.reconstruction import Window
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import PERMANENT_ERRORS, UpstreamError, worth_a_quick_retry
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from crypto_pipeline.runs import run_family, yield_cpu

PRICES = dg.AssetKey(fetching.PRICES)
RANKINGS = dg.AssetKey(fetching.RANKINGS)


class FetchConfig(dg.Config):
    """Run configuration of `fetch_prices_and_rankings` (the launchpad's config editor)."""

    replace_live_minutes: bool = Field(
        default=False,
        description="Replace minutes captured live with reconstructions from the historical endpoints. "
        "Off: a range keeps what was captured live (raw rows and snapshot) and says so in `kept_live_minutes`.",
    )


UPSTREAM_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


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
    datasets = [key.path[-1] for key in selected]
    stored, failed = fetch_range(whole, datasets, ranked, kept, since, Upstreams(cmc, cryptocompare, store, toplist))
    failures = [(dg.AssetKey(dataset), error) for dataset, error in failed]
    for key, error in failures:
        context.log.error("%s failed: %s", key.to_user_string(), error)
    for key in selected:
        done = stored[key.path[-1]]
        if len(done.minutes) == len(whole.minutes):  # complete (if anything failed, the other dataset did)
            yield dg.MaterializeResult(asset_key=key, metadata=materialization_metadata(key, done, whole.mode))
        else:  # the minutes stored before the failure count as materialized, the rest do not
            for minute in done.minutes:
                yield dg.AssetMaterialization(asset_key=key, partition=minute.strftime(MINUTE_FORMAT))
    if failures:
        raise step_failure(failures)


def materialization_metadata(key: dg.AssetKey, stored: Stored, mode: str) -> dict:
    """What a dataset's materialization says about the rows its run stored."""
    metadata = {
        "rows": dg.MetadataValue.int(stored.rows),
        "rejected": dg.MetadataValue.int(stored.rejected),
        "rejected_examples": dg.MetadataValue.json(stored.reasons),
        "provider": stored.provider,
        "source": stored.source,
        "mode": mode,
    }
    if stored.credits is not None:
        metadata["cmc_credits"] = dg.MetadataValue.int(stored.credits)
    if key == RANKINGS:
        metadata["without_cmc_id"] = dg.MetadataValue.int(stored.without_cmc_id)
    if stored.resumed:
        metadata["resumed_minutes"] = dg.MetadataValue.int(stored.resumed)
    if stored.kept_live:
        metadata["kept_live_minutes"] = dg.MetadataValue.int(stored.kept_live)
    return metadata


def step_failure(failures: list[tuple[dg.AssetKey, BaseException]]) -> dg.Failure:
    """The step's failure, classified: retried in the step only if every error may heal in
    seconds; `permanent` (read back by the request sensor) if an operator must fix something."""
    errors = [error for _, error in failures]
    return dg.Failure(
        description="; ".join(f"{key.to_user_string()}: {error}" for key, error in failures),
        allow_retries=all(worth_a_quick_retry(error) for error in errors),
        metadata={"permanent": any(isinstance(error, PERMANENT_ERRORS) for error in errors)},
    )
