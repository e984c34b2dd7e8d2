"""The merge: rankings joined with prices on the CMC id, judged, and published per minute.

The join and the renumbering are SQL (the queries below); the blocking checks judge what the
merge would serve (warehouse.quality); the minutes that pass are published (warehouse.publish)
and their backfill requests settled (warehouse.requests), all in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Select, Subquery, and_, case, func, select

from warehouse.database import Database, utcnow
from warehouse.ingest import window_except
from warehouse.publish import Snapshot, TopList, provenance, publish, refuse
from warehouse.quality import MinuteQuality
from warehouse.requests import settle
from warehouse.schema import prices, rankings

# A ranking row and its price: the same minute, the same CMC id (never the symbol).
PRICED_RANKING = and_(prices.c.minute == rankings.c.minute, prices.c.cmc_id == rankings.c.cmc_id)


@dataclass(frozen=True)
class Merge:
    """What a merge stored, and what it refused to publish (minute -> failed blocking checks)."""

    stored: list[Snapshot]
    quality: dict[datetime, MinuteQuality]
    blocked: dict[datetime, list[str]] = field(default_factory=dict)


def blocked_error(minute: datetime, failed_checks: Sequence[str]) -> str:
    """The error a request records when its minute failed blocking checks, with the way out."""
    key = minute.strftime("%Y-%m-%d-%H:%M")
    return (
        f"blocked by failed checks: {', '.join(failed_checks)}. The capture is refused, never kept: the minute is "
        "fetched again from the historical endpoints, by itself within HEAL_HORIZON_HOURS, else by asking for it "
        f"again or with `python -m scripts.backfill_range {key}...{key}`"
    )


class Merging(Database):
    def merge_top_assets(
        self,
        start: datetime,
        end: datetime,
        depth: int,
        run_id: str | None = None,
        *,
        run_key: str | None = None,
        row_count_threshold: float = 0.9,
        top: int = 100,
    ) -> Merge:
        """Join rankings and prices on CMC id for minutes in [start, end) and publish those that pass.

        Ranks follow the ranking order among the assets that could be priced, renumbered
        1..n (n ≤ depth); an asset ranked twice keeps its best rank. Inside one transaction
        that alone writes these minutes, the blocking checks (warehouse.quality) judge what
        the merge would serve; only minutes that pass, with both datasets fetched, replace
        their `snapshots` row, which holds the served list. A blocked minute keeps its
        previous version, if any. Backfill requests are settled in the same transaction, so a
        request succeeds exactly when its minute became visible; those launched under `run_key`
        (the run's Dagster run key) fail if it did not. Memory is one window's rows.
        """
        served = served_rows(start, end, depth)
        created_at = utcnow()
        with self.writing(start, end) as conn:
            fetched = provenance(conn, start, end)
            quality = measure(conn, served, start, end, top, fetched.keys())
            blocked = {
                minute: failed
                for minute, q in quality.items()
                if (failed := q.failed_checks(depth, row_count_threshold))
            }
            publishable = [m for m in quality if m in fetched and m not in blocked]
            lists = top_lists(conn, served, start, end, held_back=[m for m in quality if m not in publishable])
            merged = [
                Snapshot(
                    minute=minute,
                    row_count=quality[minute].rows,
                    matched=quality[minute].matched,
                    unmatched=quality[minute].ranked - quality[minute].matched,
                    created_at=created_at,
                    **fetched[minute],
                )
                for minute in publishable
            ]
            stored = publish(conn, merged, lists)
            refuse(conn, blocked)
            settle(conn, start, end, run_id, run_key, {m: blocked_error(m, failed) for m, failed in blocked.items()})
        return Merge(stored, quality, blocked)

    def unmatched_symbols(self, minute: datetime, limit: int = 20) -> list[str]:
        """Ranked symbols at `minute` that no price matched, best rank first."""
        query = (
            select(rankings.c.symbol)
            .outerjoin(prices, PRICED_RANKING)
            .where(rankings.c.minute == minute, prices.c.cmc_id.is_(None))
            .order_by(rankings.c.rank)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())


def served_rows(start: datetime, end: datetime, depth: int) -> Subquery:
    """Per minute in [start, end), the rows the merge would serve: the ranked assets that found a
    price, an asset ranked twice at its best rank only, renumbered 1..n in ranking order, n ≤ depth."""
    priced = (
        select(
            rankings.c.minute,
            rankings.c.rank,
            rankings.c.cmc_id,
            prices.c.price_usd,
            rankings.c.volume_24h_usd,
            func.row_number()
            .over(partition_by=[rankings.c.minute, rankings.c.cmc_id], order_by=rankings.c.rank)
            .label("nth_of_asset"),
        )
        .join(prices, PRICED_RANKING)
        .where(rankings.c.minute >= start, rankings.c.minute < end)
        .subquery()
    )
    renumbered = (
        select(
            priced.c.minute,
            func.row_number().over(partition_by=priced.c.minute, order_by=priced.c.rank).label("rank"),
            priced.c.cmc_id,
            priced.c.price_usd,
            priced.c.volume_24h_usd,
        )
        .where(priced.c.nth_of_asset == 1)
        .subquery()
    )
    return select(renumbered).where(renumbered.c.rank <= depth).subquery()


def served_shapes(served: Subquery) -> Select:
    """Per minute, the shape of what would be served: what the blocking checks judge."""
    return select(
        served.c.minute,
        func.count().label("rows"),
        func.min(served.c.rank).label("min_rank"),
        func.max(served.c.rank).label("max_rank"),
        func.count(served.c.cmc_id.distinct()).label("distinct_cmc_ids"),
        func.min(served.c.price_usd).label("min_price"),
    ).group_by(served.c.minute)


def ranking_coverage(start: datetime, end: datetime, top: int) -> Select:
    """Per minute in [start, end), how many ranked assets found a price, in all and in the `top` ranks."""
    in_top = rankings.c.rank <= top
    return (
        select(
            rankings.c.minute,
            func.count().label("ranked"),
            func.count(prices.c.cmc_id).label("matched"),
            func.count(case((in_top, 1))).label("top_ranked"),
            func.count(case((and_(in_top, prices.c.cmc_id.is_not(None)), 1))).label("top_matched"),
        )
        .select_from(rankings)
        .outerjoin(prices, PRICED_RANKING)
        .where(rankings.c.minute >= start, rankings.c.minute < end)
        .group_by(rankings.c.minute)
    )


def measure(
    conn: Connection, served: Subquery, start: datetime, end: datetime, top: int, fetched: Iterable[datetime]
) -> dict[datetime, MinuteQuality]:
    """The quality of every minute in [start, end) that was fetched or ranked, in minute order."""
    coverage = {row.minute: row._mapping for row in conn.execute(ranking_coverage(start, end, top))}
    shapes = {row.minute: row._mapping for row in conn.execute(served_shapes(served))}

    def quality(minute: datetime) -> MinuteQuality:
        shape, ranking = shapes.get(minute, {}), coverage.get(minute, {})
        return MinuteQuality(
            minute=minute,
            rows=shape.get("rows", 0),
            min_rank=shape.get("min_rank"),
            max_rank=shape.get("max_rank"),
            distinct_cmc_ids=shape.get("distinct_cmc_ids", 0),
            min_price=shape.get("min_price"),
            ranked=ranking.get("ranked", 0),
            matched=ranking.get("matched", 0),
            top_ranked=ranking.get("top_ranked", 0),
            top_matched=ranking.get("top_matched", 0),
        )

    return {minute: quality(minute) for minute in sorted(set(fetched) | coverage.keys())}


def top_lists(
    conn: Connection, served: Subquery, start: datetime, end: datetime, held_back: Sequence[datetime]
) -> dict[datetime, TopList]:
    """The served list of every minute in [start, end) but those held back, in rank order."""
    lists: dict[datetime, TopList] = {}
    query = (
        select(served.c.minute, served.c.cmc_id, served.c.price_usd, served.c.volume_24h_usd)
        .where(window_except(served.c.minute, start, end, held_back))
        .order_by(served.c.minute, served.c.rank)
    )
    for minute, cmc_id, price, volume in conn.execute(query):
        lists.setdefault(minute, TopList()).append(cmc_id, price, volume)
    return lists
