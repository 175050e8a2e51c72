"""Benchmark: a month-end T&M billing run and fixed-fee revenue recognition.

    .venv/bin/python bench/bench_billing.py [--entries 200000] [--expenses 20000] [--projects 2000]

Builds costed time entries and expenses (not timed), then times ``billing.tm_invoice_drafts`` (one invoice per
project, lines per resource and rate, lineage kept), ``billing.postings_for_invoice`` over the invoices, a
supplementary run with every item already billed (the cost of the exactly-once check), and percent-complete
postings for as many fixed-fee projects. Prints wall times and rates.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from decimal import Decimal

from ledgerbridge.domain import billing, revenue
from ledgerbridge.domain.types import CostedExpense, CostedTime
from ledgerbridge.model import ContractType, Customer, Project, SourceRef, TaxCode, round_money

VAT = TaxCode(code="UK-VAT20", name="VAT", jurisdiction="GB", rate=Decimal("0.20"), payable_account="2300")
CUSTOMER = Customer(
    id="C1", name="C1", legal_entity_id="UK01", currency="GBP", tax_jurisdiction="GB", tax_code="UK-VAT20"
)
RATES = [Decimal(r) for r in ("95.00", "120.00", "133.33", "175.50", "240.00")]


def project(i: int, kind: ContractType) -> Project:
    return Project(
        id=f"P{i:05d}", name=f"P{i}", customer_id="C1", legal_entity_id="UK01", contract_type=kind, currency="GBP",
        cost_center="CC-DEL-UK", start_date=dt.date(2026, 1, 1), contract_value=Decimal("250000.00"),
        estimated_cost=Decimal("180000.00"),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--expenses", type=int, default=20_000)
    ap.add_argument("--projects", type=int, default=2_000)
    a = ap.parse_args()

    projects = {p.id: p for p in (project(i, ContractType.TIME_AND_MATERIALS) for i in range(a.projects))}
    pids = list(projects)
    times = []
    for i in range(a.entries):
        hours = Decimal(1 + i % 32) / 4
        rate = RATES[i % len(RATES)]
        times.append(CostedTime(
            ref=SourceRef.model_construct(system="psa", entity="time_entry", id=f"T{i}", version=1),
            legal_entity_id="UK01", project_id=pids[i % a.projects], resource_id=f"R{i % 300}",
            cost_center="CC-DEL-UK", work_date=dt.date(2026, 3, 1 + i % 31), hours=hours, billable=i % 7 != 0,
            cost_rate=Decimal(60), cost_currency="GBP", cost_amount=round_money(hours * 60, "GBP"), bill_rate=rate,
            bill_currency="GBP", billable_value=round_money(hours * rate, "GBP"),
        ))
    expenses = [
        CostedExpense(
            ref=SourceRef.model_construct(system="psa", entity="expense", id=f"X{i}", version=1),
            legal_entity_id="UK01", project_id=pids[i % a.projects], resource_id="R1", cost_center="CC-DEL-UK",
            expense_date=dt.date(2026, 3, 1 + i % 28), category=("travel", "meals", "lodging")[i % 3],
            billable=i % 4 != 0, amount=Decimal(500 + i % 20000) / 100, currency="EUR" if i % 5 == 0 else "GBP",
        )
        for i in range(a.expenses)
    ]

    def eur_gbp(amount: Decimal, frm: str, to: str, on: dt.date) -> Decimal:
        return amount * Decimal("0.8567")

    t0 = time.perf_counter()
    invoices = billing.tm_invoice_drafts(
        times, expenses, projects, [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31), converter=eur_gbp
    )
    t1 = time.perf_counter()
    postings = [p for inv in invoices for p in billing.postings_for_invoice(inv)]
    t2 = time.perf_counter()
    billed = {r for inv in invoices for ln in inv.lines for r in ln.lineage}
    again = billing.tm_invoice_drafts(
        times, expenses, projects, [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31), converter=eur_gbp,
        already_billed=billed, issued_invoice_ids={inv.id for inv in invoices},
    )
    t3 = time.perf_counter()
    assert again == []
    ff = [project(i, ContractType.FIXED_FEE) for i in range(a.projects)]
    ref = SourceRef(system="ledgerbridge", entity="fixed_fee_revenue", id="run:2026-03", version=1)
    end = dt.date(2026, 3, 31)
    rev = [
        p for i, pr in enumerate(ff)
        for p in revenue.fixed_fee_postings(pr, "2026-03", Decimal(1000 + i * 37), Decimal(0), end, ref)
    ]
    t4 = time.perf_counter()

    items = a.entries + a.expenses
    lines = sum(len(inv.lines) for inv in invoices)
    print(f"T&M run: {items:,} items -> {len(invoices):,} invoices, {lines:,} lines in {t1 - t0:.2f} s "
          f"({items / (t1 - t0):,.0f} items/s)")
    print(f"invoice postings: {len(postings):,} in {t2 - t1:.3f} s")
    print(f"supplementary run, all {len(billed):,} refs already billed: {t3 - t2:.2f} s "
          f"({items / (t3 - t2):,.0f} items/s)")
    print(f"fixed-fee recognition: {len(rev):,} projects in {t4 - t3:.3f} s ({len(rev) / (t4 - t3):,.0f} projects/s)")


if __name__ == "__main__":
    main()
