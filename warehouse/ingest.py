"""Raw upstream rows: each minute's prices and rankings as fetched, with their provenance (`fetches`).

Writing a range of minutes replaces it in one transaction that alone writes those minutes, so a
re-run gives identical rows. The reads here are those the pipeline makes of the raw rows before
it fetches (what was captured live, what is fetched already, the nearest stored ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, or_, select

from warehouse.database import Database, chunks, dialect_insert, utcnow
from warehouse.schema import ONE_MINUTE, assets, fetches, prices, rankings, snapshots

FETCHED = ("prices", "rankings")  # the datasets a snapshot is merged from, one `fetches` row each per minute


@dataclass(frozen=True)
class Fetch:
    """Provenance of one dataset for one minute."""

    minute: datetime
    dataset: str  # prices | rankings
    provider: str
    emulated: bool
    mode: str  # latest | historical
    records: int
    rejected: int
    fetched_at: datetime


def window_except(column, start: datetime, end: datetime, excluded: Sequence[datetime]):
    """The minutes in [start, end) but the excluded ones (those a write keeps as they are)."""
    window = and_(column >= start, column < end)
    return and_(window, column.not_in(excluded)) if excluded else window


class Ingest(Database):
    """The writes of raw rows, and the pipeline's reads of them."""

    def replace_prices(
        self,
        start: datetime,
        end: datetime,
        rows: Sequence[dict],
        fetch_rows: Sequence[Fetch],
        keep: Sequence[datetime] = (),
    ) -> None:
        """Replace prices of minutes in [start, end) but those in `keep`. Rows carry symbol and name
        for the asset dimension."""
        fact_columns = [c.name for c in prices.columns]
        rows = first_of_each(rows, ("minute", "cmc_id"))  # concurrent upstream pages can repeat an id
        latest_names = {row["cmc_id"]: row for row in rows}  # later minutes win
        now = utcnow()
        with self.writing(start, end) as conn:
            replace(conn, prices, start, end, [{c: r.get(c) for c in fact_columns} for r in rows], keep)
            fetched = [vars(f) for f in fetch_rows]
            replace(conn, fetches, start, end, fetched, keep, fetches.c.dataset == "prices")
            dimension = [
                {"cmc_id": cmc_id, "symbol": r["symbol"], "name": r["name"], "updated_at": now}
                for cmc_id, r in sorted(latest_names.items())
            ]
            if dimension:
                conn.execute(upsert(self.engine, assets, ["cmc_id"], ["symbol", "name"]), dimension)

    def replace_rankings(
        self,
        start: datetime,
        end: datetime,
        rows: Sequence[dict],
        fetch_rows: Sequence[Fetch],
        keep: Sequence[datetime] = (),
    ) -> None:
        """Replace rankings of minutes in [start, end) but those in `keep`."""
        with self.writing(start, end) as conn:
            replace(conn, rankings, start, end, rows, keep)
            fetched = [vars(f) for f in fetch_rows]
            replace(conn, fetches, start, end, fetched, keep, fetches.c.dataset == "rankings")

    def captured_live(self, start: datetime, end: datetime) -> list[datetime]:
        """The minutes in [start, end) captured live: a snapshot from the latest endpoints (its raw
        rows may be pruned since), or both datasets' raw rows fetched from them. A reconstruction
        would differ. A minute with one dataset only from them (the other upstream failed for the
        live window), or whose live capture the blocking checks refused, has nothing live to serve:
        keeping it would leave it without a snapshot for ever."""
        in_window = and_(snapshots.c.minute >= start, snapshots.c.minute < end)
        latest = and_(
            fetches.c.mode == "latest", fetches.c.refused.is_(None), fetches.c.minute >= start, fetches.c.minute < end
        )
        both_latest = (
            select(fetches.c.minute).where(latest).group_by(fetches.c.minute).having(func.count() == len(FETCHED))
        )
        query = select(snapshots.c.minute).where(in_window, snapshots.c.live).union(both_latest)
        with self.engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def fetched_since(self, start: datetime, end: datetime, dataset: str, since: datetime) -> bool:
        """Whether every minute in [start, end) has `dataset` stored by a fetch at or after `since`."""
        query = select(func.count()).where(
            fetches.c.dataset == dataset,
            fetches.c.minute >= start,
            fetches.c.minute < end,
            fetches.c.fetched_at >= since,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one() == (end - start) // ONE_MINUTE

    def ranked_near(self, minute: datetime, limit: int, fetched_before: datetime | None = None) -> list[dict]:
        """The stored ranking nearest to `minute`, best rank first (candidates for a past minute);
        with `fetched_before`, among the rankings fetched before then only. Searched in `fetches`
        (one row a minute, its primary key led by the minute), not in the rankings themselves."""
        stored = and_(fetches.c.dataset == "rankings", fetches.c.records > 0)
        if fetched_before is not None:
            stored = and_(stored, fetches.c.fetched_at < fetched_before)
        before = select(func.max(fetches.c.minute)).where(stored, fetches.c.minute <= minute).scalar_subquery()
        after = select(func.min(fetches.c.minute)).where(stored, fetches.c.minute > minute).scalar_subquery()
        with self.engine.connect() as conn:
            earlier, later = conn.execute(select(before, after)).one()
            if earlier is None and later is None:
                return []
            nearest = min((m for m in (earlier, later) if m is not None), key=lambda m: abs(m - minute))
            query = select(rankings).where(rankings.c.minute == nearest).order_by(rankings.c.rank).limit(limit)
            return [dict(row._mapping) for row in conn.execute(query)]


def replace(
    conn, table, start: datetime, end: datetime, rows: Sequence[dict], keep: Sequence[datetime], *scope
) -> None:
    """Delete the window's rows of `table` (those matching `scope`) but the minutes in `keep`, then
    insert the `rows` of the other minutes: what was kept is neither deleted nor duplicated."""
    conn.execute(delete(table).where(*scope, window_except(table.c.minute, start, end, keep)))
    kept = set(keep)
    for chunk in chunks([row for row in rows if row["minute"] not in kept], 5000):
        conn.execute(insert(table), chunk)


def upsert(engine, table, keys: list[str], changed: list[str]):
    """INSERT … ON CONFLICT DO UPDATE, rewriting a row only when a `changed` column differs.

    Executed with a list of rows (executemany): compiled once, not once per row like a multi-row
    VALUES, which costs several times the CPU for a minute's assets."""
    statement = dialect_insert(engine, table)
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={c: statement.excluded[c] for c in [*changed, "updated_at"]},
        where=or_(*(table.c[c] != statement.excluded[c] for c in changed)),
    )


def first_of_each(rows: Sequence[dict], key: tuple[str, ...]) -> list[dict]:
    """`rows` without repeats of `key`, the first occurrence kept."""
    seen: dict[tuple, dict] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in key), row)
    return list(seen.values())
