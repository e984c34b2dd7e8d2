"""The one settings module: every knob comes from the environment (or an optional `.env`).

Both the pipeline and the API read it; it imports neither Dagster nor FastAPI, so the API
stays light. Secrets are `SecretStr` so they never print in a repr or a log line.

Every variable, its default and its meaning: each field's description, printed as a table by
`scripts.settings_doc` into docs/settings.md, which is included here.

.. include:: ../docs/settings.md
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
        description="warehouse URL (`postgresql+psycopg://user:pw@host/db` in production)",
    )
    history_dir: Path = Field(
        default=DATA_DIR / "history",
        description="folder of the day files, one Parquet file per UTC day of the history ([History files]"
        "(history-files.md)); a local folder (a mounted volume): object-store URLs are not supported yet",
    )

    # Upstreams
    cmc_api_key: SecretStr | None = Field(
        default=None, description="CoinMarketCap Pro key (`make run` uses the emulator unless both keys are set)"
    )
    cryptocompare_api_key: SecretStr | None = Field(default=None, description="CryptoCompare / CoinDesk Data key")
    emulator_url: str = Field(
        default=LOCAL_EMULATOR_URL,
        description="base URL of the emulator (the one `make run` starts), used for both upstreams unless both "
        "API keys are set",
    )
    cmc_base_url: str = Field(default=CMC_LIVE_URL, description="CMC host (`make run` points it at the emulator)")
    cryptocompare_data_api_url: str = Field(
        default=CRYPTOCOMPARE_DATA_API_LIVE_URL, description="data-api host (toplist)"
    )
    cryptocompare_min_api_url: str = Field(default=CRYPTOCOMPARE_MIN_API_LIVE_URL, description="min-api host (history)")
    upstream_timeout_seconds: float = Field(default=10.0, gt=0, description="per-request timeout")
    upstream_max_attempts: int = Field(default=4, ge=1, description="attempts per request (transient errors only)")
    upstream_backoff_seconds: float = Field(
        default=0.5, ge=0, description="exponential backoff base (a 429's `Retry-After` wins)"
    )
    upstream_concurrency: int = Field(
        default=4, ge=1, le=32, description="concurrent requests per upstream (pages, history series)"
    )
    cryptocompare_page_size: int = Field(default=100, ge=10, le=100, description="toplist page size (10..100)")
    live_price_source: str = Field(
        default="cmc_quotes_latest",
        description="the source file (without `.yaml`) of live minutes' prices, asked for the ranked CMC ids: by "
        "id (`batch`), or looked up in a list (`lookup`, e.g. `cmc_listings_latest`)",
    )
    ranking_source: str = Field(default="cc_top_list", description="the source file of live minutes' ranking")
    sources_dir: Path | None = Field(
        default=None,
        description="a folder of extra source files, validated with the shipped ones when the code location "
        "loads; a file there adds a source or replaces the shipped one of its name",
    )

    # Pipeline
    toplist_depth: int = Field(default=200, ge=1, description="rows kept per snapshot; the API's maximum `limit`")
    ranking_depth: int = Field(default=250, ge=1, description="ranked assets fetched per minute (some go unpriced)")
    max_quote_age_minutes: int = Field(
        default=10,
        ge=0,
        description="a past minute takes a CMC quote at most this old; older is unmatched and counted as rejected",
    )
    live_window_minutes: int = Field(
        default=3, ge=1, description="younger minutes use the latest endpoints, older ones the historical"
    )
    historical_price_source: Literal["coinmarketcap", "cryptocompare"] = Field(
        default="coinmarketcap",
        description="past minutes' prices: CMC `quotes/historical` (paid plans) or `cryptocompare` (the closes of "
        "the bars already fetched for the ranking); the snapshot's `price_source` says which",
    )
    match_rate_threshold: float = Field(
        default=0.9, ge=0, le=1, description="top-100 match rate below this makes the check warn"
    )
    row_count_threshold: float = Field(
        default=0.9, ge=0, le=1, description="a snapshot needs `TOPLIST_DEPTH ×` this many rows"
    )
    history_start: datetime = Field(
        default=datetime(2026, 11, 1, tzinfo=UTC),
        description="first minute partition; fixed, the same in every process",
    )

    # Retention (the `prune_storage` job, daily at 03:17 UTC: each is reached up to a day late)
    run_retention_days: float = Field(
        default=7,
        ge=0,
        description="the `prune_storage` job deletes finished Dagster runs older than this, with their events and "
        "check executions; it runs daily (03:17 UTC), so a run goes up to a day past its retention",
    )
    failed_run_retention_days: float = Field(
        default=30, ge=0, description="failed runs are kept this long (up to a day longer)"
    )
    raw_retention_days: float = Field(
        default=7,
        ge=1,
        description="raw upstream rows (`prices`, `rankings`, `fetches`) are kept this long after their fetch (up "
        "to a day longer: pruning is daily); at least 1, so a running range's rows are merged before they can go; "
        "served snapshots are kept forever",
    )

    # API
    api_port: int = Field(default=6667, description="API port for `make run`")
    api_default_limit: int = Field(default=100, ge=1, description="`limit` when none is given")
    api_tolerance_minutes: int = Field(
        default=2, ge=0, description="how many minutes back a missing minute may be served from"
    )
    api_ready_max_age_seconds: int = Field(
        default=180, ge=1, description="`/readyz` fails when the newest snapshot is older"
    )
    api_db_timeout_seconds: float = Field(
        default=2.0, gt=0, description="database deadline before a 503 (connect, pool and statement)"
    )
    api_stored_max_age_seconds: int = Field(
        default=60,
        ge=0,
        description="how long a cache may keep a stored past minute before revalidating (a re-run can rewrite it)",
    )
    api_retry_after_seconds: int = Field(
        default=30,
        ge=1,
        description="`Retry-After` on 202, 429 and 503 answers (the request sensor ticks every 30 s)",
    )
    api_cache_entries: int = Field(default=2048, ge=0, description="rendered bodies cached per API process")
    api_fast_path: bool = Field(
        default=True,
        description="answer `GET /` for stored snapshots in the ASGI layer in front of FastAPI (`false`: every "
        "request goes through FastAPI; the answers are byte-identical)",
    )
    backfill_max_pending: int = Field(
        default=1000, ge=1, description="open backfill requests before the API answers 429"
    )
    backfill_max_minutes_per_run: int = Field(
        default=120, ge=1, description="adjacent requested minutes launched as one range run"
    )
    backfill_chunk_minutes: int = Field(
        default=120,
        ge=1,
        description="a range run fetches, stores (one transaction each) and merges this many minutes at a time: "
        "its memory does not grow with the range",
    )
    backfill_max_runs_per_tick: int = Field(
        default=10, ge=1, description="backfill runs the sensor starts per evaluation"
    )
    backfill_max_gap_minutes: int = Field(
        default=10,
        ge=0,
        description="unrequested minutes between two requested ones that still share one run (stored too)",
    )
    backfill_max_attempts: int = Field(default=5, ge=1, description="runs a requested minute may get in all")
    backfill_retry_backoff_seconds: int = Field(
        default=60,
        ge=0,
        description="after a failed attempt, asking again queues another only after this long (doubling per attempt)",
    )
    backfill_max_backoff_seconds: int = Field(
        default=300, ge=0, description="the doubling backoff between attempts stops growing at this"
    )
    heal_horizon_hours: float = Field(
        default=24,
        ge=0,
        description="unpublished minutes this recent (past their live window, from the first live capture) are "
        "requested by the system itself and retried until published; `0` turns healing off; older ones on "
        "request or by range",
    )
    backfill_max_runtime_seconds: int = Field(
        default=1800,
        ge=60,
        description="a backfill request's run still running this long after it started is ended by Dagster's run "
        "monitoring (`dagster/max_runtime`)",
    )

    # Logging: each service's dictConfig file; the LOG_* variables override what it says.
    api_log_config: Path = Field(default=Path("config/logging/api.yaml"), description="the API's logging file")
    pipeline_log_config: Path = Field(
        default=Path("config/logging/pipeline.yaml"), description="the code location's and runs' logging file"
    )
    log_level: str | None = Field(
        default=None,
        description="overrides the level of every logger the service's file configures (unset: the file's levels)",
    )
    log_file: Path | Literal["off"] | None = Field(
        default=None,
        description="redirects the file handlers here (`{pid}` becomes the process id); `off` drops them, in every "
        "service (the emulator too): the image and compose set it, so a container logs to its console only "
        "(unset: the file's handlers)",
    )
    log_console: bool | None = Field(
        default=None,
        description="`false` drops the console handlers, `true` adds one where the file has none (unset: the "
        "file's handlers)",
    )

    # Local runs (`make run`, the dagster CLI): Dagster reads DAGSTER_HOME itself; it is here so
    # `make run` takes it from the same place as everything else.
    dagster_home: Path = Field(
        default=DATA_DIR / "dagster",
        description="Dagster instance of `make run` and of the dagster CLI in the project root (SQLite, configured "
        "by `deploy/dagster.local.yaml`; `make run` records it in `.env`); production uses `deploy/dagster.yaml`",
    )
    dagster_port: int = Field(default=3000, description="port of the Dagster UI `make run` starts")

    @property
    def uses_emulator(self) -> bool:
        """Without both API keys there is no live upstream to call: the emulator serves both."""
        return not (self.cmc_api_key and self.cryptocompare_api_key)

    @model_validator(mode="after")
    def _point_upstreams_at_the_emulator(self) -> Settings:
        if self.uses_emulator:
            self.cmc_base_url = self.cryptocompare_data_api_url = self.cryptocompare_min_api_url = self.emulator_url
        return self

    @field_validator("dagster_home", "history_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Relative to the project, whatever a process's working directory (Dagster insists on an absolute home).
        return value if value.is_absolute() else PROJECT_ROOT / value

    @field_validator("history_dir", mode="before")
    @classmethod
    def _local_folder(cls, value: str | Path) -> str | Path:
        if "://" in str(value):
            raise ValueError(
                f"HISTORY_DIR={value}: object stores (s3://, gs://, …) are not supported yet, only a local folder "
                "(a mounted volume works); docs/history-files.md says how the same layout is read from one"
            )
        return value

    @field_validator("history_start")
    @classmethod
    def _minute_aligned_utc(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
        return value.replace(second=0, microsecond=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
