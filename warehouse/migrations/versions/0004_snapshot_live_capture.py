"""snapshots say whether they were captured live: a reconstruction must never replace one

Revision ID: 0004_snapshot_live
Revises: 0003_request_lifecycle
Create Date: 2026-12-02 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_snapshot_live"
down_revision = "0003_request_lifecycle"
branch_labels = None
depends_on = None

# Snapshots stored before this revision: the raw rows still stored say how each minute was fetched
# (both datasets from the latest endpoints: live). Once pruned, only the fetch time is left: a
# live run fetches its minute within the default LIVE_WINDOW_MINUTES (3), a backfill later (a range
# ending near its start fetches its last minutes early, and is told apart only while its raw rows exist).
# The column is added as live, which rewrites no row (a constant default is metadata on Postgres
# 11+ and SQLite), and only the minority that was not captured live is then updated: setting the
# live ones instead rewrote nearly every row of the table under its lock (a year: ~30 s of API
# reads blocked, ~1.4 GB of dead tuples and WAL).
MARK_RECONSTRUCTED = """
UPDATE toplist_snapshots SET live = {false} WHERE NOT COALESCE(CASE
    WHEN EXISTS (SELECT 1 FROM fetches f WHERE f.minute = toplist_snapshots.minute)
    THEN (SELECT count(*) FROM fetches f WHERE f.minute = toplist_snapshots.minute AND f.mode = 'latest') = 2
    ELSE {fetched_within_3_minutes} END, {false})
"""
DIALECT = {
    "postgresql": {"false": "false", "fetched_within_3_minutes": "fetched_at < minute + interval '3 minutes'"},
    "sqlite": {"false": "0", "fetched_within_3_minutes": "julianday(fetched_at) < julianday(minute) + 3.0 / 1440"},
}


def upgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.add_column(sa.Column("live", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.execute(MARK_RECONSTRUCTED.format(**DIALECT[op.get_bind().dialect.name]))
    # New rows say what they are (the merge sets `live`); the default is the schema's, as declared.
    # Postgres changes it in the catalog; SQLite copies the table (the local instance's size).
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.alter_column("live", server_default=sa.false(), existing_type=sa.Boolean(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.drop_column("live")
