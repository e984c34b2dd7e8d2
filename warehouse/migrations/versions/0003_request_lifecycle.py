"""backfill request lifecycle: attempts, the pending run key, backoff and permanent failures

Revision ID: 0003_request_lifecycle
Revises: 0002
Create Date: 2026-11-28 07:50:00
"""

import sqlalchemy as sa
from alembic import op

import warehouse.schema

revision = "0003_request_lifecycle"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backfill_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("run_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("submitted_at", warehouse.schema.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("permanent", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index("ix_backfill_requests_run_key", ["run_key"], unique=False)
    # Before 0003 a request was `launched` when its run key was handed over, and `run_id` held that
    # key. Such a request is a submitted one now: requested under that key, one attempt made. The
    # sensor finds its run by the key (Dagster's dagster/run_key tag) or releases it after the grace.
    requests = sa.table(
        "backfill_requests",
        *(sa.column(c) for c in ("status", "run_id", "run_key", "attempts")),
        sa.column("submitted_at", warehouse.schema.UTCDateTime(timezone=True)),
        sa.column("updated_at", warehouse.schema.UTCDateTime(timezone=True)),
    )
    op.execute(
        requests.update()
        .where(requests.c.status == "launched")
        .values(
            status="requested", run_key=requests.c.run_id, run_id=None, submitted_at=requests.c.updated_at, attempts=1
        )
    )
    op.execute(requests.update().where(requests.c.status == "failed").values(attempts=1))


def downgrade() -> None:
    with op.batch_alter_table("backfill_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_backfill_requests_run_key")
        for column in ("permanent", "submitted_at", "run_key", "attempts"):
            batch_op.drop_column(column)
