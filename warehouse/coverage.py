"""Which minutes are owed: due, in the healing horizon, and not published.

The request sensor heals them (each becomes a request of origin `healer`); the API reports them
(`/readyz`, `/metrics`). A minute is due once the live schedule had its chance: its live window
(LIVE_WINDOW_MINUTES) and a grace for the live run's retries are over. The horizon reaches back
HEAL_HORIZON_HOURS, never before HISTORY_START (older minutes cannot be backfilled) nor before the
first minute ever captured live (a new installation owes nothing from before it ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Interval, case, func, literal, select

from warehouse.database import Database
from warehouse.schema import ONE_MINUTE, snapshots

# After its live window, how long a minute's live run may still take (its step retries) before the
# minute counts as owed: the healer must not race a live run that is about to store it.
LIVE_RUN_GRACE = timedelta(minutes=2)
ONE_DAY = timedelta(days=1)


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


@dataclass(frozen=True)
class DayCoverage:
    """One UTC day's share of a coverage report: expected minutes (those of the range in this day)
    and, of the stored ones, how many were captured live and how many came from the emulator."""

    day: date
    expected: int
    stored: int
    live: int
    emulated: int


@dataclass(frozen=True)
class Coverage:
    """Which minutes of [start, end) are stored, per day, and the missing ones merged into ranges."""

    start: datetime
    end: datetime
    days: list[DayCoverage]
    missing: list[tuple[datetime, datetime]]  # [first, end) of each run of missing minutes, oldest first


def coverage(store: Database, start: datetime, end: datetime) -> Coverage:
    """The coverage of the minute-aligned range [start, end) from the minute index alone (its rows
    hold up to 4 KB each): stored, live and emulated minutes per day in one aggregate query, then
    the gaps between consecutive stored minutes (a window function) only from the first to the
    last incomplete day, so a complete year costs one index scan and holes cost their days."""
    days = stored_per_day(store, start, end)
    incomplete = [day for day in days if day.stored < day.expected]
    if not incomplete:
        return Coverage(start, end, days, [])
    first_day = max(start, datetime.combine(incomplete[0].day, time.min, UTC))
    last_day = min(end, datetime.combine(incomplete[-1].day, time.min, UTC) + ONE_DAY)
    return Coverage(start, end, days, missing_ranges(store, first_day, last_day))


def stored_per_day(store: Database, start: datetime, end: datetime) -> list[DayCoverage]:
    def read(conn) -> list:
        day = day_of(snapshots.c.minute, conn.dialect.name).label("day")
        per_day = (
            select(
                day,
                func.count(),
                func.sum(case((snapshots.c.live, 1), else_=0)),
                func.sum(case((snapshots.c.source == "emulated", 1), else_=0)),
            )
            .where(snapshots.c.minute >= start, snapshots.c.minute < end)
            .group_by(day)
        )
        return conn.execute(per_day).all()

    stored = {as_date(row[0]): row[1:] for row in store.read(read)}
    days = []
    for day_start in days_in(start, end):
        expected = (min(day_start + ONE_DAY, end) - max(day_start, start)) // ONE_MINUTE
        count, live, emulated = stored.get(day_start.date(), (0, 0, 0))
        days.append(DayCoverage(day_start.date(), expected, count, int(live), int(emulated)))
    return days


def missing_ranges(store: Database, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[from, to) of each run of missing minutes in [start, end): before the first stored one,
    between consecutive stored ones, after the last."""
    in_range = (snapshots.c.minute >= start) & (snapshots.c.minute < end)

    def read(conn) -> tuple[list, tuple]:
        ordered = (
            select(snapshots.c.minute, func.lag(snapshots.c.minute).over(order_by=snapshots.c.minute).label("previous"))
            .where(in_range)
            .subquery()
        )
        gaps = select(ordered.c.previous, ordered.c.minute).where(
            more_than_a_minute_apart(ordered.c.previous, ordered.c.minute, conn.dialect.name)
        )
        bounds = select(func.min(snapshots.c.minute), func.max(snapshots.c.minute)).where(in_range)
        return conn.execute(gaps.order_by(ordered.c.minute)).all(), conn.execute(bounds).one()

    gaps, (first, last) = store.read(read)
    if first is None:
        return [(start, end)]
    first, last = as_utc(first), as_utc(last)
    ranges = [(start, first)] if first > start else []
    ranges += [(as_utc(previous) + ONE_MINUTE, as_utc(following)) for previous, following in gaps]
    if last + ONE_MINUTE < end:
        ranges.append((last + ONE_MINUTE, end))
    return ranges


def days_in(start: datetime, end: datetime) -> list[datetime]:
    """The UTC midnights of the days [start, end) touches."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < end:
        days.append(day)
        day += ONE_DAY
    return days


def day_of(column, dialect: str):
    """The UTC day of a stored minute: naive UTC text on SQLite, timestamptz on Postgres."""
    return func.substr(column, 1, 10) if dialect == "sqlite" else func.date(func.timezone("UTC", column))


def more_than_a_minute_apart(earlier, later, dialect: str):
    """`later` is more than a minute after `earlier`, in SQL (SQLite keeps naive UTC text: julianday)."""
    if dialect == "sqlite":
        return func.julianday(later) - func.julianday(earlier) > 1.5 / 1440
    return later - earlier > literal(ONE_MINUTE, Interval())


def as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def as_utc(value) -> datetime:
    """An aggregate's datetime (min, max, lag lose the column's type on SQLite: naive text) as aware UTC."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
