"""items indexes for bulk writes: drop (state, lease_expires); (content_hash, state) becomes (content_hash)

Every insert and every state change paid for these. No query filters or orders by lease_expires (the reconciler
selects running items by state, which (state, queued_at) serves, and reads their leases in Python). With state
in the content-hash index, marking a page of a big submission `queued` rewrote index pages all over the file
(the hashes are random): half the cost of the mark. The skip lookup finds the rows by hash and reads their
state from the table, as fast while the page cache holds them (64 MiB, pixelmill/ledger.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_items_state_lease_expires", table_name="items")
    op.drop_index("ix_items_content_hash_state", table_name="items")
    op.create_index("ix_items_content_hash", "items", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_items_content_hash", table_name="items")
    op.create_index("ix_items_content_hash_state", "items", ["content_hash", "state"])
    op.create_index("ix_items_state_lease_expires", "items", ["state", "lease_expires"])
