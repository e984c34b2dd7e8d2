"""`top_assets`: the served table, rankings joined to prices on the CMC id, with its checks.

The merge is one SQL statement in the warehouse; this asset only runs it for the partition's
window and judges the result. The checks run inside the same step, so every materialization
is checked without another run or step.
"""

from datetime import UTC

import dagster as dg

from crypto_pipeline.assets.upstream import PRICES, RANKINGS
from crypto_pipeline.partitions import minute_partitions
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource

TOP_ASSETS = dg.AssetKey("top_assets")
CHECKS = {
    "ranks_contiguous": "Ranks are 1..n with no gap in every snapshot.",
    "unique_cmc_ids": "No CMC id appears twice in a snapshot.",
    "prices_positive": "Every price is above zero.",
    "top_100_match_rate": "Enough of the top 100 ranked assets found a price (warns below the threshold).",
    "row_count": "Each snapshot holds at least depth x threshold rows.",
}


def judge(stats: dict | None, config: ToplistConfig) -> dict[str, bool]:
    """Which checks one minute passes; `stats` is None for a minute where nothing could be priced."""
    if stats is None:
        return {"ranks_contiguous": True, "unique_cmc_ids": True, "prices_positive": True,
                "top_100_match_rate": False, "row_count": config.depth * config.row_count_threshold <= 0}  # fmt: skip
    top_ranked = stats.get("top_ranked") or 0
    return {
        "ranks_contiguous": stats["min_rank"] == 1 and stats["max_rank"] == stats["rows"],
        "unique_cmc_ids": stats["distinct_cmc_ids"] == stats["rows"],
        "prices_positive": stats["min_price"] > 0,
        "top_100_match_rate": top_ranked > 0 and stats["top_matched"] / top_ranked >= config.match_rate_threshold,
        "row_count": stats["rows"] >= config.depth * config.row_count_threshold,
    }


@dg.asset(
    deps=[PRICES, RANKINGS],
    partitions_def=minute_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="served",
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=TOP_ASSETS, description=description) for name, description in CHECKS.items()
    ],
)
def top_assets(context: dg.AssetExecutionContext, warehouse: WarehouseResource, toplist: ToplistConfig):
    """Top assets by 24h volume with their USD price: what the API serves, one snapshot per minute."""
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    store = warehouse.store
    merged = store.merge_top_assets(start, end, toplist.depth, run_id=context.run_id)
    if not merged:
        raise dg.Failure(f"no minute in [{start:%Y-%m-%d %H:%M}, {end:%H:%M}) has both prices and rankings stored")
    last = merged[-1]
    ranked = sum(s.matched + s.unmatched for s in merged)
    matched = sum(s.matched for s in merged)
    yield dg.MaterializeResult(
        metadata={
            "snapshots": dg.MetadataValue.int(len(merged)),
            "rows": dg.MetadataValue.int(sum(s.row_count for s in merged)),
            "matched": dg.MetadataValue.int(matched),
            "unmatched": dg.MetadataValue.int(ranked - matched),
            "match_rate": dg.MetadataValue.float(round(matched / ranked, 4) if ranked else 0.0),
            "unmatched_symbols": dg.MetadataValue.json(store.unmatched_symbols(last.minute, 20)),
            "source": last.source,
            "price_source": last.price_source,
        }
    )
    stats = store.snapshot_quality(start, end)
    verdicts = {s.minute: judge(stats.get(s.minute), toplist) for s in merged}
    for name in CHECKS:
        failing = [minute.strftime("%Y-%m-%d %H:%M") for minute, verdict in verdicts.items() if not verdict[name]]
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not failing,
            severity=dg.AssetCheckSeverity.WARN if name == "top_100_match_rate" else dg.AssetCheckSeverity.ERROR,
            metadata={"minutes_checked": len(verdicts), "failing_minutes": dg.MetadataValue.json(failing[:20])},
        )
