"""Reporting mart: ``invoice_status`` (amounts, status, ERP number, aging as of an explicit date) and
``revenue_by_method`` built from invoices and journals the real flows produced on a tiny firm (ingest -> post ->
bill -> post), plus the Parquet export read back by DuckDB."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledgerbridge.flows import billing, posting, transactions
from ledgerbridge.flows.main_job import SOURCE
from ledgerbridge.flows.marts import MART_TABLES, build_marts, open_mart
from ledgerbridge.store import invoices as invoices_repo

from flows_support import make_ctx, records, tiny_firm

SEP, OCT = "2026-09", "2026-10"
OPEN = ("submitted", "posted")


def post(ctx: Any, *periods: str) -> None:
    for period in periods:
        for entity in sorted(ctx.reference.entities):
            out = posting.post_period(ctx, entity, period)
            assert out.status in ("posted", "nothing_to_post"), out


def billed_firm(wd: Path, export: Path) -> None:
    """Ingest the whole export, post September and October, bill both, post the invoices."""
    shutil.copytree(export, wd / "psa-export")
    ctx = make_ctx(wd)
    transactions.land(ctx, SOURCE, records(ctx))
    transactions.process_pending(ctx)
    post(ctx, SEP, OCT)
    billing.run_billing(ctx, SEP)
    billing.run_billing(ctx, OCT)
    post(ctx, SEP, OCT)
    ctx.engine.dispose()


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("marts-invoices")
    wd = root / "wd"
    billed_firm(wd, tiny_firm(root))
    return wd


def fresh(tmp_path: Path, base: Path) -> Any:
    wd = tmp_path / "wd"
    shutil.copytree(base, wd, symlinks=True)
    return make_ctx(wd)


def expected_bucket(days: int) -> str:
    if days <= 0:
        return "current"
    for top, label in ((30, "1-30"), (60, "31-60"), (90, "61-90")):
        if days <= top:
            return label
    return ">90"


def invoice_rows(ctx: Any) -> list[invoices_repo.InvoiceRow]:
    with ctx.engine.connect() as conn:
        return invoices_repo.list_invoices(conn)


def test_invoice_status_has_every_invoice_with_exact_totals_and_aging(tmp_path: Path, billed: Path) -> None:
    ctx = fresh(tmp_path, billed)
    invs = invoice_rows(ctx)
    assert {r.kind for r in invs} >= {"tm", "milestone"}
    assert any(r.status in OPEN for r in invs), {r.status for r in invs}
    # one invoice settled, so the mart must show it as not open
    paid = next(r for r in invs if r.status in OPEN)
    with ctx.engine.begin() as conn:
        assert invoices_repo.set_status(conn, paid.id, "paid") == 1
    invs = invoice_rows(ctx)
    dues = {r.id: dt.date.fromisoformat(r.payload["due_date"]) if r.payload.get("due_date") else r.invoice_date
            for r in invs}
    pivot = max(dues.values())
    seen: set[str] = set()
    for offset in (-10, 0, 1, 30, 31, 45, 61, 90, 91, 400):
        as_of = pivot + dt.timedelta(days=offset)
        report = build_marts(ctx, tmp_path / f"mart-{offset}.duckdb", as_of=as_of)
        assert report.as_of == as_of and report.rows["invoice_status"] == len(invs)
        con = open_mart(report.path)
        assert con.execute("SELECT as_of FROM mart_info").fetchall() == [(as_of,)]
        got = {r[0]: r[1:] for r in con.execute(
            "SELECT invoice_id, kind, legal_entity_id, project_id, customer_id, currency, net_total, tax_total, "
            "total, status, erp_number, erp_system, is_open, open_amount, days_past_due, aging_bucket, as_of "
            "FROM invoice_status").fetchall()}
        con.close()
        assert set(got) == {r.id for r in invs}
        for r in invs:
            total = r.net_total + r.tax_total
            assert total == Decimal(r.payload["total"])
            is_open = r.status in OPEN
            days = (as_of - dues[r.id]).days
            assert got[r.id] == (
                r.kind, r.legal_entity_id, r.project_id, r.customer_id, r.currency, r.net_total, r.tax_total, total,
                r.status, r.erp_number, r.erp_system, is_open, total if is_open else 0,
                max(days, 0) if is_open else None, expected_bucket(days) if is_open else None, as_of), r.id
            if is_open:
                seen.add(expected_bucket(days))
        assert got[paid.id][11:15] == (False, 0, None, None)
    assert seen == {"current", "1-30", "31-60", "61-90", ">90"}
    assert all(r.erp_number for r in invs if r.status in OPEN)  # created in the ERP: its number is in the mart


def test_revenue_by_method_equals_the_ledger_revenue_accounts(tmp_path: Path, billed: Path) -> None:
    ctx = fresh(tmp_path, billed)
    report = build_marts(ctx, tmp_path / "mart.duckdb", as_of=dt.date(2026, 11, 30))
    con = open_mart(report.path)
    mart = {(e, p, c, m, a): v for e, p, c, m, a, v in con.execute(
        "SELECT legal_entity_id, period, currency, method, account, amount FROM revenue_by_method").fetchall()}
    assert con.execute("SELECT sum(amount) FROM revenue_by_method").fetchone() == \
        con.execute("SELECT sum(amount) FROM revenue").fetchone()
    con.close()
    revenue_accounts = {a.code for a in ctx.reference.accounts if a.type.value == "revenue"}
    method_of = {"service_revenue": "tm_accrual", "fixed_fee_revenue": "fixed_fee_percent_complete",
                 "milestone_revenue": "milestone", "expense_recovery_revenue": "reimbursable_expense"}
    ledger: dict[tuple[str, str, str, str, str], Decimal] = defaultdict(Decimal)
    for entity in sorted(ctx.reference.entities):
        by_account = {ctx.rules.account_for(role, entity): m for role, m in method_of.items()}
        for (period, account, currency), (debit, credit) in ctx.connector(
                ctx.ledger_system(entity)).account_totals(entity).items():
            if account in revenue_accounts:
                ledger[(entity, period, currency, by_account.get(account, "other"), account)] += credit - debit
    assert ledger and mart == dict(ledger)
    methods = {k[3] for k, v in mart.items() if v}
    assert {"tm_accrual", "milestone"} <= methods, methods


def test_parquet_export_reads_back_identical(tmp_path: Path, billed: Path) -> None:
    ctx = fresh(tmp_path, billed)
    out = tmp_path / "parquet"
    report = build_marts(ctx, tmp_path / "mart.duckdb", as_of=dt.date(2026, 11, 30), parquet_dir=out)
    assert set(report.parquet_files) == set(MART_TABLES)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.parquet" for t in MART_TABLES)
    mart = open_mart(report.path)
    con = duckdb.connect()
    for table in MART_TABLES:
        path = str(report.parquet_files[table])
        assert con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall() == \
            mart.execute(f"SELECT * FROM {table}").fetchall(), table
        types = [r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        assert types == [r[1] for r in mart.execute(f"DESCRIBE {table}").fetchall()], table
    assert report.rows["invoice_status"] > 0 and report.rows["revenue_by_method"] > 0
    mart.close()
    con.close()
