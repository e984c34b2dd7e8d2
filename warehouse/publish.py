"""Publication: what a served minute is (`Snapshot`, its `TopList`) and how the merge replaces it.

Everything here runs inside the merge's transaction (warehouse.merge), so a minute becomes
visible, with its provenance, exactly when its backfill request is settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from warehouse.database import chunks
from warehouse.ingest import FETCHED
from warehouse.schema import fetches, snapshots


@dataclass(frozen=True)
class Snapshot:
    minute: datetime
    row_count: int
    matched: int
    unmatched: int
    source: str
    price_source: str
    fetched_at: datetime
    created_at: datetime
    live: bool  # captured from the latest endpoints, not reconstructed


SNAPSHOT_FIELDS = [snapshots.c[name] for name in Snapshot.__dataclass_fields__]
TOP_LIST_FIELDS = [snapshots.c.cmc_ids, snapshots.c.prices_usd, snapshots.c.volumes_24h_usd]


@dataclass
class TopList:
    """One minute's served list in rank order, as `snapshots` stores it."""

    cmc_ids: list[int] = field(default_factory=list)
    prices_usd: list[float] = field(default_factory=list)
    volumes_24h_usd: list[float | None] = field(default_factory=list)

    def append(self, cmc_id: int, price_usd: float, volume_24h_usd: float | None) -> None:
        self.cmc_ids.append(cmc_id)
        self.prices_usd.append(price_usd)
        self.volumes_24h_usd.append(volume_24h_usd)


EMPTY_LIST = TopList()


def provenance(conn: Connection, start: datetime, end: datetime) -> dict[datetime, dict]:
    """Per minute with both datasets fetched: live or emulated, price provider, fetch time."""
    by_minute: dict[datetime, dict[str, Any]] = {}
    for f in conn.execute(select(fetches).where(fetches.c.minute >= start, fetches.c.minute < end)):
        by_minute.setdefault(f.minute, {})[f.dataset] = f
    return {
        minute: {
            "source": "emulated" if any(f.emulated for f in pair.values()) else "live",
            "price_source": pair["prices"].provider,
            "fetched_at": max(f.fetched_at for f in pair.values()),
            "live": all(f.mode == "latest" for f in pair.values()),
        }
        for minute, pair in by_minute.items()
        if set(FETCHED) <= pair.keys()
    }


def publish(conn: Connection, merged: list[Snapshot], lists: dict[datetime, TopList]) -> list[Snapshot]:
    """Replace the snapshots of the merged minutes, but leave a minute whose stored snapshot is
    already exactly this (its raw rows kept, merged again by a range): its `created_at`, and so
    the API's Last-Modified and every cache of it, stay as they were. Returns what is served now."""
    current = {}
    for minutes in chunks([s.minute for s in merged], 1000):
        rows = conn.execute(select(*SNAPSHOT_FIELDS, *TOP_LIST_FIELDS).where(snapshots.c.minute.in_(minutes)))
        current.update((row.minute, row) for row in rows)
    served, changed = [], []
    for snapshot in merged:
        row = {**vars(snapshot), **vars(lists.get(snapshot.minute, EMPTY_LIST))}
        stored = current.get(snapshot.minute)
        if stored is not None and all(stored._mapping[k] == v for k, v in row.items() if k != "created_at"):
            served.append(Snapshot(*stored[: len(SNAPSHOT_FIELDS)]))
        else:
            served.append(snapshot)
            changed.append(row)
    for rows in chunks(changed, 1000):
        conn.execute(delete(snapshots).where(snapshots.c.minute.in_([row["minute"] for row in rows])))
        conn.execute(insert(snapshots), rows)
    return served


def refuse(conn: Connection, blocked: dict[datetime, list[str]]) -> None:
    """Mark the captures of minutes the blocking checks refused: a refused capture is fetched again,
    never kept (warehouse.ingest.Ingest.captured_live)."""
    for minute, failed in blocked.items():
        conn.execute(update(fetches).where(fetches.c.minute == minute).values(refused=", ".join(failed)))
