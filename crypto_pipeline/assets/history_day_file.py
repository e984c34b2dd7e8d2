"""`history_day_file`: one Parquet file per UTC day of the served history (warehouse.day_files), with its checks.

The file is written under a temporary name, judged by the blocking checks, and only then renamed
into place: a file that fails one is never published (the previous one stays). A day with holes is
written with what is stored, and says so (metadata, the file's own key-value metadata, the warning
check `day_complete`); the sensor writes it again when a minute of the day is stored or rewritten.
"""

from datetime import date

import dagster as dg

from crypto_pipeline.partitions import day_partitions
from crypto_pipeline.resources.history_files import HistoryFilesConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from warehouse.day_files import minutes_in, write_day_file

HISTORY_DAY_FILE = dg.AssetKey("history_day_file")
BLOCKING = {
    "minutes_as_stored": "The file holds exactly the day's stored minutes.",
    "ranks_contiguous": "Each minute's ranks run 1..N without gaps or duplicates.",
    "rows_as_stored": "The file's rows are the warehouse's rows of the day, as the API serves them.",
}
DAY_COMPLETE = "day_complete"


@dg.asset(
    deps=[dg.AssetKey("top_assets")],
    partitions_def=day_partitions,
    group_name="history",
    kinds={"parquet", "duckdb"},
    check_specs=[
        *(dg.AssetCheckSpec(n, asset=HISTORY_DAY_FILE, description=d, blocking=True) for n, d in BLOCKING.items()),
        dg.AssetCheckSpec(
            DAY_COMPLETE, asset=HISTORY_DAY_FILE, description="Every minute of the day since HISTORY_START is stored."
        ),
    ],
)
def history_day_file(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, history_files: HistoryFilesConfig
):
    """The day's stored minutes as long rows (minute, rank, cmc_id, symbol, name, price_usd, volume_24h_usd,
    source, live), sorted by minute and rank: `<HISTORY_DIR>/day=YYYY-MM-DD/minutes.parquet`."""
    day = date.fromisoformat(context.partition_key)
    files = history_files.files
    record, verdicts, holes = write_day_file(warehouse.store, files, day, history_files.first_minute)
    if not verdicts:
        raise dg.Failure(f"no minute of {day} is stored: the day has no file")
    missing = minutes_in(holes)
    if record is not None:  # published: the checks judged the file before it was renamed into place
        yield dg.MaterializeResult(
            metadata={
                "rows": record.rows,
                "minutes": record.minutes,
                "expected_minutes": record.expected_minutes,
                "missing_minutes": missing,
                "bytes": record.bytes,
                "bytes_per_row": dg.MetadataValue.float(round(record.bytes / record.rows, 2)),
                "path": dg.MetadataValue.path(str(files.path(day))),
                "last_created_at": record.last_created_at.isoformat(),
            }
        )
    for name, verdict in verdicts.items():
        yield dg.AssetCheckResult(check_name=name, passed=verdict.passed, metadata={"detail": verdict.detail})
    yield dg.AssetCheckResult(
        check_name=DAY_COMPLETE,
        passed=not holes,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "missing_minutes": missing,
            # [from, to): 23:58 to 00:00 is the day's last two minutes
            "missing_ranges": dg.MetadataValue.json([[f"{a:%H:%M}", f"{b:%H:%M}"] for a, b in holes[:50]]),
        },
    )
    if record is None:
        failed = "; ".join(f"{name}: {v.detail}" for name, v in verdicts.items() if not v.passed)
        raise dg.Failure(f"the file of {day} failed its checks and was not published ({failed})")
