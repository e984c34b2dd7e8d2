"""history day files: what each day's Parquet file holds, and snapshots found by when they were written

Revision ID: 0007_history_day_files
Revises: 0006_coverage
Create Date: 2026-12-04 05:00:00
"""

import sqlalchemy as sa
from alembic import op

from warehouse.schema import UTCDateTime

revision = "0007_history_day_files"
down_revision = "0006_coverage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_toplist_snapshots_created_at", "toplist_snapshots", ["created_at"])
    op.create_table(
        "history_day_files",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("expected_minutes", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_created_at", UTCDateTime(), nullable=False),
        sa.Column("written_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("history_day_files")
    op.drop_index("ix_toplist_snapshots_created_at", table_name="toplist_snapshots")
