"""outcome_tallies: item outcomes a transition made outside a worker's chunk recording, for the metrics (issue 24)

A cancel, a claim's give-up and the reconciler's requeues and give-ups may run in a short command that no
Prometheus scrapes; they write a row here in their own transaction, and the scheduler's leader takes the rows into
`pixelmill_items_total` (contract/schema.py `OutcomeTally`). Rows live about one scheduler pass.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outcome_tallies",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_outcome_tallies_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_outcome_tallies"),
    )


def downgrade() -> None:
    op.drop_table("outcome_tallies")
