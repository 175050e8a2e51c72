"""Master data sync state: the values each system last reported per record, and the canonical values.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledgerbridge.store.types import JSONType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "master_records",
        sa.Column("canonical_type", sa.String(length=64), nullable=False),
        sa.Column("canonical_id", sa.String(length=255), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("values", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("canonical_type", "canonical_id", "system", name=op.f("pk_master_records")),
    )
    with op.batch_alter_table("master_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_master_records_system_canonical_type"), ["system", "canonical_type"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("master_records")
