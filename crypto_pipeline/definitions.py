"""The code location: assets, checks, the schedule and resources in one place.

Secrets are wired with EnvVar so their values never enter run config or the UI; the rest
comes from the settings module (environment variables, see docs/settings.md).
"""

import logging
import multiprocessing
import os
from datetime import UTC, datetime

import dagster as dg

from common.logs import configure_logging
from common.settings import get_settings
from crypto_pipeline.assets.history_day_file import history_day_file
from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.history_sensor import build_history_day_files_sensor, history_day_files_job
from crypto_pipeline.maintenance import RetentionConfig, prune_storage, prune_storage_schedule
from crypto_pipeline.partitions import window_warning
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.history_files import HistoryFilesConfig
from crypto_pipeline.resources.sources import SOURCES_DIR
from crypto_pipeline.resources.toplist import ToplistConfig
from crypto_pipeline.resources.warehouse import WarehouseResource
from crypto_pipeline.schedules import backfill_snapshots_job, every_minute, minute_snapshot_job
from crypto_pipeline.sensors import build_backfill_requests_sensor

settings = get_settings()
# A run worker (a child process of the code server) keeps no log file: Dagster keeps its lines
# in the run's logs (python_logs in the instance config), and a file per run would pile up.
configure_logging("pipeline", settings, keep_files=multiprocessing.parent_process() is None)
if warning := window_warning(settings.history_start, datetime.now(UTC)):
    logging.getLogger(__name__).warning(warning)


retries = dict(
    timeout_seconds=settings.upstream_timeout_seconds,
    max_attempts=settings.upstream_max_attempts,
    backoff_seconds=settings.upstream_backoff_seconds,
    concurrency=settings.upstream_concurrency,
)

sources_dirs = [str(SOURCES_DIR), *([str(settings.sources_dir)] if settings.sources_dir else [])]
# Each source file names the variables of its key and host: the resources are wired from them
# (keys as EnvVar), and every file is validated now, when the code location loads, so a bad file
# or a wrong choice (record kind, a variable not set, a host the resource lacks) fails here,
# naming the file and the key, rather than in the first run.
upstream = dict(environ=os.environ, emulator_url=settings.emulator_url if settings.uses_emulator else None)
cmc = CoinMarketCapResource.wired(
    **upstream,
    base_url=settings.cmc_base_url,
    live_source=settings.live_price_source,
    sources_dirs=sources_dirs,
    **retries,
)
cryptocompare = CryptoCompareResource.wired(
    **upstream,
    data_api_url=settings.cryptocompare_data_api_url,
    min_api_url=settings.cryptocompare_min_api_url,
    ranking_source=settings.ranking_source,
    sources_dirs=sources_dirs,
    page_size=settings.cryptocompare_page_size,
    **retries,
)

defs = dg.Definitions(
    assets=[fetch_prices_and_rankings, top_assets, history_day_file],
    jobs=[minute_snapshot_job, backfill_snapshots_job, history_day_files_job, prune_storage],
    schedules=[every_minute, prune_storage_schedule],
    sensors=[build_backfill_requests_sensor(settings), build_history_day_files_sensor(settings)],
    resources={
        "cmc": cmc,
        "cryptocompare": cryptocompare,
        # EnvVar keeps a password in the URL out of run config; unset, the SQLite default applies.
        "warehouse": WarehouseResource(
            database_url=dg.EnvVar("DATABASE_URL") if "DATABASE_URL" in os.environ else settings.database_url
        ),
        "toplist": ToplistConfig(
            depth=settings.toplist_depth,
            ranking_depth=settings.ranking_depth,
            max_quote_age_minutes=settings.max_quote_age_minutes,
            live_window_minutes=settings.live_window_minutes,
            match_rate_threshold=settings.match_rate_threshold,
            row_count_threshold=settings.row_count_threshold,
            historical_price_source=settings.historical_price_source,
            chunk_minutes=settings.backfill_chunk_minutes,
        ),
        "history_files": HistoryFilesConfig(
            directory=str(settings.history_dir), history_start=settings.history_start.isoformat()
        ),
        "retention": RetentionConfig(
            run_days=settings.run_retention_days,
            failed_run_days=settings.failed_run_retention_days,
            raw_days=settings.raw_retention_days,
        ),
    },
    executor=dg.in_process_executor,
)
