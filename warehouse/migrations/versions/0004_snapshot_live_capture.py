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

# Snapshots stored before this revision were captured live when fetched within the default
# LIVE_WINDOW_MINUTES (3) of their minute: a live run fetches its minute then, a backfill later.
MARK_LIVE = {
    "postgresql": "UPDATE toplist_snapshots SET live = true WHERE fetched_at < minute + interval '3 minutes'",
    "sqlite": "UPDATE toplist_snapshots SET live = 1 WHERE julianday(fetched_at) < julianday(minute) + 3.0 / 1440",
}


def upgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.add_column(sa.Column("live", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute(MARK_LIVE[op.get_bind().dialect.name])


def downgrade() -> None:
    with op.batch_alter_table("toplist_snapshots") as batch_op:
        batch_op.drop_column("live")
