"""Stored reconciliation results (recon_runs, recon_cells) for trends, and alert rule state (alert_state).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledgerbridge.store.types import ExactDecimal, JSONType, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recon_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=True),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=True),
        sa.Column("ok", sa.SmallInteger(), nullable=False),
        sa.Column("cells", sa.Integer(), nullable=False),
        sa.Column("unexplained_cells", sa.Integer(), nullable=False),
        sa.Column("summary", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_runs")),
    )
    with op.batch_alter_table("recon_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recon_runs_at"), ["at"], unique=False)
    op.create_table(
        "recon_cells",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("measure", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("psa", ExactDecimal(), nullable=False),
        sa.Column("ledger", ExactDecimal(), nullable=True),
        sa.Column("mart", ExactDecimal(), nullable=True),
        sa.Column("variance", ExactDecimal(), nullable=False),
        sa.Column("explained", ExactDecimal(), nullable=False),
        sa.Column("unexplained", ExactDecimal(), nullable=False),
        sa.Column("detail", JSONType, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["recon_runs.id"], name=op.f("fk_recon_cells_run_id_recon_runs")),
        sa.PrimaryKeyConstraint("run_id", "legal_entity_id", "period", "measure", "currency",
                                name=op.f("pk_recon_cells")),
    )
    with op.batch_alter_table("recon_cells", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recon_cells_legal_entity_id_period"), ["legal_entity_id", "period"],
                              unique=False)
    op.create_table(
        "alert_state",
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("breach_since", UTCDateTime(), nullable=True),
        sa.Column("last_value", sa.Text(), nullable=True),
        sa.Column("last_checked_at", UTCDateTime(), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_alert_state")),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_table("recon_cells")
    op.drop_table("recon_runs")
