"""healing: why a request exists, which captures the checks refused, and where live capture began

Revision ID: 0005_healing
Revises: 0004_snapshot_live
Create Date: 2026-12-04 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_healing"
down_revision = "0004_snapshot_live"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every request before this revision was asked for through the API.
    with op.batch_alter_table("backfill_requests") as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), server_default="asked", nullable=False))
    with op.batch_alter_table("fetches") as batch_op:
        batch_op.add_column(sa.Column("refused", sa.Text(), nullable=True))
    op.create_index(
        "ix_toplist_snapshots_live",
        "toplist_snapshots",
        ["minute"],
        postgresql_where=sa.text("live"),
        sqlite_where=sa.text("live = 1"),
    )


def downgrade() -> None:
    op.drop_index("ix_toplist_snapshots_live", table_name="toplist_snapshots")
    with op.batch_alter_table("fetches") as batch_op:
        batch_op.drop_column("refused")
    with op.batch_alter_table("backfill_requests") as batch_op:
        batch_op.drop_column("origin")
