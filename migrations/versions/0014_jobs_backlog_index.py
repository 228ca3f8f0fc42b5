"""jobs_backlog_index: the scheduler finds the jobs with a backlog from their `pending` counters

A partial index on jobs (id) WHERE pending > 0: a scheduler pass reads only the jobs with pending items, however
many finished jobs the ledger keeps (contract/scheduling.py; its periodic sweep checks the counters).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("pending > 0")
    op.create_index("ix_jobs_backlog", "jobs", ["id"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    op.drop_index("ix_jobs_backlog", table_name="jobs")
