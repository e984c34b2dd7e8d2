"""coverage: the minute index carries each snapshot's provenance, so /coverage never reads the rows

Revision ID: 0006_coverage
Revises: 0005_healing
Create Date: 2026-12-04 05:00:00
"""

from alembic import op

revision = "0006_coverage"
down_revision = "0005_healing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_toplist_snapshots_provenance", "toplist_snapshots", ["minute", "live", "source"])


def downgrade() -> None:
    op.drop_index("ix_toplist_snapshots_provenance", table_name="toplist_snapshots")
