"""Which minutes are owed: due, in the healing horizon, and not published.

The request sensor heals them (each becomes a request of origin `healer`); the API reports them
(`/readyz`, `/metrics`). A minute is due once the live schedule had its chance: its live window
(LIVE_WINDOW_MINUTES) and a grace for the live run's retries are over. The horizon reaches back
HEAL_HORIZON_HOURS, never before HISTORY_START (older minutes cannot be backfilled) nor before the
first minute ever captured live (a new installation owes nothing from before it ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from warehouse.database import Database
from warehouse.schema import ONE_MINUTE, snapshots

# After its live window, how long a minute's live run may still take (its step retries) before the
# minute counts as owed: the healer must not race a live run that is about to store it.
LIVE_RUN_GRACE = timedelta(minutes=2)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class HealingHorizon:
    """The window of minutes the system itself keeps complete."""

    horizon: timedelta
    history_start: datetime
    live_window: timedelta

    @classmethod
    def from_settings(cls, settings) -> HealingHorizon:
        return cls(
            horizon=timedelta(hours=settings.heal_horizon_hours),
            history_start=settings.history_start,
            live_window=timedelta(minutes=settings.live_window_minutes),
        )

    def due_before(self, now: datetime) -> datetime:
        """Minutes before this are past their live window and its grace: the live run is over."""
        return minute_of(now - self.live_window - LIVE_RUN_GRACE) + ONE_MINUTE

    def window(self, now: datetime, first_live: datetime | None) -> tuple[datetime, datetime] | None:
        """[start, end) of the minutes owed if unpublished, or None (nothing captured live yet)."""
        if first_live is None:
            return None
        start = max(minute_of(now - self.horizon), self.history_start, first_live)
        end = self.due_before(now)
        return (start, end) if start < end else None

    def owed(self, store: Database, now: datetime) -> list[datetime]:
        """The minutes of the window that have no snapshot, oldest first."""
        window = self.window(now, first_live_minute(store))
        return unpublished(store, *window) if window else []


def first_live_minute(store: Database) -> datetime | None:
    """The first minute ever captured live (a partial index: one probe)."""
    query = select(func.min(snapshots.c.minute)).where(snapshots.c.live)
    return store.read(lambda conn: conn.execute(query).scalar())


def unpublished(store: Database, start: datetime, end: datetime) -> list[datetime]:
    """The minutes in [start, end) without a snapshot, oldest first: a count when none is missing
    (the usual case), else the stored minutes of the window (one index range, at most a horizon's)."""
    expected = (end - start) // ONE_MINUTE
    in_window = (snapshots.c.minute >= start) & (snapshots.c.minute < end)

    def read(conn) -> list[datetime]:
        if conn.execute(select(func.count()).where(in_window)).scalar_one() == expected:
            return []
        stored = set(conn.execute(select(snapshots.c.minute).where(in_window)).scalars())
        return [minute for i in range(expected) if (minute := start + i * ONE_MINUTE) not in stored]

    return store.read(read)
