"""Migration 0002 moves the served rows of `top_assets` into their snapshot rows without loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from warehouse.schema import UTCDateTime, fetches
from warehouse.store import Warehouse

FIRST = datetime(2026, 11, 20, 23, 58, tzinfo=UTC)
# Minutes on both sides of a day boundary (the migration moves a day at a time) and a day later.
MINUTES = [FIRST, FIRST + timedelta(minutes=1), FIRST + timedelta(minutes=3), FIRST + timedelta(days=1, minutes=5)]
EMPTY_MINUTE = FIRST + timedelta(minutes=2)  # merged, but nothing could be priced
RECONSTRUCTED_EARLY, LIVE_LATE = FIRST + timedelta(days=2), FIRST + timedelta(days=2, minutes=1)

old_top_assets = sa.table(
    "top_assets",
    sa.column("minute", UTCDateTime),
    sa.column("rank", sa.Integer),
    sa.column("cmc_id", sa.BigInteger),
    sa.column("price_usd", sa.Float),
    sa.column("volume_24h_usd", sa.Float),
)
old_snapshots = sa.table(
    "toplist_snapshots",
    *(sa.column(c) for c in ("row_count", "matched", "unmatched", "source", "price_source")),
    *(sa.column(c, UTCDateTime) for c in ("minute", "fetched_at", "created_at")),
)
assets = sa.table("assets", sa.column("cmc_id"), sa.column("symbol"), sa.column("name"), sa.column("updated_at"))


def old_layout_rows() -> list[dict]:
    """200 rows a minute with awkward values: full-precision floats, huge ids, a null volume."""
    rows = []
    for m, minute in enumerate(MINUTES):
        for rank in range(1, 201):
            volume = None if rank == 7 else 1e9 / rank + 0.1 * m + 1 / 3
            rows.append({"minute": minute, "rank": rank, "cmc_id": 2_000_000_000 - rank * 7 - m,
                         "price_usd": 91234.56789012345 / rank + 1e-9 * m, "volume_24h_usd": volume})  # fmt: skip
    return rows


def snapshot_row(minute: datetime, row_count: int) -> dict:
    return {"minute": minute, "row_count": row_count, "matched": row_count, "unmatched": 3, "source": "emulated",
            "price_source": "coinmarketcap", "fetched_at": minute, "created_at": minute}  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_upgrade_moves_every_served_row_and_downgrade_restores_them(database_url):
    store = Warehouse(database_url)
    store.migrate("downgrade", "0001")
    rows = old_layout_rows()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(old_top_assets), rows)
        snapshot_rows = [snapshot_row(m, 200) for m in MINUTES] + [snapshot_row(EMPTY_MINUTE, 0)]
        conn.execute(sa.insert(old_snapshots), snapshot_rows)
        conn.execute(sa.insert(assets), [{"cmc_id": r["cmc_id"], "symbol": f"S{r['cmc_id']}", "name": f"N{r['rank']}",
                                          "updated_at": FIRST} for r in rows])  # fmt: skip

    store.upgrade()

    for minute in MINUTES:
        expected = [
            {
                "rank": r["rank"],
                "symbol": f"S{r['cmc_id']}",
                "name": f"N{r['rank']}",
                "cmc_id": r["cmc_id"],
                "price_usd": r["price_usd"],
                "volume_24h_usd": r["volume_24h_usd"],
            }  # fmt: skip
            for r in rows
            if r["minute"] == minute
        ]
        assert store.snapshot_rows(minute, 200) == expected  # exact floats, the null volume, rank order
        assert store.snapshot_rows(minute, 5) == expected[:5]
        snapshot = store.snapshot_at_or_before(minute, timedelta(minutes=1))
        assert (snapshot.minute, snapshot.row_count, snapshot.unmatched) == (minute, 200, 3)
    assert store.snapshot_rows(EMPTY_MINUTE, 200) == []
    assert store.snapshot_at_or_before(EMPTY_MINUTE, timedelta(minutes=1)).row_count == 0
    assert "top_assets" not in sa.inspect(store.engine).get_table_names()

    store.migrate("downgrade", "0001")
    with store.engine.connect() as conn:
        restored = [dict(r._mapping) for r in conn.execute(sa.select(old_top_assets).order_by("minute", "rank"))]
    assert restored == rows
    store.upgrade()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_upgrade_refuses_to_drop_served_rows_without_a_snapshot_row(database_url):
    store = Warehouse(database_url)
    store.migrate("downgrade", "0001")
    with store.engine.begin() as conn:
        conn.execute(sa.insert(old_top_assets), old_layout_rows()[:200])
    with pytest.raises(RuntimeError, match="without a toplist_snapshots row"):
        store.upgrade()
    with store.engine.connect() as conn:  # the failed upgrade changed nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(old_top_assets)).scalar_one() == 200
    with store.engine.begin() as conn:
        conn.execute(sa.delete(old_top_assets))
    store.upgrade()


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_upgrade_marks_the_snapshots_fetched_within_the_live_window_as_captured_live(database_url):
    """Migration 0004: before it, a snapshot did not say how it was captured; one fetched within
    the default live window (3 minutes) of its minute was a live run's."""
    store = Warehouse(database_url)
    store.migrate("downgrade", "0003_request_lifecycle")
    fetched_after = {MINUTES[0]: timedelta(seconds=20), MINUTES[1]: timedelta(minutes=2, seconds=59),
                     MINUTES[2]: timedelta(minutes=3), MINUTES[3]: timedelta(days=2)}  # fmt: skip
    empty_lists = dict.fromkeys(("cmc_ids", "prices_usd", "volumes_24h_usd"), b"")
    at_0003 = sa.table(
        "toplist_snapshots",
        *(sa.column(c.name, c.type) for c in old_snapshots.columns),
        *(sa.column(c) for c in empty_lists),
    )
    with store.engine.begin() as conn:
        for minute, after in fetched_after.items():
            conn.execute(sa.insert(at_0003), {**snapshot_row(minute, 0), "fetched_at": minute + after, **empty_lists})
    # Raw rows still stored say how a minute was fetched, whatever the fetch time suggests: a range
    # ending near now fetched its last minutes early; LIVE_WINDOW_MINUTES=5 captured live late.
    raw_rows_say = {
        RECONSTRUCTED_EARLY: ("historical", timedelta(minutes=1)),
        LIVE_LATE: ("latest", timedelta(minutes=4)),
    }
    with store.engine.begin() as conn:
        for minute, (mode, after) in raw_rows_say.items():
            conn.execute(sa.insert(at_0003), {**snapshot_row(minute, 0), "fetched_at": minute + after, **empty_lists})
            conn.execute(sa.insert(fetches), [
                {"minute": minute, "dataset": dataset, "provider": "p", "emulated": True, "mode": mode,
                 "records": 0, "rejected": 0, "fetched_at": minute + after}
                for dataset in ("prices", "rankings")
            ])  # fmt: skip
    row_versions = "SELECT xmin::text FROM toplist_snapshots ORDER BY minute"  # changes when a row is rewritten
    postgres = store.engine.dialect.name == "postgresql"
    if postgres:
        with store.engine.connect() as conn:
            versions_before = conn.execute(sa.text(row_versions)).scalars().all()
    store.upgrade()
    live = {m: store.snapshot_at_or_before(m, timedelta(minutes=1)).live for m in [*MINUTES, *raw_rows_say]}
    assert live == {MINUTES[0]: True, MINUTES[1]: True, MINUTES[2]: False, MINUTES[3]: False,
                    RECONSTRUCTED_EARLY: False, LIVE_LATE: True}  # fmt: skip
    if postgres:  # only the snapshots not captured live were rewritten (a year of live rows is left alone)
        with store.engine.connect() as conn:
            versions_after = conn.execute(sa.text(row_versions)).scalars().all()
        rewritten = [before != after for before, after in zip(versions_before, versions_after, strict=True)]
        assert rewritten == [not live[minute] for minute in sorted(live)]
    columns = {c["name"]: c for c in sa.inspect(store.engine).get_columns("toplist_snapshots")}
    assert columns["live"]["default"].strip("'") in ("false", "0")  # a new row is not live unless the merge says so
    store.migrate("downgrade", "0003_request_lifecycle")
    assert "live" not in {c["name"] for c in sa.inspect(store.engine).get_columns("toplist_snapshots")}
    store.upgrade()  # back to head: the fixture empties every table of the current schema
