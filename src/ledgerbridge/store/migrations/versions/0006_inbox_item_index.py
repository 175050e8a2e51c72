"""Index the inbox by item (system, entity, external_id): the transactional flow reads each item's full version
history; without the index every per-event workflow scanned the whole inbox (measured: 8.0 -> 23.7 workflows/s
at 40k inbox rows).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inbox_system_entity_external_id", "inbox", ["system", "entity", "external_id"])


def downgrade() -> None:
    op.drop_index("ix_inbox_system_entity_external_id", table_name="inbox")
