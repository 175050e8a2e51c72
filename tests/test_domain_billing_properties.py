"""domain.billing properties (hypothesis): tax never loses a cent, invoice totals are the sums of their lines,
T&M invoices bill exactly the accrued revenue plus rebilled expenses, supplementary runs bill each item once,
fixed-fee schedules sum to the contract value."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal as D
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerbridge.domain import billing
from ledgerbridge.domain.types import CostedExpense, CostedTime
from ledgerbridge.model import ContractType, Customer, Invoice, Project, SourceRef, TaxCode, quantum, round_money

SETTINGS = settings(max_examples=150, deadline=None)
RUN_SETTINGS = settings(max_examples=60, deadline=None)  # whole billing runs: fewer, larger examples
CURRENCIES = ["USD", "JPY", "BHD", "EUR"]


def amounts(cur: str, lo: int = -10**7, hi: int = 10**9) -> st.SearchStrategy[D]:
    q = quantum(cur)
    return st.integers(lo, hi).map(lambda n: D(n) * q)


rates = st.integers(0, 3000).map(lambda n: D(n) / 10000)  # 0 .. 30 % in basis points


@SETTINGS
@given(cur=st.sampled_from(CURRENCIES), data=st.data(), rate=rates, inclusive=st.booleans())
def test_tax_never_loses_a_cent(cur: str, data: st.DataObject, rate: D, inclusive: bool) -> None:
    amount = data.draw(amounts(cur))
    code = TaxCode(code="T", name="T", jurisdiction="X", rate=rate, inclusive=inclusive, payable_account="2300")
    net, tax = billing.compute_tax(amount, code, cur)
    assert net == round_money(net, cur) and tax == round_money(tax, cur)
    half = quantum(cur) / 2
    if inclusive:
        assert net + tax == amount  # gross split exactly
        assert abs(tax - amount * rate / (1 + rate)) <= half
    else:
        assert net == amount
        assert abs(tax - amount * rate) <= half


# ------------------------------------------------------------------------------------------------ T&M runs

PROJECT_IDS = ["P1", "P2", "P3"]
VAT = TaxCode(code="VAT", name="VAT", jurisdiction="GB", rate=D("0.20"), payable_account="2300")
CUSTOMER = Customer(id="C1", name="C1", legal_entity_id="UK01", currency="GBP", tax_jurisdiction="GB", tax_code="VAT")
PROJECTS = {
    pid: Project(
        id=pid, name=pid, customer_id="C1", legal_entity_id="UK01",
        contract_type=ContractType.FIXED_FEE if pid == "P3" else ContractType.TIME_AND_MATERIALS,
        currency="GBP", cost_center="CC", start_date=dt.date(2026, 1, 1), contract_value=D("1000"),
    )
    for pid in PROJECT_IDS
}
PERIOD_END = dt.date(2026, 3, 31)
days = st.dates(dt.date(2026, 2, 1), dt.date(2026, 4, 30))


@st.composite
def costed_times(draw: st.DrawFn) -> list[CostedTime]:
    out = []
    for i in range(draw(st.integers(0, 40))):
        hours = D(draw(st.integers(0, 96))) / 4
        billable = draw(st.booleans())
        rate = D(draw(st.sampled_from([0, 9999, 12500, 13333, 17550]))) / 100 if billable else D(0)
        out.append(
            CostedTime(
                ref=SourceRef(system="psa", entity="time_entry", id=f"T{i}", version=draw(st.integers(1, 3))),
                legal_entity_id="UK01", project_id=draw(st.sampled_from(PROJECT_IDS)),
                resource_id=draw(st.sampled_from(["R1", "R2", "R3"])), cost_center="CC", work_date=draw(days),
                hours=hours, billable=billable, cost_rate=D(60), cost_currency="GBP",
                cost_amount=round_money(hours * 60, "GBP"), bill_rate=rate, bill_currency="GBP",
                billable_value=round_money(hours * rate, "GBP"),
            )
        )
    return out


@st.composite
def costed_expenses(draw: st.DrawFn) -> list[CostedExpense]:
    return [
        CostedExpense(
            ref=SourceRef(system="psa", entity="expense", id=f"X{i}", version=1), legal_entity_id="UK01",
            project_id=draw(st.sampled_from(PROJECT_IDS)), resource_id="R1", cost_center="CC",
            expense_date=draw(days), category=draw(st.sampled_from(["travel", "meals", "lodging"])),
            billable=draw(st.booleans()), amount=D(draw(st.integers(-5000, 200000))) / 100,
            currency=draw(st.sampled_from(["GBP", "EUR"])),
        )
        for i in range(draw(st.integers(0, 15)))
    ]


def eur_gbp(amount: D, frm: str, to: str, on: dt.date) -> D:
    assert (frm, to) == ("EUR", "GBP")
    return amount * (D("0.85") + D(on.day) / 10000)  # a rate that moves with the date


def run(
    time: list[CostedTime], exp: list[CostedExpense], billed: frozenset[SourceRef] = frozenset(),
    issued: frozenset[str] = frozenset(),
) -> list[Invoice]:
    return billing.tm_invoice_drafts(
        time, exp, PROJECTS, [CUSTOMER], [VAT], "2026-03", PERIOD_END,
        converter=eur_gbp, already_billed=billed, issued_invoice_ids=issued,
    )


def expected_net(time: list[CostedTime], exp: list[CostedExpense]) -> dict[str, D]:
    """Independent statement of the rule: accrued revenue of billable T&M time up to period end, plus every
    billable expense up to period end converted and rounded one by one."""
    out: dict[str, D] = defaultdict(D)
    for t in time:
        tm = PROJECTS[t.project_id].contract_type is ContractType.TIME_AND_MATERIALS
        if t.billable and tm and t.work_date <= PERIOD_END:
            out[t.project_id] += t.billable_value
    for x in exp:
        if x.billable and x.expense_date <= PERIOD_END:
            amt = x.amount if x.currency == "GBP" else eur_gbp(x.amount, x.currency, "GBP", x.expense_date)
            out[x.project_id] += round_money(amt, "GBP")
    return out


@RUN_SETTINGS
@given(time=costed_times(), exp=costed_expenses())
def test_tm_invoice_net_equals_accrued_revenue_plus_rebilled_expenses(
    time: list[CostedTime], exp: list[CostedExpense]
) -> None:
    invoices = run(time, exp)
    want = expected_net(time, exp)
    got = {inv.project_id: inv.net_total for inv in invoices}
    assert set(got) <= set(want)
    assert all(got.get(pid, D(0)) == want[pid] for pid in want)
    for inv in invoices:
        # totals are the sums of the lines; tax is per line, at 20 % of each line net
        assert inv.net_total == sum(ln.net_amount for ln in inv.lines)
        assert inv.tax_total == sum(ln.tax_amount for ln in inv.lines)
        assert inv.total == inv.net_total + inv.tax_total
        assert all(ln.tax_amount == round_money(ln.net_amount * D("0.20"), "GBP") for ln in inv.lines)
        # the invoice posting carries the whole invoice; rebilled expenses are recognised line by line
        *rebills, main = billing.postings_for_invoice(inv)
        assert (main.amount("net"), main.amount("tax")) == (inv.net_total, inv.tax_total)
        expense_net = sum(ln.net_amount for ln in inv.lines if billing.is_expense_line(ln))
        assert sum(p.amount("billable_value") for p in rebills) == expense_net
        assert inv.id == f"INV-{inv.project_id}-2026-03"


@RUN_SETTINGS
@given(time=costed_times(), exp=costed_expenses(), data=st.data())
def test_supplementary_runs_bill_each_item_exactly_once(
    time: list[CostedTime], exp: list[CostedExpense], data: st.DataObject
) -> None:
    # First run sees only part of the items (the rest arrive late), second run sees all and the first's lineage.
    seen_t = data.draw(st.lists(st.booleans(), min_size=len(time), max_size=len(time)))
    seen_x = data.draw(st.lists(st.booleans(), min_size=len(exp), max_size=len(exp)))
    first = run([t for t, s in zip(time, seen_t, strict=True) if s], [x for x, s in zip(exp, seen_x, strict=True) if s])
    billed = frozenset(r for inv in first for ln in inv.lines for r in ln.lineage)
    second = run(time, exp, billed, frozenset(inv.id for inv in first))
    one_shot = run(time, exp)
    refs_twice = [r for inv in first + second for ln in inv.lines for r in ln.lineage]
    assert len(refs_twice) == len(set(refs_twice))  # nothing billed twice
    assert set(refs_twice) == {r for inv in one_shot for ln in inv.lines for r in ln.lineage}  # nothing lost
    per_project: dict[str, D] = defaultdict(D)
    for inv in first + second:
        per_project[inv.project_id] += inv.net_total
    assert dict(per_project) == {inv.project_id: inv.net_total for inv in one_shot}
    first_ids = {inv.id for inv in first}
    assert all(inv.id.endswith("-S2") == (inv.id.removesuffix("-S2") in first_ids) for inv in second)


# ------------------------------------------------------------------------------------------------ fixed fee


@SETTINGS
@given(
    cur=st.sampled_from(CURRENCIES),
    data=st.data(),
    start=st.dates(dt.date(2024, 1, 1), dt.date(2028, 12, 31)),
    months=st.integers(0, 60),
    freq=st.sampled_from(sorted(billing.FREQUENCIES)),
)
def test_fixed_fee_schedule_sums_exactly(cur: str, data: st.DataObject, start: dt.date, months: int, freq: str) -> None:
    value = data.draw(amounts(cur, 0, 10**8))
    p = Project(
        id="P", name="P", customer_id="C", legal_entity_id="E", contract_type=ContractType.FIXED_FEE, currency=cur,
        cost_center="CC", start_date=start, contract_value=value,
    )
    end = billing.add_months(start, months)
    items = billing.fixed_fee_schedule(p, start, end, freq)
    assert sum(i.amount for i in items) == value
    assert len(items) == months // billing.FREQUENCIES[freq] + 1
    assert all(i.amount >= 0 and i.amount == round_money(i.amount, cur) for i in items)
    assert len({i.amount for i in items[:-1]}) <= 1  # equal instalments ...
    assert items[-1].amount >= items[0].amount  # ... the remainder on the last
    assert items[-1].amount - items[0].amount < quantum(cur) * len(items)
    assert all(a.date < b.date for a, b in pairwise(items)) and items[-1].date <= end
