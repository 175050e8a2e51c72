"""Billing and revenue postings through the real posting rules (domain.posting with the chart.md defaults):
journals balance, and unbilled receivables clear to exactly recognised revenue minus billed net."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain import billing, posting, revenue
from ledgerbridge.domain.types import CostedExpense, CostedTime, Posting
from ledgerbridge.model import (
    BillingMilestone,
    ContractType,
    Customer,
    MilestoneStatus,
    Project,
    SourceRef,
    TaxCode,
    round_money,
)

VAT = TaxCode(code="UK-VAT20", name="VAT", jurisdiction="GB", rate=D("0.20"), payable_account="2300")
CUSTOMER = Customer(
    id="C1", name="C1", legal_entity_id="UK01", currency="GBP", tax_jurisdiction="GB", tax_code="UK-VAT20"
)


def project(pid: str, kind: ContractType, **kw: object) -> Project:
    return Project.model_validate(
        {"id": pid, "name": pid, "customer_id": "C1", "legal_entity_id": "UK01", "contract_type": kind,
         "currency": "GBP", "cost_center": "CC-DEL-UK", "start_date": dt.date(2026, 1, 1), **kw}
    )


TM = project("P-TM", ContractType.TIME_AND_MATERIALS)


def balances(postings: list[Posting]) -> dict[tuple[str, str], D]:
    """(account, project) -> debit minus credit, from the summarized journals."""
    summary = posting.summarize(postings, posting.default_rules())
    assert summary.ok, [str(r.error) for r in [*summary.rejected_postings, *summary.rejected_journals]]
    out: dict[tuple[str, str], D] = defaultdict(D)
    for j in summary.journals:
        assert sum(ln.debit for ln in j.lines) == sum(ln.credit for ln in j.lines)
        for ln in j.lines:
            out[(ln.account, ln.dimensions.get("project", ""))] += ln.debit - ln.credit
    return out


@st.composite
def tm_items(draw: st.DrawFn) -> tuple[list[CostedTime], list[CostedExpense]]:
    times = []
    for i in range(draw(st.integers(1, 25))):
        hours = D(draw(st.integers(1, 40))) / 4
        rate = D(draw(st.sampled_from([9999, 13333, 15000]))) / 100
        billable = draw(st.booleans())
        times.append(CostedTime(
            ref=SourceRef(system="psa", entity="time_entry", id=f"T{i}", version=1), legal_entity_id="UK01",
            project_id="P-TM", resource_id=draw(st.sampled_from(["R1", "R2"])), cost_center="CC-DEL-UK",
            work_date=dt.date(2026, 3, draw(st.integers(1, 31))), hours=hours, billable=billable,
            cost_rate=D(55), cost_currency="GBP", cost_amount=round_money(hours * 55, "GBP"),
            bill_rate=rate if billable else D(0), bill_currency="GBP",
            billable_value=round_money(hours * rate, "GBP") if billable else D("0.00"),
        ))
    expenses = [
        CostedExpense(
            ref=SourceRef(system="psa", entity="expense", id=f"X{i}", version=1), legal_entity_id="UK01",
            project_id="P-TM", resource_id="R1", cost_center="CC-DEL-UK", expense_date=dt.date(2026, 3, 9),
            category=draw(st.sampled_from(["travel", "meals"])), billable=draw(st.booleans()),
            amount=D(draw(st.integers(1, 50000))) / 100, currency="GBP",
        )
        for i in range(draw(st.integers(0, 6)))
    ]
    return times, expenses


@settings(max_examples=40, deadline=None)
@given(items=tm_items())
def test_tm_month_clears_unbilled_and_books_receivable_tax_and_revenue(
    items: tuple[list[CostedTime], list[CostedExpense]],
) -> None:
    times, expenses = items
    invoices = billing.tm_invoice_drafts(times, expenses, [TM], [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31))
    ps: list[Posting] = [p for t in times for p in posting.postings_for_time(t)]
    ps += [p for x in expenses for p in posting.postings_for_expense(x)]
    ps += [p for inv in invoices for p in billing.postings_for_invoice(inv, cost_center="CC-DEL-UK")]
    bal = balances(ps)
    billed_value = sum(t.billable_value for t in times if t.billable)
    rebilled = sum(x.amount for x in expenses if x.billable)
    net = sum((inv.net_total for inv in invoices), D(0))
    tax = sum((inv.tax_total for inv in invoices), D(0))
    assert bal[("1200", "P-TM")] == 0  # every accrued and rebilled pound is billed
    # receivables: the net carries the project dimension, the tax rule line carries none (chart.md)
    assert (bal[("1100", "P-TM")], bal[("1100", "")]) == (net, tax)
    assert bal[("2300", "")] == -tax
    assert bal[("4000", "P-TM")] == -billed_value  # service revenue = the accrual of billable time only
    assert bal[("4300", "P-TM")] == -rebilled  # rebilled expenses: reimbursable expense revenue


@settings(max_examples=40, deadline=None)
@given(items=tm_items())
def test_erp_booked_invoices_with_relief_give_the_same_ledger(
    items: tuple[list[CostedTime], list[CostedExpense]],
) -> None:
    """An ERP that books invoices itself (Tryton) credits revenue-type accounts on the invoice lines: work lines on
    the invoice clearing account 4900, rebilled expense lines on 4300. With the engine's relief postings the
    combined ledger equals the engine-booked one: unbilled cleared, service revenue = the accrual, clearing = 0."""
    times, expenses = items
    invoices = billing.tm_invoice_drafts(times, expenses, [TM], [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31))
    ps: list[Posting] = [p for t in times for p in posting.postings_for_time(t)]
    ps += [p for x in expenses for p in posting.postings_for_expense(x)]
    ps += [p for inv in invoices for p in billing.relief_postings_for_invoice(inv)]
    bal = balances(ps)
    for inv in invoices:  # what the ERP books when it posts each invoice
        for ln in inv.lines:
            account = "4300" if billing.is_expense_line(ln) else "4900"
            bal[(account, "P-TM")] -= ln.net_amount
        bal[("1100", "P-TM")] += inv.net_total
        bal[("1100", "")] += inv.tax_total
        bal[("2300", "")] -= inv.tax_total
    billed_value = sum(t.billable_value for t in times if t.billable)
    rebilled = sum(x.amount for x in expenses if x.billable)
    assert bal[("1200", "P-TM")] == 0 and bal[("4900", "P-TM")] == 0
    assert bal[("4000", "P-TM")] == -billed_value
    assert bal[("4300", "P-TM")] == -rebilled
    assert all(p.txn_type == "invoice_relief" for inv in invoices for p in billing.relief_postings_for_invoice(inv))
    credit = [p for inv in invoices for p in billing.relief_postings_for_invoice(inv, sign=-1)]
    assert sum(p.amount("net") * p.sign for p in credit) == -sum(
        ln.net_amount for inv in invoices for ln in inv.lines if not billing.is_expense_line(ln))


def test_fixed_fee_and_milestone_unbilled_is_recognised_minus_billed() -> None:
    ff = project("P-FF", ContractType.FIXED_FEE, contract_value=D("120000.00"), estimated_cost=D("80000.00"))
    schedule = billing.fixed_fee_schedule(ff, dt.date(2026, 1, 1), dt.date(2026, 12, 1), "quarterly")
    ps: list[Posting] = []
    recognized = D(0)
    for month, cost, est in [(1, "20000", "80000"), (2, "44000", "80000"), (3, "50000", "110000")]:
        end = dt.date(2026, month, 28)
        ref = SourceRef(system="ledgerbridge", entity="fixed_fee_revenue", id=f"P-FF:2026-0{month}", version=1)
        new = revenue.fixed_fee_postings(ff, f"2026-0{month}", D(cost), recognized, end, ref, estimated_cost=D(est))
        recognized += sum(p.amount("revenue") for p in new)
        ps += new
    assert recognized == D("54545.45")
    billed = [billing.fixed_fee_invoice(ff, item, CUSTOMER, [VAT]) for item in schedule[:2]]  # Jan and Apr
    ps += [p for inv in billed for p in billing.postings_for_invoice(inv)]

    ms_p = project("P-MS", ContractType.MILESTONE)
    ms = BillingMilestone(id="M1", project_id="P-MS", name="Go-live", amount=D("15000.00"), currency="GBP",
                          due_date=dt.date(2026, 3, 15), status=MilestoneStatus.COMPLETED,
                          completed_on=dt.date(2026, 3, 12))
    ps += revenue.milestone_postings(ms, ms_p)
    ps += billing.postings_for_invoice(billing.milestone_invoice(ms, ms_p, CUSTOMER, [VAT], dt.date(2026, 3, 16)))

    bal = balances(ps)
    assert bal[("4100", "P-FF")] == -recognized
    assert bal[("1200", "P-FF")] == recognized - D("60000.00") == D("-5454.55")  # billed ahead: a liability
    assert revenue.contract_position(recognized, D("60000.00")).deferred == -bal[("1200", "P-FF")]
    assert bal[("1100", "P-FF")] == D("60000.00")
    assert (bal[("4200", "P-MS")], bal[("1200", "P-MS")], bal[("1100", "P-MS")]) == (
        D("-15000.00"), D(0), D("15000.00"),
    )
    assert bal[("2300", "")] == -bal[("1100", "")] == -(D("12000.00") + D("3000.00"))


def test_entry_edited_after_billing_is_credited_and_rebilled_and_unbilled_clears() -> None:
    def entry(tid: str, hours: str, version: int = 1) -> CostedTime:
        h = D(hours)
        return CostedTime(
            ref=SourceRef(system="psa", entity="time_entry", id=tid, version=version), legal_entity_id="UK01",
            project_id="P-TM", resource_id="R1", cost_center="CC-DEL-UK", work_date=dt.date(2026, 3, 10), hours=h,
            billable=True, cost_rate=D(55), cost_currency="GBP", cost_amount=round_money(h * 55, "GBP"),
            bill_rate=D("133.33"), bill_currency="GBP", billable_value=round_money(h * D("133.33"), "GBP"),
        )

    t1, t2 = entry("T1", "1.25"), entry("T2", "3")
    run = [t1, t2]
    [inv] = billing.tm_invoice_drafts(run, [], [TM], [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31))
    billed = {r for ln in inv.lines for r in ln.lineage}
    ps = [p for t in run for p in posting.postings_for_time(t)] + billing.postings_for_invoice(inv)

    # T1 edited to 2 h after it was billed: approvals reverse v1 and post v2.
    t1v2 = entry("T1", "2", version=2)
    ps += posting.postings_for_time(t1, sign=-1) + posting.postings_for_time(t1v2)
    held = billing.tm_billing_run([t1v2, t2], [], [TM], [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31),
                                  already_billed=billed, issued_invoice_ids={inv.id})
    assert held.invoices == [] and [v.rule for v in held.violations] == ["billing.billed_item_changed"]

    # The fix the violation names: credit v1, drop it from already_billed, bill again.
    cn = billing.credit_note(inv, dt.date(2026, 3, 31), [VAT], [t1])
    ps += billing.postings_for_invoice(cn)
    [inv2] = billing.tm_invoice_drafts([t1v2, t2], [], [TM], [CUSTOMER], [VAT], "2026-03", dt.date(2026, 3, 31),
                                       already_billed=billed - {t1.ref}, issued_invoice_ids={inv.id, cn.id})
    assert inv2.id == "INV-P-TM-2026-03-S2" and inv2.net_total == D("266.66")
    ps += billing.postings_for_invoice(inv2)

    bal = balances(ps)
    assert bal[("1200", "P-TM")] == 0
    assert bal[("4000", "P-TM")] == -(t1v2.billable_value + t2.billable_value)
    assert bal[("1100", "P-TM")] == inv.net_total + cn.net_total + inv2.net_total == D("666.65")
    assert bal[("2300", "")] == -(inv.tax_total + cn.tax_total + inv2.tax_total)
