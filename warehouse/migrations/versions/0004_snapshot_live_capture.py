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
MARK_LIVE = """
UPDATE toplist_snapshots SET live = {true} WHERE CASE
    WHEN EXISTS (SELECT 1 FROM fetches f WHERE f.minute = toplist_snapshots.minute)
    THEN (SELECT count(*) FROM fetches f WHERE f.minute = toplist_snapshots.minute AND f.mode = 'latest') = 2
    ELSE {fetched_within_3_minutes} END
"""
DIALECT = {
    "postgresql": {"true": "true", "fetched_within_3_minutes": "fetched_at < minute + interval '3 minutes'"},
    "sqlite": {"true": "1", "fetched_within_3_minutes": "julianday(fetched_at) < julianday(minute) + 3.0 / 1440"},
}


def upgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.add_column(sa.Column("live", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(MARK_LIVE.format(**DIALECT[op.get_bind().dialect.name]))


def downgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.drop_column("live")
