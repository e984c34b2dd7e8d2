"""The one settings module: every knob comes from the environment (or an optional `.env`).

Both the pipeline and the API read it; it imports neither Dagster nor FastAPI, so the API
stays light. Secrets are `SecretStr` so they never print in a repr or a log line.

Every variable, its default and its meaning (the README's table, included here):

.. include:: ../README.md
   :start-after: <!-- settings-table -->
   :end-before: <!-- /settings-table -->
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / ".data"

LOCAL_EMULATOR_URL = "http://127.0.0.1:8765"
CMC_LIVE_URL = "https://pro-api.coinmarketcap.com"
CRYPTOCOMPARE_DATA_API_LIVE_URL = "https://data-api.cryptocompare.com"
CRYPTOCOMPARE_MIN_API_LIVE_URL = "https://min-api.cryptocompare.com"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # Storage
    database_url: str = Field(
        default=f"sqlite:///{DATA_DIR / 'warehouse.db'}",
        description="SQLAlchemy URL of the warehouse (postgresql+psycopg://… in production).",
    )

    # Upstreams
    cmc_api_key: SecretStr | None = None
    cryptocompare_api_key: SecretStr | None = None
    emulator_url: str = Field(
        default=LOCAL_EMULATOR_URL,
        description="Base URL of the emulator, used for both upstreams unless both API keys are set.",
    )
    cmc_base_url: str = CMC_LIVE_URL
    cryptocompare_data_api_url: str = CRYPTOCOMPARE_DATA_API_LIVE_URL
    cryptocompare_min_api_url: str = CRYPTOCOMPARE_MIN_API_LIVE_URL
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_max_attempts: int = Field(default=4, ge=1)
    upstream_backoff_seconds: float = Field(default=0.5, ge=0)
    upstream_concurrency: int = Field(default=4, ge=1, le=32)
    cryptocompare_page_size: int = Field(default=100, ge=10, le=100)
    live_price_source: str = Field(
        default="cmc_quotes_latest", description="Source file of live prices, asked for ids (batch or lookup)."
    )
    ranking_source: str = Field(default="cc_top_list", description="Source file of the live ranking.")
    sources_dir: Path | None = Field(
        default=None, description="A folder of extra source files; one there replaces a shipped one of its name."
    )

    # Pipeline
    toplist_depth: int = Field(default=200, ge=1, description="How many ranked assets a snapshot keeps.")
    ranking_depth: int = Field(default=250, ge=1, description="How many ranked assets are fetched (some go unpriced).")
    max_quote_age_minutes: int = Field(
        default=10, ge=0, description="A past minute takes a CMC quote at most this old (5-minute quotes)."
    )
    live_window_minutes: int = Field(default=3, ge=1, description="Younger minutes use the latest endpoints.")
    historical_price_source: Literal["coinmarketcap", "cryptocompare"] = Field(
        default="coinmarketcap", description="CMC quotes/historical needs a paid plan; CryptoCompare closes do not."
    )
    match_rate_threshold: float = Field(default=0.9, ge=0, le=1)
    row_count_threshold: float = Field(default=0.9, ge=0, le=1)
    history_start: datetime = Field(
        default=datetime(2026, 11, 1, tzinfo=UTC),
        description="First minute partition (fixed; identical in every process).",
    )

    # Retention (the `prune_storage` job, daily at 03:17 UTC: each is reached up to a day late)
    run_retention_days: float = Field(
        default=7,
        ge=0,
        description="Dagster runs (with their events and check executions) older than this are deleted.",
    )
    failed_run_retention_days: float = Field(default=30, ge=0, description="Failed runs are kept this long.")
    raw_retention_days: float = Field(
        default=7,
        ge=1,
        description="Raw upstream rows (prices, rankings, fetches) are kept this long after fetching; at least a "
        "day, since a run merges the rows it fetched (a range run, for up to an hour or more) and a shorter "
        "retention could delete them before their minute is published.",
    )

    # API
    api_port: int = 6667
    api_default_limit: int = Field(default=100, ge=1)
    api_tolerance_minutes: int = Field(default=2, ge=0, description="How far back a missing minute may be served from.")
    api_ready_max_age_seconds: int = Field(
        default=180, ge=1, description="/readyz fails when the newest snapshot is older."
    )
    api_db_timeout_seconds: float = Field(default=2.0, gt=0, description="Database answer deadline before a 503.")
    api_stored_max_age_seconds: int = Field(
        default=60, ge=0, description="Cache lifetime of a stored past minute before revalidation (re-runs rewrite)."
    )
    api_retry_after_seconds: int = Field(
        default=30, ge=1, description="Retry-After on 202, 429 and 503 answers; the request sensor ticks every 30 s."
    )
    api_cache_entries: int = Field(default=2048, ge=0, description="Rendered bodies kept per process.")
    api_fast_path: bool = Field(
        default=True, description="Answer GET / for stored snapshots in the ASGI layer in front of FastAPI."
    )
    backfill_max_pending: int = Field(
        default=1000, ge=1, description="Open backfill requests before the API answers 429."
    )
    backfill_max_minutes_per_run: int = Field(default=120, ge=1, description="Adjacent requested minutes per run.")
    backfill_chunk_minutes: int = Field(
        default=120, ge=1, description="A range run works this many minutes at a time (bounded memory)."
    )
    backfill_max_runs_per_tick: int = Field(default=10, ge=1, description="Backfill runs the sensor starts per tick.")
    backfill_max_gap_minutes: int = Field(
        default=10, ge=0, description="Unrequested minutes between two requested ones that still share one run."
    )
    backfill_max_attempts: int = Field(default=5, ge=1, description="Runs a requested minute may get in all.")
    backfill_retry_backoff_seconds: int = Field(
        default=60, ge=0, description="Wait after a failed attempt before asking again queues another; doubles."
    )
    backfill_max_backoff_seconds: int = Field(
        default=300, ge=0, description="The doubling backoff after failed attempts stops growing at this."
    )
    heal_horizon_hours: float = Field(
        default=24,
        ge=0,
        description="Unpublished minutes this recent are requested by the system itself and retried until "
        "published (0: no healing); older ones on request or by range.",
    )
    backfill_max_runtime_seconds: int = Field(
        default=1800, ge=60, description="A request's run still running after this is canceled (dagster/max_runtime)."
    )

    # Logging: each service's dictConfig file; the LOG_* variables override what it says.
    api_log_config: Path = Field(default=Path("config/logging/api.yaml"), description="The API's logging file.")
    pipeline_log_config: Path = Field(
        default=Path("config/logging/pipeline.yaml"), description="The code location's and runs' logging file."
    )
    log_level: str | None = Field(default=None, description="Overrides the level of every configured logger.")
    log_file: Path | Literal["off"] | None = Field(
        default=None, description="Redirects the file handlers here ({pid} allowed); off drops them (the image)."
    )
    log_console: bool | None = Field(default=None, description="false drops the console handlers, true adds one.")

    # Local runs (`make run`, the dagster CLI): Dagster reads DAGSTER_HOME itself; it is here so
    # `make run` takes it from the same place as everything else.
    dagster_home: Path = Field(default=DATA_DIR / "dagster", description="Dagster instance directory for make run.")
    dagster_port: int = Field(default=3000, description="Port of the Dagster UI that make run starts.")

    @property
    def uses_emulator(self) -> bool:
        """Without both API keys there is no live upstream to call: the emulator serves both."""
        return not (self.cmc_api_key and self.cryptocompare_api_key)

    @model_validator(mode="after")
    def _point_upstreams_at_the_emulator(self) -> Settings:
        if self.uses_emulator:
            self.cmc_base_url = self.cryptocompare_data_api_url = self.cryptocompare_min_api_url = self.emulator_url
        return self

    @field_validator("dagster_home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else PROJECT_ROOT / value  # Dagster insists on an absolute path

    @field_validator("history_start")
    @classmethod
    def _minute_aligned_utc(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
        return value.replace(second=0, microsecond=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
