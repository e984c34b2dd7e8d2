"""Retention of the raw upstream rows: pruned once past RAW_RETENTION_DAYS; served snapshots are kept forever."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, select

from warehouse.database import LOCK_MINUTES, Database
from warehouse.ingest import FETCHED
from warehouse.schema import fetches, prices, rankings


class Retention(Database):
    def prune_raw(self, fetched_before: datetime) -> dict[str, int]:
        """Delete the raw upstream rows (`prices`, `rankings`, `fetches`) fetched before the
        cutoff, one clock hour of minutes per transaction; returns the rows deleted per table.

        Retention counts from the fetch, not from the minute: a past minute backfilled today
        stays auditable as long as a live one. Each batch holds the write lock of its minutes
        (on SQLite the whole database's) and re-reads what is old under it, so a minute being
        fetched again is never emptied, and a live write waits for one hour's rows, not for a
        day's. Served snapshots are never touched."""
        deleted = dict.fromkeys(("prices", "rankings", "fetches"), 0)
        old = and_(fetches.c.fetched_at < fetched_before, fetches.c.dataset.in_(FETCHED))  # each pass deletes them
        while True:
            with self.engine.connect() as conn:
                first = conn.execute(select(func.min(fetches.c.minute)).where(old)).scalar()
            if first is None:
                return deleted
            start = first.replace(minute=0, second=0, microsecond=0)
            end = start + timedelta(minutes=LOCK_MINUTES)  # one lock: what turned old since is read under it
            with self.writing(start, end) as conn:
                in_hour = and_(fetches.c.minute >= start, fetches.c.minute < end)
                found = conn.execute(select(fetches.c.minute, fetches.c.dataset).where(old, in_hour))
                found = found.all()
                for table in (prices, rankings):
                    minutes = [minute for minute, dataset in found if dataset == table.name]
                    if minutes:
                        deleted[table.name] += conn.execute(delete(table).where(table.c.minute.in_(minutes))).rowcount
                        fetched = delete(fetches).where(fetches.c.dataset == table.name, fetches.c.minute.in_(minutes))
                        deleted["fetches"] += conn.execute(fetched).rowcount
