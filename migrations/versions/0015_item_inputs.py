"""item_inputs: the photo (and mask) a background or restyle item is made from (issue 25)

`items.inputs` holds the paths as checked at submit and their sha256 (null for text items); an item's mode and
restyle strength live in `items.params` beside its size, so rows written before read as text items.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("inputs")
