"""Initial schema of the state store, the audit chain head and the append-only triggers on audit_log.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledgerbridge.store.types import BigIntKey, ExactDecimal, JSONType, UTCDateTime

GENESIS_HASH = "0" * 64  # frozen copy of schema.GENESIS_HASH

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", BigIntKey, nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", BigIntKey, autoincrement=False, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("details", JSONType, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    op.create_table(
        "cursors",
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("value", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("system", "stream", name=op.f("pk_cursors")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("flow", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("item_key", sa.String(length=512), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("error_kind", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("error_text", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.CheckConstraint("queue IN ('operational', 'financial')", name=op.f("ck_dead_letters_queue")),
        sa.CheckConstraint("status IN ('open', 'replayed', 'discarded')", name=op.f("ck_dead_letters_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dead_letters_status_queue_last_seen"), ["status", "queue", "last_seen"], unique=False
        )
        batch_op.create_index(
            "uq_dead_letters_open_item",
            ["queue", "flow", "system", "entity", "item_key"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "inbox",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=512), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="received", nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint("status IN ('received', 'processed', 'dead')", name=op.f("ck_inbox_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_inbox_idempotency_key")),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_status_system_entity_id"), ["status", "system", "entity", "id"], unique=False
        )

    op.create_table(
        "item_state",
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=255), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=True),
        sa.Column("posted_version", sa.Integer(), nullable=True),
        sa.Column("posted_status", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("system", "entity", "item_id", name=op.f("pk_item_state")),
    )
    op.create_table(
        "periods",
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'closing', 'closed', 'locked')", name=op.f("ck_periods_status")),
        sa.CheckConstraint("start_date <= end_date", name=op.f("ck_periods_dates")),
        sa.PrimaryKeyConstraint("legal_entity_id", "period", name=op.f("pk_periods")),
    )
    op.create_table(
        "posting_runs",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("target_system", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("control_totals", JSONType, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('started', 'posted', 'failed', 'cancelled')", name=op.f("ck_posting_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posting_runs")),
    )
    with op.batch_alter_table("posting_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_posting_runs_legal_entity_id_period"), ["legal_entity_id", "period"], unique=False
        )

    op.create_table(
        "stewardship_items",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("canonical_type", sa.String(length=64), nullable=False),
        sa.Column("canonical_id", sa.String(length=255), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("values", JSONType, nullable=False),
        sa.Column("changed_by", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("resolution", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("status IN ('open', 'resolved')", name=op.f("ck_stewardship_items_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stewardship_items")),
    )
    with op.batch_alter_table("stewardship_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_stewardship_items_status_canonical_type_canonical_id"),
            ["status", "canonical_type", "canonical_id"],
            unique=False,
        )
        batch_op.create_index(
            "uq_stewardship_items_open_field",
            ["canonical_type", "canonical_id", "field"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "systems",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_systems")),
    )
    op.create_table(
        "xref",
        sa.Column("canonical_type", sa.String(length=64), nullable=False),
        sa.Column("canonical_id", sa.String(length=255), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("last_synced_at", UTCDateTime(), nullable=False),
        sa.Column("version_synced", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("canonical_type", "canonical_id", "system", name=op.f("pk_xref")),
        sa.UniqueConstraint(
            "system", "canonical_type", "external_id", name=op.f("uq_xref_system_canonical_type_external_id")
        ),
    )
    op.create_table(
        "posted_journals",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("posting_run_id", sa.String(length=255), nullable=True),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("entry_date", sa.Date(), nullable=False),
        sa.Column("journal_type", sa.String(length=64), nullable=False),
        sa.Column("target_system", sa.String(length=64), nullable=False),
        sa.Column("target_ref", sa.String(length=255), nullable=True),
        sa.Column("reverses", sa.String(length=255), nullable=True),
        sa.Column("redated_from", sa.String(length=7), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("posted_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["posting_run_id"], ["posting_runs.id"], name=op.f("fk_posted_journals_posting_run_id_posting_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_posted_journals")),
    )
    with op.batch_alter_table("posted_journals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_posted_journals_legal_entity_id_period"), ["legal_entity_id", "period"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_posted_journals_posting_run_id"), ["posting_run_id"], unique=False)

    op.create_table(
        "staging_lines",
        sa.Column("id", BigIntKey, autoincrement=True, nullable=False),
        sa.Column("txn_type", sa.String(length=64), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("entry_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amounts", JSONType, nullable=False),
        sa.Column("dimensions", JSONType, nullable=False),
        sa.Column("source_system", sa.String(length=64), nullable=False),
        sa.Column("source_entity", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=False),
        sa.Column("sign", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="staged", nullable=False),
        sa.Column("posting_run_id", sa.String(length=255), nullable=True),
        sa.Column("redated_from", sa.String(length=7), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("status IN ('staged', 'in_run', 'posted', 'dead')", name=op.f("ck_staging_lines_status")),
        sa.CheckConstraint("sign IN (1, -1)", name=op.f("ck_staging_lines_sign")),
        sa.ForeignKeyConstraint(
            ["posting_run_id"], ["posting_runs.id"], name=op.f("fk_staging_lines_posting_run_id_posting_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staging_lines")),
        sa.UniqueConstraint(
            "source_system",
            "source_entity",
            "source_id",
            "source_version",
            "txn_type",
            "sign",
            name="uq_staging_lines_delta",
        ),
    )
    with op.batch_alter_table("staging_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staging_lines_posting_run_id"), ["posting_run_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_staging_lines_status_legal_entity_id_period"),
            ["status", "legal_entity_id", "period"],
            unique=False,
        )

    op.create_table(
        "posted_journal_lines",
        sa.Column("journal_id", sa.String(length=255), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("debit", ExactDecimal(), nullable=False),
        sa.Column("credit", ExactDecimal(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("dimensions", JSONType, nullable=False),
        sa.Column("functional_currency", sa.String(length=3), nullable=True),
        sa.Column("functional_debit", ExactDecimal(), nullable=True),
        sa.Column("functional_credit", ExactDecimal(), nullable=True),
        sa.Column("fx_rate", ExactDecimal(), nullable=True),
        sa.Column("fx_rate_date", sa.Date(), nullable=True),
        sa.Column("lineage", JSONType, nullable=False),
        sa.ForeignKeyConstraint(
            ["journal_id"], ["posted_journals.id"], name=op.f("fk_posted_journal_lines_journal_id_posted_journals")
        ),
        sa.PrimaryKeyConstraint("journal_id", "line_no", name=op.f("pk_posted_journal_lines")),
    )

    _seed_audit_head()
    _install_append_only_triggers()


def _seed_audit_head() -> None:
    op.execute(sa.text("INSERT INTO audit_head (id, last_seq, last_hash) VALUES (1, 0, :h)").bindparams(h=GENESIS_HASH))


#: Tables whose rows may be added but never changed or removed.
APPEND_ONLY = ("audit_log",)


def _install_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(
                f"""
                CREATE OR REPLACE FUNCTION {table}_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION '{table} is append-only: % refused', TG_OP
                        USING ERRCODE = 'insufficient_privilege',
                              HINT = 'record a correcting entry with audit.append() instead';
                END
                $$
                """
            )
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_refuse_change()"
            )
        else:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
                )


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_refuse_change()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_table("posted_journal_lines")
    with op.batch_alter_table("staging_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staging_lines_status_legal_entity_id_period"))
        batch_op.drop_index(batch_op.f("ix_staging_lines_posting_run_id"))

    op.drop_table("staging_lines")
    with op.batch_alter_table("posted_journals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_posted_journals_posting_run_id"))
        batch_op.drop_index(batch_op.f("ix_posted_journals_legal_entity_id_period"))

    op.drop_table("posted_journals")
    op.drop_table("xref")
    op.drop_table("systems")
    with op.batch_alter_table("stewardship_items", schema=None) as batch_op:
        batch_op.drop_index("uq_stewardship_items_open_field")
        batch_op.drop_index(batch_op.f("ix_stewardship_items_status_canonical_type_canonical_id"))

    op.drop_table("stewardship_items")
    with op.batch_alter_table("posting_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_posting_runs_legal_entity_id_period"))

    op.drop_table("posting_runs")
    op.drop_table("periods")
    op.drop_table("item_state")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_status_system_entity_id"))

    op.drop_table("inbox")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_dead_letters_open_item",
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index(batch_op.f("ix_dead_letters_status_queue_last_seen"))

    op.drop_table("dead_letters")
    op.drop_table("cursors")
    op.drop_table("audit_log")
    op.drop_table("audit_head")
