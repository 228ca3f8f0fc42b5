"""event_tenants: every event names its tenant, so a request refused before it made a job is listed only to
the tenant that sent it, and a delivery can be checked against its tenant's webhook hosts

Existing events take their job's tenant; events without a job (`job.rejected`) the tenant `default`, which
owned everything before migration 0011.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("tenant_id", _ID, nullable=False, server_default="1"))
    op.execute(
        "UPDATE events SET tenant_id = (SELECT jobs.tenant_id FROM jobs WHERE jobs.id = events.job_id) "
        "WHERE job_id IS NOT NULL"
    )
    with op.batch_alter_table("events") as batch:
        batch.alter_column("tenant_id", server_default=None)
        batch.create_foreign_key("fk_events_tenant_id_tenants", "tenants", ["tenant_id"], ["id"])
        batch.create_index("ix_events_tenant_id", ["tenant_id"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_tenant_id")
        batch.drop_constraint("fk_events_tenant_id_tenants", type_="foreignkey")
        batch.drop_column("tenant_id")
