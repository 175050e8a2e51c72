"""The reporting mart: a DuckDB file that finance reporting reads instead of scraping exports.

:func:`build_marts` reads what the engine *posted* from the state store (staging lines with status ``posted``,
posted journals and their lines, the inbox payload of each posted time-entry version for its hours) and builds
the mart with set-wise SQL in DuckDB: ``fact_time``, ``fact_expense``, ``gl_lines``, ``gl_balances``,
``project_margin``, ``utilization``, ``revenue``, ``revenue_by_method``, ``wip``, ``invoice_status`` (with aging
as of an explicit date) and ``mart_info`` (columns: ``docs/marts.md``). Optionally every mart table is also written
as a Parquet file (DuckDB ``COPY``) and/or into a PostgreSQL schema (psycopg ``COPY``).

Money is ``DECIMAL(38,10)`` end to end (never DOUBLE): amounts travel as their exact stored text and ratios are
computed with an exact integer division rounded half away from zero (the ``lb_div`` macro below).

Loading: DuckDB's sqlite scanner is not available offline (and the store may be PostgreSQL), so rows are read
through SQLAlchemy in batches, written to a temporary CSV file as their exact text, and read by DuckDB's CSV reader
with declared column types. JSON columns go across as JSON text and are parsed inside DuckDB.

The mart is rebuilt from scratch each time into a temporary file beside ``path`` and moved into place
(``os.replace``): a reader sees the old mart or the new one, never half of one; building twice from the same store
gives the same content.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa

from ledgerbridge.flows.context import FlowContext
from ledgerbridge.store.schema import inbox as inbox_t
from ledgerbridge.store.schema import invoices as invoices_t
from ledgerbridge.store.schema import posted_journal_lines as pjl_t
from ledgerbridge.store.schema import posted_journals as pj_t
from ledgerbridge.store.schema import staging_lines as staging_t

MONEY = "DECIMAL(38,10)"
#: tables of the mart users read (the ``src_*`` tables are the loaded store rows they are built from)
MART_TABLES = ("posted_lines", "fact_time", "fact_expense", "gl_lines", "gl_balances", "project_margin",
               "project_margin_functional", "utilization", "revenue", "revenue_by_method", "wip", "invoice_status",
               "mart_info")
#: revenue recognition method of each revenue posting-rule role (``revenue_by_method``)
REVENUE_METHODS = {"service_revenue": "tm_accrual", "fixed_fee_revenue": "fixed_fee_percent_complete",
                   "milestone_revenue": "milestone", "expense_recovery_revenue": "reimbursable_expense"}
#: posting-rule roles the mart and the reconciliation need, per entity
ROLES = ("project_cost", "service_revenue", "project_expense", "unbilled_receivables", "fixed_fee_revenue",
         "milestone_revenue", "expense_recovery_revenue")
#: invoice statuses that are still receivable (aged); the others are not issued (draft, failed) or settled
OPEN_INVOICE_STATUSES = ("submitted", "posted")
DEFAULT_PG_SCHEMA = "ledgerbridge_mart"
FETCH_BATCH = 10_000


@dataclass
class MartReport:
    """What :func:`build_marts` built: the file, row counts per table, and timings (seconds)."""

    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    source_rows: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    build_seconds: float = 0.0
    seconds: float = 0.0
    loader: str = "sqlalchemy-csv"
    as_of: dt.date | None = None
    parquet_files: dict[str, Path] = field(default_factory=dict)
    postgres_rows: dict[str, int] = field(default_factory=dict)
    postgres_schema: str | None = None
    export_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": dict(self.rows), "source_rows": dict(self.source_rows),
                "load_seconds": round(self.load_seconds, 3), "build_seconds": round(self.build_seconds, 3),
                "seconds": round(self.seconds, 3), "loader": self.loader,
                "as_of": self.as_of.isoformat() if self.as_of else None,
                "parquet_files": {k: str(v) for k, v in self.parquet_files.items()},
                "postgres_rows": dict(self.postgres_rows), "postgres_schema": self.postgres_schema,
                "export_seconds": round(self.export_seconds, 3)}


# --------------------------------------------------------------------------------------------------- loading


def _text(col: Any) -> Any:
    """A column as its stored text (exact decimals, raw JSON)."""
    return sa.cast(col, sa.Text)


def _copy_rows(duck: duckdb.DuckDBPyConnection, tmpdir: Path, table: str, columns: Sequence[tuple[str, str]],
               batches: Iterable[Sequence[Sequence[Any]]]) -> int:
    """Create ``table`` with ``columns`` (name, DuckDB type) from batches of rows via a CSV file of exact text."""
    path = tmpdir / f"{table}.csv"
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        for part in batches:
            w.writerows(part)
            n += len(part)
    cols = ", ".join(f"{_q(name)}: {_q(typ)}" for name, typ in columns)
    if n:
        duck.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv(?, header = false, columns = {{{cols}}}, "
                     "nullstr = '', quote = '\"', escape = '\"', auto_detect = false)", [str(path)])
    else:
        duck.execute(f"CREATE TABLE {table} ({', '.join(f'{name} {typ}' for name, typ in columns)})")
    path.unlink()
    return n


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stream(conn: sa.Connection, query: Any) -> Iterator[Sequence[Sequence[Any]]]:
    """Batches of rows read with a server-side cursor where the driver has one (decimals and JSON are cast to text
    in the query, so every value's ``str`` is exact)."""
    result = conn.execution_options(stream_results=True, yield_per=FETCH_BATCH).execute(query)
    try:
        yield from result.partitions(FETCH_BATCH)
    finally:
        result.close()


SRC_LINES = [
    ("line_id", "BIGINT"), ("txn_type", "VARCHAR"), ("legal_entity_id", "VARCHAR"), ("period", "VARCHAR"),
    ("entry_date", "DATE"), ("currency", "VARCHAR"), ("amounts", "VARCHAR"), ("dimensions", "VARCHAR"),
    ("source_system", "VARCHAR"), ("source_entity", "VARCHAR"), ("source_id", "VARCHAR"),
    ("source_version", "INTEGER"), ("sign", "INTEGER"), ("posting_run_id", "VARCHAR"), ("redated_from", "VARCHAR"),
]
SRC_TIME = [
    ("system", "VARCHAR"), ("external_id", "VARCHAR"), ("version", "VARCHAR"), ("hours", MONEY),
    ("billable", "BOOLEAN"), ("resource_id", "VARCHAR"), ("project_id", "VARCHAR"), ("work_date", "DATE"),
]
SRC_GL = [
    ("journal_id", "VARCHAR"), ("line_no", "INTEGER"), ("account", "VARCHAR"), ("debit", MONEY), ("credit", MONEY),
    ("currency", "VARCHAR"), ("dimensions", "VARCHAR"), ("functional_currency", "VARCHAR"),
    ("functional_debit", MONEY), ("functional_credit", MONEY), ("fx_rate", MONEY), ("fx_rate_date", "DATE"),
    ("lineage", "VARCHAR"), ("posting_run_id", "VARCHAR"), ("legal_entity_id", "VARCHAR"), ("period", "VARCHAR"),
    ("entry_date", "DATE"), ("journal_type", "VARCHAR"), ("target_system", "VARCHAR"), ("target_ref", "VARCHAR"),
    ("reverses", "VARCHAR"), ("redated_from", "VARCHAR"), ("posted_at", "VARCHAR"),
]
SRC_ACCOUNTS = [("legal_entity_id", "VARCHAR"), ("account", "VARCHAR"), ("account_name", "VARCHAR"),
                ("account_type", "VARCHAR")]
SRC_ROLES = [("legal_entity_id", "VARCHAR"), ("role", "VARCHAR"), ("account", "VARCHAR")]
SRC_ENTITIES = [("legal_entity_id", "VARCHAR"), ("name", "VARCHAR"), ("functional_currency", "VARCHAR")]
SRC_INVOICES = [
    ("invoice_id", "VARCHAR"), ("kind", "VARCHAR"), ("legal_entity_id", "VARCHAR"), ("project_id", "VARCHAR"),
    ("customer_id", "VARCHAR"), ("period", "VARCHAR"), ("invoice_date", "DATE"), ("due_date", "DATE"),
    ("currency", "VARCHAR"), ("net_total", MONEY), ("tax_total", MONEY), ("status", "VARCHAR"),
    ("erp_system", "VARCHAR"), ("erp_number", "VARCHAR"), ("credits", "VARCHAR"),
]
SRC_REVENUE_METHODS = [("legal_entity_id", "VARCHAR"), ("account", "VARCHAR"), ("method", "VARCHAR"),
                       ("role", "VARCHAR")]


def _load_store(ctx: FlowContext, duck: duckdb.DuckDBPyConnection, tmpdir: Path) -> dict[str, int]:
    s = staging_t.c
    lines_q = sa.select(
        s.id, s.txn_type, s.legal_entity_id, s.period, s.entry_date, s.currency, _text(s.amounts),
        _text(s.dimensions), s.source_system, s.source_entity, s.source_id, s.source_version, s.sign,
        s.posting_run_id, s.redated_from,
    ).where(s.status == "posted").order_by(s.id)
    i = inbox_t.c
    time_q = sa.select(
        i.system, i.external_id, i.version, i.payload["hours"].as_string(), i.payload["billable"].as_boolean(),
        i.payload["resource_id"].as_string(), i.payload["project_id"].as_string(),
        i.payload["work_date"].as_string(),
    ).where(i.entity == "time_entry", i.status != "dead").order_by(i.id)
    g, j = pjl_t.c, pj_t.c
    gl_q = sa.select(
        g.journal_id, g.line_no, g.account, _text(g.debit), _text(g.credit), g.currency, _text(g.dimensions),
        g.functional_currency, _text(g.functional_debit), _text(g.functional_credit), _text(g.fx_rate),
        g.fx_rate_date, _text(g.lineage), j.posting_run_id, j.legal_entity_id, j.period, j.entry_date,
        j.journal_type, j.target_system, j.target_ref, j.reverses, j.redated_from, _text(j.posted_at),
    ).select_from(pjl_t.join(pj_t, pj_t.c.id == pjl_t.c.journal_id))
    v = invoices_t.c
    inv_q = sa.select(
        v.id, v.kind, v.legal_entity_id, v.project_id, v.customer_id, v.period, v.invoice_date,
        v.payload["due_date"].as_string(), v.currency, _text(v.net_total), _text(v.tax_total), v.status,
        v.erp_system, v.erp_number, v.credits,
    ).order_by(v.id)
    out: dict[str, int] = {}
    with ctx.engine.connect() as conn:
        out["src_lines"] = _copy_rows(duck, tmpdir, "src_lines", SRC_LINES, _stream(conn, lines_q))
        out["src_time_versions"] = _copy_rows(duck, tmpdir, "src_time_versions", SRC_TIME, _stream(conn, time_q))
        out["src_gl"] = _copy_rows(duck, tmpdir, "src_gl", SRC_GL, _stream(conn, gl_q))
        out["src_invoices"] = _copy_rows(duck, tmpdir, "src_invoices", SRC_INVOICES, _stream(conn, inv_q))
    ref = ctx.reference
    entities = sorted(ref.entities)
    accounts: dict[tuple[str, str], tuple[str, str]] = {}
    for a in sorted(ref.accounts, key=lambda a: (a.legal_entity_id is not None, a.code)):
        for e in ([a.legal_entity_id] if a.legal_entity_id else entities):
            accounts[(e, a.code)] = (a.name, a.type.value)  # entity-specific accounts override shared ones
    out["src_accounts"] = _copy_rows(duck, tmpdir, "src_accounts", SRC_ACCOUNTS,
                                     [[(e, c, n, t) for (e, c), (n, t) in sorted(accounts.items())]])
    out["src_roles"] = _copy_rows(duck, tmpdir, "src_roles", SRC_ROLES,
                                  [[(e, r, ctx.rules.account_for(r, e)) for e in entities for r in ROLES]])
    methods: dict[tuple[str, str], tuple[str, str]] = {}
    for e in entities:
        for role, method in REVENUE_METHODS.items():  # one method per account (first role wins if two share one)
            methods.setdefault((e, ctx.rules.account_for(role, e)), (method, role))
    out["src_revenue_methods"] = _copy_rows(duck, tmpdir, "src_revenue_methods", SRC_REVENUE_METHODS,
                                            [[(e, a, m, r) for (e, a), (m, r) in sorted(methods.items())]])
    out["src_entities"] = _copy_rows(duck, tmpdir, "src_entities", SRC_ENTITIES, [[
        (e.id, e.name, e.functional_currency) for e in sorted(ref.entities.values(), key=lambda e: e.id)]])
    return out


# --------------------------------------------------------------------------------------------------- building

#: exact ``a / b`` rounded half away from zero to ``s`` decimals (s <= 10), as DECIMAL(38,10); NULL when b is 0.
#: DuckDB divides decimals in DOUBLE; this divides the scaled integers instead.
LB_DIV = f"""
CREATE OR REPLACE TEMP MACRO lb_div(a, b, s) AS CASE WHEN b IS NULL OR b = 0 OR a IS NULL THEN NULL ELSE
  CAST(sign(a) * sign(b) * ((2 * abs(CAST(a * 10000000000 AS HUGEINT)) * CAST(pow(10, s) AS HUGEINT)
       + abs(CAST(b * 10000000000 AS HUGEINT))) // (2 * abs(CAST(b * 10000000000 AS HUGEINT))))
       * CAST(pow(10, 10 - s) AS HUGEINT) AS DECIMAL(38,0)) * CAST('0.0000000001' AS {MONEY}) END;
CREATE OR REPLACE TEMP MACRO lb_dim(pairs, name) AS
  list_filter(json_transform(pairs, '[["VARCHAR"]]'), lambda p: p[1] = name)[1][2];
"""

BUILD_SQL = f"""
CREATE TABLE posted_lines AS
WITH u AS (SELECT *, unnest(json_transform(amounts, '[["VARCHAR"]]')) AS pair FROM src_lines)
SELECT line_id, txn_type, legal_entity_id, period, entry_date, strftime(entry_date, '%Y-%m') AS date_period,
       redated_from, currency, source_system, source_entity, source_id, source_version, sign, posting_run_id,
       lb_dim(dimensions, 'project') AS project_id, lb_dim(dimensions, 'cost_center') AS cost_center,
       pair[1] AS amount_name, CAST(pair[2] AS {MONEY}) AS amount, CAST(pair[2] AS {MONEY}) * sign AS signed_amount
FROM u ORDER BY line_id, amount_name;

CREATE TABLE fact_time AS
WITH lab AS (SELECT * FROM posted_lines WHERE source_entity = 'time_entry' AND txn_type = 'labor_cost'),
     rev AS (SELECT * FROM posted_lines WHERE source_entity = 'time_entry' AND txn_type = 'revenue_accrual'),
     k AS (
       SELECT coalesce(lab.source_system, rev.source_system) AS source_system,
              coalesce(lab.source_id, rev.source_id) AS time_entry_id,
              coalesce(lab.source_version, rev.source_version) AS version,
              coalesce(lab.sign, rev.sign) AS sign,
              coalesce(lab.legal_entity_id, rev.legal_entity_id) AS legal_entity_id,
              coalesce(lab.project_id, rev.project_id) AS project_id,
              coalesce(lab.cost_center, rev.cost_center) AS cost_center,
              coalesce(lab.entry_date, rev.entry_date) AS work_date,
              coalesce(lab.period, rev.period) AS period,
              coalesce(lab.redated_from, rev.redated_from) AS redated_from,
              coalesce(lab.signed_amount, CAST(0 AS {MONEY})) AS cost,
              lab.currency AS cost_currency,
              coalesce(rev.signed_amount, CAST(0 AS {MONEY})) AS billable_value,
              rev.currency AS bill_currency,
              coalesce(lab.posting_run_id, rev.posting_run_id) AS posting_run_id
       FROM lab FULL OUTER JOIN rev
         ON lab.source_system = rev.source_system AND lab.source_id = rev.source_id
        AND lab.source_version = rev.source_version AND lab.sign = rev.sign)
SELECT k.legal_entity_id, k.project_id, v.resource_id, k.cost_center, k.time_entry_id, k.version, k.sign,
       k.work_date, k.period, k.redated_from, coalesce(v.billable, false) AS billable,
       CAST(v.hours * k.sign AS {MONEY}) AS hours, k.cost, k.cost_currency, k.billable_value,
       coalesce(k.bill_currency, k.cost_currency) AS currency, k.source_system, k.posting_run_id
FROM k LEFT JOIN src_time_versions v
  ON v.system = k.source_system AND v.external_id = k.time_entry_id AND v.version = CAST(k.version AS VARCHAR)
ORDER BY k.legal_entity_id, k.period, k.time_entry_id, k.version, k.sign;

CREATE TABLE fact_expense AS
SELECT legal_entity_id, project_id, cost_center, source_id AS expense_id, source_version AS version, sign,
       entry_date AS expense_date, period, redated_from, signed_amount AS amount, currency, source_system,
       posting_run_id
FROM posted_lines WHERE source_entity = 'expense' AND txn_type = 'expense'
ORDER BY legal_entity_id, period, expense_id, version, sign;

CREATE TABLE gl_lines AS
SELECT g.legal_entity_id, g.period, g.entry_date, g.journal_id, g.line_no, g.journal_type, g.account,
       a.account_name, a.account_type, g.debit, g.credit, g.currency,
       json_extract_string(g.dimensions, '$.project') AS project_id,
       json_extract_string(g.dimensions, '$.cost_center') AS cost_center,
       coalesce(g.functional_currency, e.functional_currency) AS functional_currency,
       coalesce(g.functional_debit, g.debit) AS functional_debit,
       coalesce(g.functional_credit, g.credit) AS functional_credit,
       g.fx_rate, g.fx_rate_date, json_array_length(g.lineage) AS lineage_count, g.reverses, g.redated_from,
       g.posting_run_id, g.target_system, g.target_ref, g.posted_at
FROM src_gl g LEFT JOIN src_accounts a ON a.legal_entity_id = g.legal_entity_id AND a.account = g.account
LEFT JOIN src_entities e ON e.legal_entity_id = g.legal_entity_id
ORDER BY g.legal_entity_id, g.period, g.journal_id, g.line_no;

CREATE TABLE gl_balances AS
SELECT legal_entity_id, period, account, any_value(account_name) AS account_name,
       any_value(account_type) AS account_type, currency,
       sum(debit) AS debit, sum(credit) AS credit, sum(debit) - sum(credit) AS net
FROM gl_lines GROUP BY legal_entity_id, period, account, currency
ORDER BY legal_entity_id, period, account, currency;

CREATE TABLE revenue AS
SELECT legal_entity_id, period, account, any_value(account_name) AS account_name, currency,
       sum(credit) - sum(debit) AS amount, any_value(functional_currency) AS functional_currency,
       sum(functional_credit) - sum(functional_debit) AS functional_amount
FROM gl_lines WHERE account_type = 'revenue'
GROUP BY legal_entity_id, period, account, currency
ORDER BY legal_entity_id, period, account, currency;

CREATE TABLE project_margin AS
WITH m AS (
  SELECT legal_entity_id, project_id, period, currency,
         sum(CASE WHEN account_type = 'revenue' THEN credit - debit ELSE 0 END) AS revenue,
         sum(CASE WHEN account_type = 'expense' THEN debit - credit ELSE 0 END) AS cost
  FROM gl_lines WHERE project_id IS NOT NULL AND account_type IN ('revenue', 'expense')
  GROUP BY legal_entity_id, project_id, period, currency)
SELECT legal_entity_id, project_id, period, currency, CAST(revenue AS {MONEY}) AS revenue,
       CAST(cost AS {MONEY}) AS cost, CAST(revenue - cost AS {MONEY}) AS margin,
       lb_div(CAST((revenue - cost) * 100 AS {MONEY}), CAST(revenue AS {MONEY}), 2) AS margin_pct
FROM m ORDER BY legal_entity_id, project_id, period, currency;

CREATE TABLE project_margin_functional AS
WITH m AS (
  SELECT legal_entity_id, project_id, period, functional_currency,
         sum(CASE WHEN account_type = 'revenue' THEN functional_credit - functional_debit ELSE 0 END) AS revenue,
         sum(CASE WHEN account_type = 'expense' THEN functional_debit - functional_credit ELSE 0 END) AS cost
  FROM gl_lines WHERE project_id IS NOT NULL AND account_type IN ('revenue', 'expense')
  GROUP BY legal_entity_id, project_id, period, functional_currency)
SELECT legal_entity_id, project_id, period, functional_currency, CAST(revenue AS {MONEY}) AS revenue,
       CAST(cost AS {MONEY}) AS cost, CAST(revenue - cost AS {MONEY}) AS margin,
       lb_div(CAST((revenue - cost) * 100 AS {MONEY}), CAST(revenue AS {MONEY}), 2) AS margin_pct
FROM m ORDER BY legal_entity_id, project_id, period;

CREATE TABLE utilization AS
WITH u AS (
  SELECT resource_id, period, sum(hours) AS total_hours,
         sum(CASE WHEN billable THEN hours ELSE 0 END) AS billable_hours
  FROM fact_time GROUP BY resource_id, period)
SELECT resource_id, period, CAST(total_hours AS {MONEY}) AS total_hours,
       CAST(billable_hours AS {MONEY}) AS billable_hours,
       CAST(total_hours - billable_hours AS {MONEY}) AS non_billable_hours,
       lb_div(CAST(billable_hours AS {MONEY}), CAST(total_hours AS {MONEY}), 4) AS utilization
FROM u ORDER BY resource_id, period;

CREATE TABLE wip AS
SELECT g.legal_entity_id, g.project_id, g.currency, max(g.period) AS last_period,
       sum(g.debit) AS debit, sum(g.credit) AS credit, sum(g.debit) - sum(g.credit) AS balance
FROM gl_lines g JOIN src_roles r
  ON r.legal_entity_id = g.legal_entity_id AND r.role = 'unbilled_receivables' AND r.account = g.account
GROUP BY g.legal_entity_id, g.project_id, g.currency
ORDER BY g.legal_entity_id, g.project_id, g.currency;

CREATE TABLE revenue_by_method AS
SELECT g.legal_entity_id, g.period, g.currency, coalesce(m.method, 'other') AS method, any_value(m.role) AS role,
       g.account, any_value(g.account_name) AS account_name, sum(g.credit) - sum(g.debit) AS amount,
       any_value(g.functional_currency) AS functional_currency,
       sum(g.functional_credit) - sum(g.functional_debit) AS functional_amount
FROM gl_lines g LEFT JOIN src_revenue_methods m ON m.legal_entity_id = g.legal_entity_id AND m.account = g.account
WHERE g.account_type = 'revenue' OR m.method IS NOT NULL
GROUP BY g.legal_entity_id, g.period, g.currency, coalesce(m.method, 'other'), g.account
ORDER BY g.legal_entity_id, g.period, g.currency, method, g.account;
"""

#: ``invoice_status`` and ``mart_info``; ``{as_of}`` is an ISO date literal (formatted from a ``datetime.date``)
INVOICE_SQL = f"""
CREATE TABLE invoice_status AS
WITH i AS (
  SELECT *, DATE '{{as_of}}' AS as_of, DATE '{{as_of}}' - coalesce(due_date, invoice_date) AS overdue,
         status IN ({", ".join(_q(s) for s in OPEN_INVOICE_STATUSES)}) AS is_open
  FROM src_invoices)
SELECT invoice_id, kind, legal_entity_id, project_id, customer_id, period, invoice_date, due_date, currency,
       net_total, tax_total, CAST(net_total + tax_total AS {MONEY}) AS total, status, is_open, erp_system, erp_number,
       credits AS credits_invoice_id, as_of,
       CASE WHEN is_open THEN CAST(net_total + tax_total AS {MONEY}) ELSE CAST(0 AS {MONEY}) END AS open_amount,
       CASE WHEN is_open THEN greatest(overdue, 0) END AS days_past_due,
       CASE WHEN NOT is_open THEN NULL WHEN overdue <= 0 THEN 'current' WHEN overdue <= 30 THEN '1-30'
            WHEN overdue <= 60 THEN '31-60' WHEN overdue <= 90 THEN '61-90' ELSE '>90' END AS aging_bucket
FROM i ORDER BY legal_entity_id, invoice_date, invoice_id;

CREATE TABLE mart_info AS SELECT DATE '{{as_of}}' AS as_of;
"""


def build_marts(ctx: FlowContext, path: Path, *, as_of: dt.date | None = None, parquet_dir: Path | None = None,
                postgres_url: str | None = None, postgres_schema: str = DEFAULT_PG_SCHEMA) -> MartReport:
    """(Re)build the DuckDB reporting mart at ``path`` from what the store says was posted (module doc).

    ``as_of``: the date invoices are aged against (default: today, UTC); recorded in ``mart_info``.
    ``parquet_dir``: also write every table of :data:`MART_TABLES` there as ``<table>.parquet``.
    ``postgres_url``: also write every mart table into ``postgres_schema`` of that PostgreSQL database (tables
    dropped and recreated in one transaction). An export failure fails the build and leaves the old mart in place.
    """
    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    as_of = as_of or dt.datetime.now(dt.UTC).date()
    if not isinstance(as_of, dt.date) or isinstance(as_of, dt.datetime):
        raise TypeError(f"build_marts: as_of={as_of!r} must be a datetime.date (e.g. datetime.date(2026, 11, 30))")
    report = MartReport(path=path, as_of=as_of)
    try:
        duck = duckdb.connect(str(tmp))
        try:
            with tempfile.TemporaryDirectory(prefix="ledgerbridge-mart-") as td:
                report.source_rows = _load_store(ctx, duck, Path(td))
            t1 = time.perf_counter()
            report.load_seconds = t1 - t0
            duck.execute(LB_DIV)
            duck.execute(BUILD_SQL)
            duck.execute(INVOICE_SQL.format(as_of=as_of.isoformat()))
            for name in ("fact_time", "fact_expense"):
                _check_no_missing(duck, name)
            report.rows = {name: int(duck.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
                           for name in MART_TABLES}
            report.build_seconds = time.perf_counter() - t1
            duck.execute("CHECKPOINT")
            t2 = time.perf_counter()
            if parquet_dir is not None:
                report.parquet_files = write_parquet(duck, Path(parquet_dir))
            if postgres_url is not None:
                report.postgres_rows = write_postgres(duck, postgres_url, postgres_schema)
                report.postgres_schema = postgres_schema
            report.export_seconds = time.perf_counter() - t2
        finally:
            duck.close()
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(str(tmp) + ".wal").unlink()
    report.seconds = time.perf_counter() - t0
    return report


def write_parquet(duck: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, Path]:
    """Every table of :data:`MART_TABLES` as ``<directory>/<table>.parquet`` (DuckDB ``COPY``; each file written
    beside its target and moved into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for table in MART_TABLES:
        final = directory / f"{table}.parquet"
        tmp = directory / f".{table}.parquet.{uuid.uuid4().hex[:8]}.tmp"
        try:
            duck.execute(f"COPY {table} TO {_q(str(tmp))} (FORMAT parquet)")
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        out[table] = final
    return out


#: DuckDB column type -> PostgreSQL column type (DECIMAL(p,s) -> NUMERIC(p,s))
PG_TYPES = {"VARCHAR": "text", "INTEGER": "integer", "BIGINT": "bigint", "SMALLINT": "smallint",
            "TINYINT": "smallint", "HUGEINT": "numeric(38,0)", "UTINYINT": "smallint", "USMALLINT": "integer",
            "UINTEGER": "bigint", "UBIGINT": "numeric(20,0)", "DATE": "date", "BOOLEAN": "boolean",
            "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz"}


def _pg_type(table: str, column: str, duck_type: str) -> str:
    if duck_type.startswith("DECIMAL("):
        return "numeric" + duck_type[len("DECIMAL"):]
    pg = PG_TYPES.get(duck_type)
    if pg is None:
        raise TypeError(f"reporting mart: column {table}.{column} has DuckDB type {duck_type}, which has no "
                        "PostgreSQL mapping; add it to ledgerbridge.flows.marts.PG_TYPES")
    return pg


def _pg_conninfo(url: str) -> str:
    """A libpq URL or conninfo; a SQLAlchemy URL (``postgresql+psycopg://``) is accepted too."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def write_postgres(duck: duckdb.DuckDBPyConnection, url: str, schema: str = DEFAULT_PG_SCHEMA) -> dict[str, int]:
    """Write every table of :data:`MART_TABLES` into ``schema`` of the PostgreSQL database at ``url``: the schema
    is created if missing, each table dropped and recreated (money as NUMERIC(38,10)) and bulk loaded with
    ``COPY``, all in one transaction (readers see the old tables or the new ones). Returns rows per table."""
    import psycopg
    from psycopg import sql

    tables = {t: duck.execute(f"DESCRIBE {t}").fetchall() for t in MART_TABLES}
    out: dict[str, int] = {}
    try:
        conn = psycopg.connect(_pg_conninfo(url))
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"reporting mart: cannot connect to PostgreSQL for the mart export ({exc}); check "
                           "postgres_url (e.g. postgresql://user@host:5432/dbname) and that the server is up") from exc
    with conn:  # commits on success, rolls back on error
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for table, cols in tables.items():
            ident = sql.Identifier(schema, table)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c[0]), sql.SQL(_pg_type(table, c[0], c[1]))) for c in cols)))
            n = 0
            res = duck.execute(f"SELECT * FROM {table}")
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(ident)) as copy:
                while batch := res.fetchmany(FETCH_BATCH):
                    for row in batch:
                        copy.write_row(row)
                    n += len(batch)
            out[table] = n
    return out


def _check_no_missing(duck: duckdb.DuckDBPyConnection, table: str) -> None:
    """Every posted time line must find its inbox version (hours): a missing one is a broken store, not a zero."""
    if table != "fact_time":
        return
    row = duck.execute("SELECT time_entry_id, version FROM fact_time WHERE hours IS NULL LIMIT 1").fetchone()
    if row is not None:
        raise RuntimeError(f"reporting mart: posted time entry {row[0]} v{row[1]} has no inbox payload (hours); the "
                           "store's inbox lost a version it posted — restore the store from backup or re-ingest it")


def open_mart(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a built mart."""
    if not Path(path).exists():
        raise FileNotFoundError(f"reporting mart {path} does not exist: build it with build_marts(ctx, path) "
                                "(ledgerbridge demo run builds it too)")
    return duckdb.connect(str(path), read_only=True)
