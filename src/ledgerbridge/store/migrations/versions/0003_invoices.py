"""Invoices drafted by the billing flow and created in a target ERP (deterministic key, status, ERP number).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledgerbridge.store.types import ExactDecimal, JSONType, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("invoice_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("net_total", ExactDecimal(), nullable=False),
        sa.Column("tax_total", ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="draft", nullable=False),
        sa.Column("erp_system", sa.String(length=64), nullable=False),
        sa.Column("erp_number", sa.String(length=255), nullable=True),
        sa.Column("credits", sa.String(length=255), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("lineage", JSONType, nullable=False),
        sa.Column("written_back", sa.String(length=16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'submitted', 'posted', 'paid', 'void', 'credited', 'failed')",
            name=op.f("ck_invoices_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoices_legal_entity_id_period"), ["legal_entity_id", "period"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_invoices_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    op.drop_table("invoices")
