"""The bodies the API answers with, as pydantic models: the OpenAPI document is made from them."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class ToplistRow(BaseModel):
    rank: int
    symbol: str
    name: str
    cmc_id: int
    price_usd: float
    volume_24h_usd: float | None


class Toplist(BaseModel):
    snapshot_time: datetime = Field(description="The minute this snapshot holds (UTC).")
    requested_time: datetime = Field(description="The minute that was asked for (UTC).")
    count: int
    source: str = Field(description="`live` upstream data, or `emulated` (the local emulator).")
    price_source: str
    data: list[ToplistRow]


class BackfillStatus(BaseModel):
    minute: datetime
    status: str = Field(
        description="requested | launched | succeeded | failed (see docs/backfills.md#the-request-lifecycle)"
    )
    detail: str = Field(description="What happens next, in words.")
    requested_at: datetime
    updated_at: datetime
    run_id: str | None = Field(default=None, description="The Dagster run of the current attempt, once created.")
    error: str | None = None
    permanent: bool = Field(
        default=False, description="Failed for a reason a retry cannot fix (the upstream plan, an API key)."
    )
    attempts: int = Field(
        description="Runs made for this minute so far (the attempt after a permanent failure starts a new count)."
    )
    max_attempts: int
    next_attempt_at: datetime | None = Field(
        default=None, description="Failed: from when asking for the minute again queues another attempt."
    )
    snapshot_url: str | None = Field(default=None, description="Where the snapshot is served once it succeeded.")
    origin: str = Field(
        description="Why the minute is owed: asked (answered 202), stand-in (answered from an earlier minute) or "
        "healer (found unpublished in the last HEAL_HORIZON_HOURS)."
    )


class Readiness(BaseModel):
    status: str = "ready"
    latest_snapshot: datetime
    owed_minutes: int = Field(
        description="Minutes of the healing horizon (HEAL_HORIZON_HOURS) past their live window and not published "
        "yet: each is requested and retried until it is (see /backfills/{minute})."
    )
    oldest_owed_minute: datetime | None = None


class MissingRange(BaseModel):
    start: datetime = Field(description="The first missing minute (UTC).")
    end: datetime = Field(description="The first minute after it that is stored, or the end of the range.")
    minutes: int


class CoverageCounts(BaseModel):
    expected_minutes: int = Field(description="Minutes in the range (in this day).")
    stored_minutes: int
    missing_minutes: int
    live_minutes: int = Field(description="Stored minutes captured live, from the upstreams' latest endpoints.")
    historical_minutes: int = Field(
        description="Stored minutes fetched afterwards from the historical endpoints (a backfill, the healer)."
    )
    emulated_minutes: int = Field(description="Stored minutes whose data came from the emulator, not the upstreams.")
    complete: bool = Field(description="No minute is missing.")


class CoverageDay(CoverageCounts):
    day: date = Field(description="The UTC day.")


class Coverage(CoverageCounts):
    start: datetime = Field(description="The first minute of the range (UTC).")
    end: datetime = Field(description="The end of the range, exclusive (UTC).")
    missing_ranges: list[MissingRange] = Field(description="Every run of missing minutes, oldest first.")
    missing_ranges_truncated: bool = Field(
        description="More runs of missing minutes than one answer lists: the first ones are shown; ask for a "
        "shorter range (from the end of the last one shown) for the rest."
    )
    days: list[CoverageDay]
