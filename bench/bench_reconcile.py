"""Benchmark: set-wise reconciliation in DuckDB of N PSA items against N ledger lines.

    .venv/bin/python bench/bench_reconcile.py [--rows 1000000] [--threads 0] [--memory-limit 4GB]
    .venv/bin/python bench/bench_reconcile.py --rows 10000000
    .venv/bin/python bench/bench_reconcile.py --rows 0 --mart-lines 1000000

Synthetic data, generated inside DuckDB (3 legal entities, 12 periods, 3 currencies, DECIMAL(38,10) amounts):

* ``psa``: N approved items with their amount, bucketed in the period of their date;
* ``ledger``: N posted lines, one per item, except that every 50th item was *redated* (posted in the next period),
  every 1000th was *dead-lettered* (no ledger line; listed in ``dead_letters``) and every 9973rd was posted with
  one cent more (an unexplained difference to be found).

The reconciliation is the one of ``ledgerbridge.flows.reconcile`` expressed as set-wise SQL: cell totals of both
sides (entity, period, currency), redating explanations (+ in the posted period, - in the dated period), per-item
residuals on the date basis (FULL OUTER JOIN of both sides) classified by the dead-letter table, and per cell
``variance``, ``explained`` and ``unexplained``. The script checks that the unexplained total is exactly the
injected cents and prints seconds per stage, rows/s and the process's peak RSS (DuckDB runs in-process).

``--mart-lines N`` also measures :func:`ledgerbridge.flows.marts.build_marts` on a SQLite state store holding N
posted staging lines (half time entries with their inbox versions: labor cost + revenue accrual; the rest
expenses) and N/100 journal lines, filled with SQL inside SQLite: load seconds (store -> CSV -> DuckDB), build
seconds (the mart SQL) and store rows/s.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import duckdb

MONEY = "DECIMAL(38,10)"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


GENERATE = f"""
CREATE TABLE psa AS
SELECT i AS item_id, ['US01', 'UK01', 'DE01'][i % 3 + 1] AS entity,
       '2026-' || lpad(CAST(i % 12 + 1 AS VARCHAR), 2, '0') AS period,
       ['USD', 'GBP', 'EUR'][(i // 3) % 3 + 1] AS currency,
       CAST(i % 99991 AS {MONEY}) * CAST('0.01' AS {MONEY}) + CAST(1 AS {MONEY}) AS amount
FROM range(?) t(i);

CREATE TABLE ledger AS
SELECT item_id, entity, currency, period AS date_period,
       CASE WHEN item_id % 50 = 7 AND period < '2026-12'
            THEN '2026-' || lpad(CAST(CAST(substr(period, 6, 2) AS INTEGER) + 1 AS VARCHAR), 2, '0')
            ELSE period END AS period,
       amount + CASE WHEN item_id % 9973 = 5 THEN CAST('0.01' AS {MONEY}) ELSE CAST(0 AS {MONEY}) END AS amount
FROM psa WHERE item_id % 1000 <> 3;

CREATE TABLE dead_letters AS
SELECT item_id, 'rates.no_cost_rate' AS error_code FROM psa WHERE item_id % 1000 = 3;
"""

RECONCILE = f"""
CREATE OR REPLACE TABLE recon AS
WITH psa_cells AS (
  SELECT entity, period, currency, sum(amount) AS psa FROM psa GROUP BY ALL),
ledger_cells AS (
  SELECT entity, period, currency, sum(amount) AS ledger FROM ledger GROUP BY ALL),
redating AS (
  SELECT entity, period, currency, sum(amount) AS explained FROM ledger WHERE period <> date_period GROUP BY ALL
  UNION ALL
  SELECT entity, date_period, currency, -sum(amount) FROM ledger WHERE period <> date_period GROUP BY ALL),
residual AS (
  SELECT coalesce(l.item_id, p.item_id) AS item_id, coalesce(l.entity, p.entity) AS entity,
         coalesce(l.date_period, p.period) AS period, coalesce(l.currency, p.currency) AS currency,
         coalesce(l.amount, 0) - coalesce(p.amount, 0) AS diff
  FROM ledger l FULL OUTER JOIN psa p
    ON l.item_id = p.item_id AND l.entity = p.entity AND l.date_period = p.period AND l.currency = p.currency
  WHERE coalesce(l.amount, 0) - coalesce(p.amount, 0) <> 0),
classified AS (
  SELECT r.entity, r.period, r.currency,
         sum(CASE WHEN d.item_id IS NOT NULL THEN r.diff ELSE 0 END) AS explained,
         sum(CASE WHEN d.item_id IS NULL THEN r.diff ELSE 0 END) AS unexplained_items,
         count(*) FILTER (WHERE d.item_id IS NULL) AS unexplained_count
  FROM residual r LEFT JOIN dead_letters d USING (item_id) GROUP BY ALL),
cells AS (
  SELECT entity, period, currency FROM psa_cells UNION SELECT entity, period, currency FROM ledger_cells),
explained AS (
  SELECT entity, period, currency, sum(explained) AS explained FROM (
    SELECT entity, period, currency, explained FROM redating
    UNION ALL SELECT entity, period, currency, explained FROM classified) GROUP BY ALL)
SELECT c.entity, c.period, c.currency,
       CAST(coalesce(p.psa, 0) AS {MONEY}) AS psa, CAST(coalesce(l.ledger, 0) AS {MONEY}) AS ledger,
       CAST(coalesce(l.ledger, 0) - coalesce(p.psa, 0) AS {MONEY}) AS variance,
       CAST(coalesce(x.explained, 0) AS {MONEY}) AS explained,
       CAST(coalesce(l.ledger, 0) - coalesce(p.psa, 0) - coalesce(x.explained, 0) AS {MONEY}) AS unexplained,
       coalesce(k.unexplained_count, 0) AS unexplained_items
FROM cells c LEFT JOIN psa_cells p USING (entity, period, currency)
LEFT JOIN ledger_cells l USING (entity, period, currency)
LEFT JOIN explained x USING (entity, period, currency)
LEFT JOIN classified k USING (entity, period, currency)
ORDER BY c.entity, c.period, c.currency;
"""


FILL_STORE = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :lines)
INSERT INTO staging_lines (txn_type, legal_entity_id, period, entry_date, currency, amounts, dimensions,
    source_system, source_entity, source_id, source_version, sign, status, posting_run_id, redated_from, created_at)
SELECT CASE WHEN i % 4 = 3 THEN 'expense' WHEN i % 2 = 0 THEN 'labor_cost' ELSE 'revenue_accrual' END,
       'US01', '2026-10', '2026-10-15', 'USD',
       '[["' || CASE WHEN i % 4 = 3 THEN 'amount' WHEN i % 2 = 0 THEN 'cost' ELSE 'billable_value' END || '","'
           || (i % 9973) || '.' || (i % 100) || '"]]',
       '[["cost_center","CC-DEL-US"],["project","PRJ-' || (i % 300) || '"]]',
       'psa_files', CASE WHEN i % 4 = 3 THEN 'expense' ELSE 'time_entry' END,
       CASE WHEN i % 4 = 3 THEN 'EX-' || i ELSE 'TE-' || (i / 2) END, 1, 1, 'posted', 'run-1', NULL,
       '2026-11-01 00:00:00'
FROM n;
"""
FILL_INBOX = """
INSERT INTO inbox (idempotency_key, system, entity, external_id, version, payload, received_at, status)
SELECT 'psa_files:time_entry:' || source_id || ':1', 'psa_files', 'time_entry', source_id, '1',
       '{"id":"' || source_id || '","hours":"7.5","billable":true,"resource_id":"RES-' || (id % 500)
       || '","project_id":"PRJ-1","work_date":"2026-10-15"}', '2026-11-01 00:00:00', 'processed'
FROM staging_lines WHERE txn_type = 'labor_cost';
"""
FILL_GL = """
INSERT INTO posting_runs (id, legal_entity_id, period, target_system, status, control_totals, started_at)
VALUES ('run-1', 'US01', '2026-10', 'ledger', 'posted', '{}', '2026-11-01 00:00:00');
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :journals)
INSERT INTO posted_journals (id, posting_run_id, legal_entity_id, period, entry_date, journal_type, target_system,
    payload, content_hash, posted_at)
SELECT 'J-' || i, 'run-1', 'US01', '2026-10', '2026-10-31', 'labor_cost', 'ledger', '{}', 'h', '2026-11-01 00:00:00'
FROM n;
INSERT INTO posted_journal_lines (journal_id, line_no, account, debit, credit, currency, dimensions, lineage)
SELECT id, k.line_no, CASE WHEN k.line_no % 2 = 1 THEN '5000' ELSE '2100' END,
       CASE WHEN k.line_no % 2 = 1 THEN '100.5' ELSE '0' END, CASE WHEN k.line_no % 2 = 1 THEN '0' ELSE '100.5' END,
       'USD', '{"project":"PRJ-1","cost_center":"CC-DEL-US"}', '[]'
FROM posted_journals, (SELECT 1 AS line_no UNION ALL SELECT 2) k;
"""


def bench_mart(lines: int) -> None:
    from ledgerbridge.config import default_config
    from ledgerbridge.flows.context import FlowContext
    from ledgerbridge.flows.marts import build_marts

    with tempfile.TemporaryDirectory(prefix="bench-mart-") as td:
        wd = Path(td)
        cfg = default_config()
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": f"sqlite:///{wd / 'state.sqlite'}"})})
        ctx = FlowContext(cfg, workdir=wd)
        ctx.migrate()
        t0 = time.perf_counter()
        db = sqlite3.connect(wd / "state.sqlite")
        db.execute(FILL_STORE.replace(":lines", str(int(lines))))
        db.execute(FILL_INBOX)
        db.executescript(FILL_GL.replace(":journals", str(max(1, lines // 200))))
        db.commit()
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("staging_lines", "inbox", "posted_journal_lines")}
        db.close()
        t1 = time.perf_counter()
        report = build_marts(ctx, wd / "mart.duckdb")
        src = sum(report.source_rows.values())
        print(f"mart: store {counts} filled in {t1 - t0:.2f} s")
        print(f"mart: load {report.load_seconds:.2f} s ({src / report.load_seconds:,.0f} store rows/s via CSV), "
              f"build {report.build_seconds:.2f} s, total {report.seconds:.2f} s; rows {report.rows}")
        print(f"peak RSS: {peak_rss_mb():,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="PSA items (ledger lines: about as many)")
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (0 = DuckDB's default)")
    ap.add_argument("--memory-limit", default="", help="DuckDB memory_limit, e.g. 4GB (default: DuckDB's)")
    ap.add_argument("--mart-lines", type=int, default=0, help="also time build_marts on a store of N posted lines")
    args = ap.parse_args()
    if args.mart_lines:
        bench_mart(args.mart_lines)
    if not args.rows:
        return
    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    if args.memory_limit:
        con.execute("SET memory_limit = ?", [args.memory_limit])
    n = args.rows
    t0 = time.perf_counter()
    con.execute(GENERATE.replace("range(?)", f"range({int(n)})"))
    t1 = time.perf_counter()
    psa_rows = con.execute("SELECT count(*) FROM psa").fetchone()[0]  # type: ignore[index]
    ledger_rows = con.execute("SELECT count(*) FROM ledger").fetchone()[0]  # type: ignore[index]
    t2 = time.perf_counter()
    con.execute(RECONCILE)
    t3 = time.perf_counter()
    cells, variance, explained, unexplained, items = con.execute(
        "SELECT count(*), sum(abs(variance)), sum(abs(explained)), sum(unexplained), sum(unexplained_items) "
        "FROM recon").fetchone()  # type: ignore[misc]
    injected = con.execute(f"SELECT count(*) * CAST('0.01' AS {MONEY}) FROM psa WHERE item_id % 9973 = 5 "
                           "AND item_id % 1000 <> 3").fetchone()[0]  # type: ignore[index]
    ok = unexplained == injected and isinstance(unexplained, Decimal)
    print(f"rows: psa {psa_rows:,} vs ledger {ledger_rows:,}  (threads {con.execute('SELECT current_setting(?)', ['threads']).fetchone()[0]})")  # type: ignore[index]  # noqa: E501
    print(f"generate: {t1 - t0:8.2f} s")
    print(f"reconcile: {t3 - t2:7.2f} s  ({(psa_rows + ledger_rows) / (t3 - t2):,.0f} rows/s both sides)")
    print(f"cells: {cells}, |variance| {variance}, |explained| {explained}")
    print(f"unexplained: {unexplained} over {items} item(s); injected {injected} -> {'OK' if ok else 'MISMATCH'}")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
