"""HTTP caching of served snapshots: how long an answer may be kept (Cache-Control) and its revalidation (ETag)."""

from __future__ import annotations

from datetime import datetime

from api.moments import minute_of
from common.settings import Settings
from warehouse.publish import Snapshot


def cache_control(snapshot: Snapshot, minute: datetime, is_now: bool, now: datetime, settings: Settings) -> str:
    """The caching policy of a served snapshot (the one place that decides it).

    - "now" from the current minute's snapshot: until the next minute starts (it cannot be
      replaced before then);
    - a stand-in (an earlier minute served for one not stored yet, "now" in the first seconds of
      a minute included): `no-cache`, so a cache revalidates with the ETag and picks up the
      requested minute as soon as it is published;
    - a stored past minute: `API_STORED_MAX_AGE_SECONDS`, then revalidation, since a re-run or
      a range backfill can rewrite it (its ETag then changes).
    """
    if snapshot.minute != minute or (is_now and minute_of(now) != minute):  # "now" resolved in the minute before
        return "public, no-cache"
    if is_now:
        return f"public, max-age={max(1, 60 - now.second)}"
    return f"public, max-age={settings.api_stored_max_age_seconds}, must-revalidate"


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or any listed tag by weak comparison."""
    if if_none_match == etag:  # what a cache revalidating its one copy sends: no parsing
        return True
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags
