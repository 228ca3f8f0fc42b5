"""tenants: every job has an owner; request ids and catalogue names are per tenant

Creates `tenants` (with the tenant `default`, which owns every existing job and catalogue entry) and
`tenant_tokens` (SHA-256 of each API token); jobs get `tenant_id` and `request_digest`, and `request_id` becomes
unique per tenant; catalogue entries get `tenant_id`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("created", _WHEN, nullable=False),
        sa.Column("revoked", _WHEN, nullable=True),
        sa.Column("reply_prefix", sa.String(length=200), nullable=False),
        sa.Column("source_roots", sa.JSON(), nullable=False),
        sa.Column("webhook_hosts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.bulk_insert(
        tenants,
        [
            {
                "id": 1,
                "name": "default",
                "created": datetime.now(UTC),
                "revoked": None,
                "reply_prefix": "pixelmill.reply.default.",
                "source_roots": [],
                "webhook_hosts": [],
            }
        ],
    )
    op.create_table(
        "tenant_tokens",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created", _WHEN, nullable=False),
        sa.Column("revoked", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_tenant_tokens_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_tokens"),
        sa.UniqueConstraint("digest", name="uq_tenant_tokens_digest"),
    )
    op.create_index("ix_tenant_tokens_tenant_id", "tenant_tokens", ["tenant_id"])
    if op.get_bind().dialect.name == "postgresql":  # the explicit id 1 above did not advance the sequence
        op.execute("SELECT setval(pg_get_serial_sequence('tenants', 'id'), 1)")

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tenant_id", _ID, nullable=False, server_default="1"))
        batch.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
        batch.drop_constraint("uq_jobs_request_id", type_="unique")
        batch.create_unique_constraint("uq_jobs_tenant_id_request_id", ["tenant_id", "request_id"])
        batch.create_foreign_key("fk_jobs_tenant_id_tenants", "tenants", ["tenant_id"], ["id"])
        batch.create_index("ix_jobs_tenant_id", ["tenant_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("tenant_id", server_default=None)

    with op.batch_alter_table("catalogue_entries") as batch:
        batch.add_column(sa.Column("tenant_id", _ID, nullable=False, server_default="1"))
        batch.drop_constraint("uq_catalogue_entries_catalogue_item_key_variant", type_="unique")
        batch.drop_index("ix_catalogue_entries_catalogue_job_id")
        batch.create_unique_constraint(
            "uq_catalogue_entries_tenant_id_catalogue_item_key_variant",
            ["tenant_id", "catalogue", "item_key", "variant"],
        )
        batch.create_index("ix_catalogue_entries_tenant_id_catalogue_job_id", ["tenant_id", "catalogue", "job_id"])
        batch.create_foreign_key("fk_catalogue_entries_tenant_id_tenants", "tenants", ["tenant_id"], ["id"])
    with op.batch_alter_table("catalogue_entries") as batch:
        batch.alter_column("tenant_id", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("catalogue_entries") as batch:
        batch.drop_constraint("fk_catalogue_entries_tenant_id_tenants", type_="foreignkey")
        batch.drop_index("ix_catalogue_entries_tenant_id_catalogue_job_id")
        batch.drop_constraint("uq_catalogue_entries_tenant_id_catalogue_item_key_variant", type_="unique")
        batch.create_index("ix_catalogue_entries_catalogue_job_id", ["catalogue", "job_id"])
        batch.create_unique_constraint(
            "uq_catalogue_entries_catalogue_item_key_variant", ["catalogue", "item_key", "variant"]
        )
        batch.drop_column("tenant_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("fk_jobs_tenant_id_tenants", type_="foreignkey")
        batch.drop_index("ix_jobs_tenant_id")
        batch.drop_constraint("uq_jobs_tenant_id_request_id", type_="unique")
        batch.create_unique_constraint("uq_jobs_request_id", ["request_id"])
        batch.drop_column("request_digest")
        batch.drop_column("tenant_id")
    op.drop_index("ix_tenant_tokens_tenant_id", table_name="tenant_tokens")
    op.drop_table("tenant_tokens")
    op.drop_table("tenants")
