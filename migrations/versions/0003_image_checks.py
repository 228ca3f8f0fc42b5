"""image checks: scores, safety verdicts, quarantine and review on images; every candidate in `candidates`

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scores", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("safety", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("candidate", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("visibility", sa.String(length=16), nullable=False, server_default="public"))
        batch_op.add_column(sa.Column("approved_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "candidates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("safety", sa.JSON(), nullable=True),
        sa.Column("engine_id", sa.String(length=200), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_candidates_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("item_id", "candidate", name=op.f("uq_candidates_item_id_candidate")),
    )


def downgrade() -> None:
    op.drop_table("candidates")
    with op.batch_alter_table("images", schema=None) as batch_op:
        for column in ("approved_at", "approved_by", "visibility", "candidate", "safety", "scores"):
            batch_op.drop_column(column)
