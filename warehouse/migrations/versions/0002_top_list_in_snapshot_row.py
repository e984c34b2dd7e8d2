"""the served top list as packed arrays in its snapshot row; top_assets rows moved there

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 08:00:00

A year of top-200 minutes was 105M `top_assets` rows (~22 KB a minute on Postgres with the
index); as three packed arrays in the minute's `toplist_snapshots` row it is ~4.8 KB, and
serving a minute is one primary-key lookup. The data moves a day at a time, so memory stays
bounded on a large warehouse; a `top_assets` minute without its snapshot row stops the
migration instead of being dropped.
"""

from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from warehouse.schema import TOAST_TUPLE_TARGET, PackedArray, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH = timedelta(days=1)
LIST_COLUMNS = {"cmc_ids": "i", "prices_usd": "d", "volumes_24h_usd": "d"}

# The tables as this revision sees them, whatever the current schema says.
top_assets = sa.table(
    "top_assets",
    sa.column("minute", UTCDateTime),
    sa.column("rank", sa.Integer),
    sa.column("cmc_id", sa.BigInteger),
    sa.column("price_usd", sa.Float),
    sa.column("volume_24h_usd", sa.Float),
)
snapshots = sa.table(
    "toplist_snapshots",
    sa.column("minute", UTCDateTime),
    *(sa.column(name, PackedArray(code)) for name, code in LIST_COLUMNS.items()),
)


def days(connection, table):
    """[start, end) windows of a day covering every minute in `table`."""
    first, last = connection.execute(sa.select(sa.func.min(table.c.minute), sa.func.max(table.c.minute))).one()
    while first is not None and first <= last:
        yield first, first + BATCH
        first += BATCH


def upgrade() -> None:
    connection = op.get_bind()
    orphans = connection.execute(
        sa.select(sa.func.count(top_assets.c.minute.distinct())).where(
            top_assets.c.minute.not_in(sa.select(snapshots.c.minute))
        )
    ).scalar_one()
    if orphans:
        raise RuntimeError(
            f"top_assets has {orphans} minutes without a toplist_snapshots row; refusing to drop them "
            "(restore their snapshot rows, then upgrade again)"
        )
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        for name in LIST_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))
    if connection.dialect.name == "postgresql":
        op.execute(f"ALTER TABLE toplist_snapshots SET (toast_tuple_target = {TOAST_TUPLE_TARGET})")
    for start, end in days(connection, top_assets):
        lists = defaultdict(lambda: {name: [] for name in LIST_COLUMNS})
        in_day = sa.and_(top_assets.c.minute >= start, top_assets.c.minute < end)
        for minute, cmc_id, price, volume in connection.execute(
            sa.select(top_assets.c.minute, top_assets.c.cmc_id, top_assets.c.price_usd, top_assets.c.volume_24h_usd)
            .where(in_day)
            .order_by(top_assets.c.minute, top_assets.c.rank)
        ):
            top = lists[minute]
            top["cmc_ids"].append(cmc_id)
            top["prices_usd"].append(price)
            top["volumes_24h_usd"].append(volume)
        if lists:
            connection.execute(
                sa.update(snapshots).where(snapshots.c.minute == sa.bindparam("at")),
                [{"at": minute, **top} for minute, top in lists.items()],
            )
    empty = {name: [] for name in LIST_COLUMNS}
    connection.execute(sa.update(snapshots).where(snapshots.c.cmc_ids.is_(None)).values(**empty))
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        for name in LIST_COLUMNS:
            batch_op.alter_column(name, existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table("top_assets")


def downgrade() -> None:
    op.create_table(
        "top_assets",
        sa.Column("minute", UTCDateTime(timezone=True), nullable=False),
        sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cmc_id", sa.BigInteger(), nullable=False),
        sa.Column("price_usd", sa.Float(), nullable=False),
        sa.Column("volume_24h_usd", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("minute", "rank"),
    )
    connection = op.get_bind()
    for start, end in days(connection, snapshots):
        stored = connection.execute(
            sa.select(snapshots).where(snapshots.c.minute >= start, snapshots.c.minute < end)
        ).all()
        rows = [
            {"minute": s.minute, "rank": rank, "cmc_id": cmc_id, "price_usd": price, "volume_24h_usd": volume}
            for s in stored
            for rank, (cmc_id, price, volume) in enumerate(
                zip(s.cmc_ids, s.prices_usd, s.volumes_24h_usd, strict=True), start=1
            )
        ]
        if rows:
            connection.execute(sa.insert(top_assets), rows)
    if connection.dialect.name == "postgresql":
        op.execute("ALTER TABLE toplist_snapshots RESET (toast_tuple_target)")
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        for name in LIST_COLUMNS:
            batch_op.drop_column(name)
