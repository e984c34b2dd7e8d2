"""The reads that serve published minutes: the API's `GET /` and `/readyz`, and every caller that
asks what a minute serves.

A lookup is one primary-key probe on `toplist_snapshots` (the served list is packed in the row)
plus names from a per-process memo, on one pooled connection outside a transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from warehouse.database import Database, utcnow
from warehouse.publish import SNAPSHOT_FIELDS, TOP_LIST_FIELDS, Snapshot
from warehouse.schema import ONE_MINUTE, assets, snapshots


@dataclass(frozen=True)
class Served:
    """A snapshot and its served rows by rank: the answer to a lookup."""

    snapshot: Snapshot
    rows: list[dict]


class AssetNames:
    """Symbol and name per CMC id for the served rows, kept per process.

    Asking the database for a minute's names cost more than the minute itself (planning and
    probes), so they are read once, unknown ids are fetched when they appear, and every name is
    read again each `refresh`: a rename is served at most `refresh` after it commits. Reading
    only rows updated since the last look would miss a rename whose transaction commits after
    that look with an older `updated_at` (a long range write), and keep the old name forever."""

    def __init__(self, refresh: timedelta = timedelta(seconds=60)) -> None:
        self.refresh = refresh
        self._names: dict[int, tuple[str, str]] = {}
        self._checked: datetime | None = None
        self._lock = threading.Lock()

    def of(self, conn, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        with self._lock:
            now = utcnow()
            if self._checked is None or now - self._checked >= self.refresh:
                self._remember(conn.execute(select(assets.c.cmc_id, assets.c.symbol, assets.c.name)))
                self._checked = now
            missing = [cmc_id for cmc_id in ids if cmc_id not in self._names]
            if missing:
                query = select(assets.c.cmc_id, assets.c.symbol, assets.c.name).where(assets.c.cmc_id.in_(missing))
                self._remember(conn.execute(query))
            return self._names

    def _remember(self, rows) -> None:
        self._names.update((cmc_id, (symbol, name)) for cmc_id, symbol, name in rows)


class Serving(Database):
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        super().__init__(url, **engine_kwargs)
        self._names = AssetNames()

    def served_at_or_before(self, moment: datetime, tolerance: timedelta, limit: int) -> Served | None:
        """The newest snapshot in (moment - tolerance, moment] with its first `limit` rows by rank.

        What `GET /` asks of the database: one index lookup, one statement, one pooled connection."""
        query = (
            select(*SNAPSHOT_FIELDS, *TOP_LIST_FIELDS)
            .where(snapshots.c.minute <= moment, snapshots.c.minute > moment - tolerance)
            .order_by(snapshots.c.minute.desc())
            .limit(1)
        )

        def lookup(conn) -> Served | None:
            row = conn.execute(query).first()
            if row is None:
                return None
            snapshot = Snapshot(*row[: len(SNAPSHOT_FIELDS)])
            ids, prices_usd, volumes = (column[:limit] for column in row[len(SNAPSHOT_FIELDS) :])
            names = self._names.of(conn, ids)
            rows = [
                {
                    "rank": rank,
                    "symbol": names[cmc_id][0],
                    "name": names[cmc_id][1],
                    "cmc_id": cmc_id,
                    "price_usd": price,
                    "volume_24h_usd": volume,
                }
                for rank, (cmc_id, price, volume) in enumerate(zip(ids, prices_usd, volumes, strict=True), start=1)
            ]
            return Served(snapshot, rows)

        return self.read(lookup)

    def snapshot_at_or_before(self, moment: datetime, tolerance: timedelta) -> Snapshot | None:
        """The newest snapshot in (moment - tolerance, moment]."""
        served = self.served_at_or_before(moment, tolerance, 0)
        return served.snapshot if served else None

    def snapshot_rows(self, minute: datetime, limit: int) -> list[dict]:
        """The served rows of the snapshot of `minute` by rank (none if it is not stored)."""
        served = self.served_at_or_before(minute, ONE_MINUTE, limit)
        return served.rows if served and served.snapshot.minute == minute else []

    def latest_snapshot(self) -> Snapshot | None:
        query = select(*SNAPSHOT_FIELDS).order_by(snapshots.c.minute.desc()).limit(1)
        row = self.read(lambda conn: conn.execute(query).first())
        return Snapshot(*row) if row else None
