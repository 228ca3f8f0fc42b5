"""fair_share: the ledger holds the backlog and a scheduler dispatches it (contract/scheduling.py)

Jobs get a priority (interactive, normal, bulk), a pause flag and their count of pending items (filled here); tenants a weight, a most-in-flight quota and a
pause flag; `scheduler_leases` elects the one scheduler. The items' (job_id, state) index gains `id`, so the
scheduler reads a job's next pending ids in order from the index alone on every dialect.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.String(16), nullable=False, server_default="normal"))
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("pending", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE jobs SET pending = (SELECT count(*) FROM items WHERE items.job_id = jobs.id AND items.state = 'pending')"
    )
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("weight", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_leases"),
    )
    op.create_index("ix_items_job_id_state_id", "items", ["job_id", "state", "id"])
    op.drop_index("ix_items_job_id_state", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_job_id_state", "items", ["job_id", "state"])
    op.drop_index("ix_items_job_id_state_id", table_name="items")
    op.drop_table("scheduler_leases")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("paused")
        batch.drop_column("max_in_flight")
        batch.drop_column("weight")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pending")
        batch.drop_column("paused")
        batch.drop_column("priority")
