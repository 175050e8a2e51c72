"""Tables of the state store (SQLAlchemy Core). The migrations in ``migrations/versions`` create exactly these;
``tests/test_store_migrations.py`` checks that the two agree."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from ledgerbridge.store.types import BigIntKey, ExactDecimal, JSONType, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

INBOX_STATUSES = ("received", "processed", "dead")
STAGING_STATUSES = ("staged", "in_run", "posted", "dead")
RUN_STATUSES = ("started", "posted", "failed", "cancelled")
DEAD_LETTER_QUEUES = ("operational", "financial")
DEAD_LETTER_STATUSES = ("open", "replayed", "discarded")
PERIOD_STATUSES = ("open", "closing", "closed", "locked")
STEWARDSHIP_STATUSES = ("open", "resolved")

#: hash of the (virtual) entry before the first audit entry
GENESIS_HASH = "0" * 64


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


ID = String(255)  # external / canonical ids
NAME = String(64)  # system, entity, type and status names

systems = Table(
    "systems",
    metadata,
    Column("id", NAME, primary_key=True),
    Column("connector", NAME, nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("config", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

xref = Table(
    "xref",
    metadata,
    Column("canonical_type", NAME, nullable=False),
    Column("canonical_id", ID, nullable=False),
    Column("system", NAME, nullable=False),
    Column("external_id", ID, nullable=False),
    Column("last_synced_at", UTCDateTime, nullable=False),
    Column("version_synced", NAME, nullable=True),
    PrimaryKeyConstraint("canonical_type", "canonical_id", "system"),
    UniqueConstraint("system", "canonical_type", "external_id"),
)

cursors = Table(
    "cursors",
    metadata,
    Column("system", NAME, nullable=False),
    Column("stream", NAME, nullable=False),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("system", "stream"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", BigIntKey, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(512), nullable=False),
    Column("system", NAME, nullable=False),
    Column("entity", NAME, nullable=False),
    Column("external_id", ID, nullable=False),
    Column("version", NAME, nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default="received"),
    Column("processed_at", UTCDateTime, nullable=True),
    Column("batch_id", NAME, nullable=True),
    UniqueConstraint("idempotency_key"),
    CheckConstraint(_in("status", INBOX_STATUSES), name="status"),
    Index(None, "status", "system", "entity", "id"),
    Index(None, "system", "entity", "external_id"),  # an item's version history (transactional flow), migration 0006
)

item_state = Table(
    "item_state",
    metadata,
    Column("system", NAME, nullable=False),
    Column("entity", NAME, nullable=False),
    Column("item_id", ID, nullable=False),
    Column("latest_version", Integer, nullable=True),
    Column("posted_version", Integer, nullable=True),
    Column("posted_status", NAME, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("system", "entity", "item_id"),
)

posting_runs = Table(
    "posting_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("legal_entity_id", NAME, nullable=False),
    Column("period", String(7), nullable=False),
    Column("target_system", NAME, nullable=False),
    Column("status", String(16), nullable=False),
    Column("control_totals", JSONType, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    Index(None, "legal_entity_id", "period"),
)

staging_lines = Table(
    "staging_lines",
    metadata,
    Column("id", BigIntKey, primary_key=True, autoincrement=True),
    Column("txn_type", NAME, nullable=False),
    Column("legal_entity_id", NAME, nullable=False),
    Column("period", String(7), nullable=False),
    Column("entry_date", Date, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amounts", JSONType, nullable=False),
    Column("dimensions", JSONType, nullable=False),
    Column("source_system", NAME, nullable=False),
    Column("source_entity", NAME, nullable=False),
    Column("source_id", ID, nullable=False),
    Column("source_version", Integer, nullable=False),
    Column("sign", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False, server_default="staged"),
    Column("posting_run_id", ID, ForeignKey("posting_runs.id"), nullable=True),
    Column("redated_from", String(7), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # the same delta (source version, posting type, direction) is never staged twice
    UniqueConstraint(
        *("source_system", "source_entity", "source_id", "source_version", "txn_type", "sign"),
        name="uq_staging_lines_delta",
    ),
    CheckConstraint(_in("status", STAGING_STATUSES), name="status"),
    CheckConstraint("sign IN (1, -1)", name="sign"),
    Index(None, "status", "legal_entity_id", "period"),
    Index(None, "posting_run_id"),
)

posted_journals = Table(
    "posted_journals",
    metadata,
    Column("id", ID, primary_key=True),
    Column("posting_run_id", ID, ForeignKey("posting_runs.id"), nullable=True),
    Column("legal_entity_id", NAME, nullable=False),
    Column("period", String(7), nullable=False),
    Column("entry_date", Date, nullable=False),
    Column("journal_type", NAME, nullable=False),
    Column("target_system", NAME, nullable=False),
    Column("target_ref", ID, nullable=True),
    Column("reverses", ID, nullable=True),
    Column("redated_from", String(7), nullable=True),
    Column("payload", JSONType, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("posted_at", UTCDateTime, nullable=False),
    Index(None, "legal_entity_id", "period"),
    Index(None, "posting_run_id"),
)

posted_journal_lines = Table(
    "posted_journal_lines",
    metadata,
    Column("journal_id", ID, ForeignKey("posted_journals.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("account", NAME, nullable=False),
    Column("debit", ExactDecimal, nullable=False),
    Column("credit", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("dimensions", JSONType, nullable=False),
    Column("functional_currency", String(3), nullable=True),
    Column("functional_debit", ExactDecimal, nullable=True),
    Column("functional_credit", ExactDecimal, nullable=True),
    Column("fx_rate", ExactDecimal, nullable=True),
    Column("fx_rate_date", Date, nullable=True),
    Column("lineage", JSONType, nullable=False),
    PrimaryKeyConstraint("journal_id", "line_no"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("queue", String(16), nullable=False),
    Column("flow", NAME, nullable=False),
    Column("system", NAME, nullable=False),
    Column("entity", NAME, nullable=False),
    Column("item_key", String(512), nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("error_kind", String(32), nullable=False),
    Column("error_code", NAME, nullable=False),
    Column("error_text", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("resolution", Text, nullable=True),
    CheckConstraint(_in("queue", DEAD_LETTER_QUEUES), name="queue"),
    CheckConstraint(_in("status", DEAD_LETTER_STATUSES), name="status"),
    Index(None, "status", "queue", "last_seen"),
    # one open letter per item and place: a repeated failure bumps attempts instead of adding a row
    Index(
        "uq_dead_letters_open_item",
        "queue",
        "flow",
        "system",
        "entity",
        "item_key",
        unique=True,
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigIntKey, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", ID, nullable=False),
    Column("action", NAME, nullable=False),
    Column("subject", String(512), nullable=False),
    Column("details", JSONType, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("hash"),
)

# One row (id = 1): the tail of the audit chain. Appenders lock it first, which serialises them on both
# backends and lets verify() notice a chain whose tail was cut off.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigIntKey, nullable=False),
    Column("last_hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

periods = Table(
    "periods",
    metadata,
    Column("legal_entity_id", NAME, nullable=False),
    Column("period", String(7), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("legal_entity_id", "period"),
    CheckConstraint(_in("status", PERIOD_STATUSES), name="status"),
    CheckConstraint("start_date <= end_date", name="dates"),
)

stewardship_items = Table(
    "stewardship_items",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("canonical_type", NAME, nullable=False),
    Column("canonical_id", ID, nullable=False),
    Column("field", NAME, nullable=False),
    Column("values", JSONType, nullable=False),
    Column("changed_by", ID, nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("resolution", JSONType, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    CheckConstraint(_in("status", STEWARDSHIP_STATUSES), name="status"),
    Index(None, "status", "canonical_type", "canonical_id"),
    # one open question per field of a record: a repeated conflict updates it instead of adding a row
    Index(
        "uq_stewardship_items_open_field",
        "canonical_type",
        "canonical_id",
        "field",
        unique=True,
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
)

INVOICE_STATUSES = ("draft", "submitted", "posted", "paid", "void", "credited", "failed")

#: Invoices this engine drafted and created in a target ERP (flows/billing.py). ``id`` is the deterministic
#: external key (the domain's invoice id, e.g. ``INV-P001-2026-09``, ``CN-INV-P001-2026-09-1``); ``payload`` is the
#: canonical Invoice (JSON); ``lineage`` the source-version keys it bills (``system:entity:id:version``).
invoices = Table(
    "invoices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("kind", String(16), nullable=False),  # tm | milestone | fixed_fee | credit_note
    Column("legal_entity_id", NAME, nullable=False),
    Column("project_id", ID, nullable=False),
    Column("customer_id", ID, nullable=False),
    Column("period", String(7), nullable=False),
    Column("invoice_date", Date, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("net_total", ExactDecimal, nullable=False),
    Column("tax_total", ExactDecimal, nullable=False),
    Column("status", String(16), nullable=False, server_default="draft"),
    Column("erp_system", NAME, nullable=False),
    Column("erp_number", ID, nullable=True),
    Column("credits", ID, nullable=True),  # a credit note: the invoice it credits
    Column("payload", JSONType, nullable=False),
    Column("lineage", JSONType, nullable=False),
    Column("written_back", String(16), nullable=True),  # status last written back to the source system
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_in("status", INVOICE_STATUSES), name="status"),
    Index(None, "legal_entity_id", "period"),
    Index(None, "project_id"),
)

#: Master data sync (flows/masterdata.py): per record and system, the field values that system last reported; the
#: agreed (canonical) values are stored under the system ``_canonical``.
master_records = Table(
    "master_records",
    metadata,
    Column("canonical_type", NAME, nullable=False),
    Column("canonical_id", ID, nullable=False),
    Column("system", NAME, nullable=False),
    Column("values", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("canonical_type", "canonical_id", "system"),
    Index(None, "system", "canonical_type"),
)

#: Stored reconciliation results (flows/recon_runs.py): one row per ``ledgerbridge reconcile`` run with its summary,
#: one row per cell (legal entity, period, measure, currency) with the figures and explanation counts, for trends.
recon_runs = Table(
    "recon_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("period", String(7), nullable=True),  # the --period filter (None = every period)
    Column("legal_entity_id", NAME, nullable=True),  # the --entity filter (None = every entity)
    Column("ok", SmallInteger, nullable=False),
    Column("cells", Integer, nullable=False),
    Column("unexplained_cells", Integer, nullable=False),
    Column("summary", JSONType, nullable=False),  # explanation counts, findings, sources
    Index(None, "at"),
)

recon_cells = Table(
    "recon_cells",
    metadata,
    Column("run_id", String(36), ForeignKey("recon_runs.id"), nullable=False),
    Column("legal_entity_id", NAME, nullable=False),
    Column("period", String(7), nullable=False),
    Column("measure", NAME, nullable=False),
    Column("currency", String(3), nullable=False),  # "" for hours
    Column("psa", ExactDecimal, nullable=False),
    Column("ledger", ExactDecimal, nullable=True),
    Column("mart", ExactDecimal, nullable=True),
    Column("variance", ExactDecimal, nullable=False),
    Column("explained", ExactDecimal, nullable=False),
    Column("unexplained", ExactDecimal, nullable=False),
    Column("detail", JSONType, nullable=False),  # the cell's JSON with every explaining item (drill-down)
    PrimaryKeyConstraint("run_id", "legal_entity_id", "period", "measure", "currency"),
    Index(None, "legal_entity_id", "period"),
)

#: Alert rules' state (flows/alerts.py): when a rule's breach started (for its duration), when it last fired.
alert_state = Table(
    "alert_state",
    metadata,
    Column("rule", NAME, primary_key=True),
    Column("breach_since", UTCDateTime, nullable=True),
    Column("last_value", Text, nullable=True),
    Column("last_checked_at", UTCDateTime, nullable=False),
    Column("fired_at", UTCDateTime, nullable=True),  # set while firing; cleared when the rule recovers
)
