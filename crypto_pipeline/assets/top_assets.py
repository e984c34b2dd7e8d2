"""`top_assets`: the served table, rankings joined to prices on the CMC id, with its checks.

The merge is one SQL transaction in the warehouse that also judges the blocking checks
(warehouse.quality): a minute that fails one is never published. This asset runs it for the
partition's window and reports the same verdicts as asset checks, so what the Dagster UI shows
is exactly what blocked.
"""

from datetime import UTC, timedelta

import dagster as dg

from crypto_pipeline.assets.upstream import PRICES, RANKINGS
from crypto_pipeline.partitions import MINUTE_FORMAT, RANGE_RUN_POLICY, minute_partitions
from crypto_pipeline.reconstruction import chunk_bounds
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from crypto_pipeline.runs import RUN_KEY_TAG
from warehouse.merge import Merge
from warehouse.quality import BLOCKING_CHECKS

TOP_ASSETS = dg.AssetKey("top_assets")
MATCH_RATE = "top_100_match_rate"
CHECKS = {
    **BLOCKING_CHECKS,
    MATCH_RATE: "Enough of the top 100 ranked assets found a price (warns below the threshold).",
}


def verdicts(merge: Merge, config: ToplistConfig) -> dict[str, list[str]]:
    """Per check, the minutes (as partition keys) that fail it."""
    failing: dict[str, list[str]] = {name: [] for name in CHECKS}
    for minute, quality in merge.quality.items():
        key = minute.strftime(MINUTE_FORMAT)
        for name in merge.blocked.get(minute, []):
            failing[name].append(key)
        if quality.match_rate() < config.match_rate_threshold:
            failing[MATCH_RATE].append(key)
    return failing


@dg.asset(
    deps=[PRICES, RANKINGS],
    partitions_def=minute_partitions,
    backfill_policy=RANGE_RUN_POLICY,
    group_name="served",
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=TOP_ASSETS, description=description, blocking=name in BLOCKING_CHECKS)
        for name, description in CHECKS.items()
    ],
)
def top_assets(context: dg.AssetExecutionContext, warehouse: WarehouseResource, toplist: ToplistConfig):
    """Top assets by 24h volume with their USD price: what the API serves, one snapshot per minute."""
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    store = warehouse.store
    merge = Merge([], {}, {})
    for first, last in chunk_bounds(start, end, toplist.chunk_minutes):  # each chunk is its own transaction
        part = store.merge_top_assets(
            first,
            last,
            toplist.depth,
            run_id=context.run_id,
            run_key=context.run.tags.get(RUN_KEY_TAG),  # settles the backfill requests launched under it
            row_count_threshold=toplist.row_count_threshold,
        )
        merge.stored.extend(part.stored)
        merge.quality.update(part.quality)
        merge.blocked.update(part.blocked)
    kept: list = []
    if len(merge.quality) < (end - start) // timedelta(minutes=1):  # minutes without raw rows to merge
        kept = [m for m in store.captured_live(start, end) if m not in merge.quality]
    if not merge.quality and not kept:
        raise dg.Failure(f"no minute in [{start:%Y-%m-%d %H:%M}, {end:%H:%M}) has prices and rankings stored")
    metadata = {"kept_live_minutes": dg.MetadataValue.int(len(kept))} if kept else {}
    if merge.stored:
        last = merge.stored[-1]
        ranked = sum(s.matched + s.unmatched for s in merge.stored)
        matched = sum(s.matched for s in merge.stored)
        metadata |= {
            "snapshots": dg.MetadataValue.int(len(merge.stored)),
            "rows": dg.MetadataValue.int(sum(s.row_count for s in merge.stored)),
            "matched": dg.MetadataValue.int(matched),
            "unmatched": dg.MetadataValue.int(ranked - matched),
            "match_rate": dg.MetadataValue.float(round(matched / ranked, 4) if ranked else 0.0),
            "unmatched_symbols": dg.MetadataValue.json(store.unmatched_symbols(last.minute, 20)),
            "source": last.source,
            "price_source": last.price_source,
        }
    if merge.blocked:  # only the published minutes of the window count as materialized
        for snapshot in merge.stored:
            yield dg.AssetMaterialization(TOP_ASSETS, partition=snapshot.minute.strftime(MINUTE_FORMAT))
    elif metadata:
        yield dg.MaterializeResult(metadata=metadata)
    for name, failing in verdicts(merge, toplist).items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not failing,
            severity=dg.AssetCheckSeverity.ERROR if name in BLOCKING_CHECKS else dg.AssetCheckSeverity.WARN,
            metadata={"minutes_checked": len(merge.quality), "failing_minutes": dg.MetadataValue.json(failing[:20])},
        )
    if merge.blocked:
        examples = "; ".join(
            f"{minute:%Y-%m-%d %H:%M} failed {', '.join(failed)}" for minute, failed in list(merge.blocked.items())[:5]
        )
        first, last = (minute.strftime(MINUTE_FORMAT) for minute in (min(merge.blocked), max(merge.blocked)))
        raise dg.Failure(
            f"{len(merge.blocked)} of {len(merge.quality)} minutes not published, blocked by checks: {examples}. "
            "Their captures are refused, never kept: they are fetched again from the historical endpoints, by the "
            f"request sensor within HEAL_HORIZON_HOURS, else with `python -m scripts.backfill_range {first}...{last}`",
            metadata={
                "blocked_minutes": dg.MetadataValue.json([m.strftime(MINUTE_FORMAT) for m in merge.blocked][:100])
            },
        )
