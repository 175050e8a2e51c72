"""domain.billing: tax, T&M / milestone / fixed-fee invoices, invoice postings — worked examples and every
DomainError. Property-based checks are in test_domain_billing_properties.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from ledgerbridge.domain import billing
from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.types import CostedExpense, CostedTime
from ledgerbridge.model import (
    BillingMilestone,
    ContractType,
    Customer,
    Invoice,
    MilestoneStatus,
    Project,
    SourceRef,
    TaxCode,
    round_money,
)

MAR = dt.date(2026, 3, 31)
TAX = [
    TaxCode(code="US-EXEMPT", name="Exempt", jurisdiction="US", rate=D("0.00"), payable_account="2300"),
    TaxCode(code="UK-VAT20", name="UK VAT 20%", jurisdiction="GB", rate=D("0.20"), payable_account="2300"),
    TaxCode(code="DE-VAT19", name="DE USt 19%", jurisdiction="DE", rate=D("0.19"), payable_account="2300"),
]
VAT20 = TAX[1]
C_UK = Customer(
    id="C-UK", name="Brit Ltd", legal_entity_id="UK01", currency="GBP", tax_jurisdiction="GB", tax_code="UK-VAT20"
)
C_US = Customer(
    id="C-US", name="Yank Inc", legal_entity_id="US01", currency="USD", tax_jurisdiction="US", tax_code="US-EXEMPT"
)


def project(pid: str, kind: ContractType = ContractType.TIME_AND_MATERIALS, **kw: object) -> Project:
    base: dict[str, object] = {
        "id": pid, "name": pid, "customer_id": "C-UK", "legal_entity_id": "UK01", "contract_type": kind,
        "currency": "GBP", "cost_center": "CC-DEL-UK", "start_date": dt.date(2026, 1, 1),
    }
    base.update(kw)
    return Project.model_validate(base)


P_TM = project("P-TM")
P_FF = project("P-FF", ContractType.FIXED_FEE, contract_value=D("10000.00"), estimated_cost=D("8000.00"))
P_MS = project("P-MS", ContractType.MILESTONE, contract_value=D("5000.00"))
PROJECTS = [P_TM, P_FF, P_MS]


def ct(
    tid: str, hours: str, rate: str, *, pid: str = "P-TM", res: str = "R1", day: dt.date = dt.date(2026, 3, 10),
    billable: bool = True, version: int = 1, cur: str = "GBP",
) -> CostedTime:
    h, r = D(hours), D(rate) if billable else D(0)
    return CostedTime(
        ref=SourceRef(system="psa", entity="time_entry", id=tid, version=version), legal_entity_id="UK01",
        project_id=pid, resource_id=res, cost_center="CC-DEL-UK", work_date=day, hours=h, billable=billable,
        cost_rate=D("50"), cost_currency="GBP", cost_amount=round_money(h * 50, "GBP"), bill_rate=r,
        bill_currency=cur, billable_value=round_money(h * r, cur),
    )


def cx(
    xid: str, amount: str, *, cat: str = "travel", cur: str = "GBP", pid: str = "P-TM",
    day: dt.date = dt.date(2026, 3, 12), billable: bool = True,
) -> CostedExpense:
    return CostedExpense(
        ref=SourceRef(system="psa", entity="expense", id=xid, version=1), legal_entity_id="UK01", project_id=pid,
        resource_id="R1", cost_center="CC-DEL-UK", expense_date=day, category=cat, billable=billable,
        amount=D(amount), currency=cur,
    )


def drafts(time: list[CostedTime], exp: list[CostedExpense] | None = None, **kw: object) -> list[Invoice]:
    args: dict[str, object] = {"projects": PROJECTS, "customers": [C_UK, C_US], "tax_codes": TAX}
    args.update(kw)
    return billing.tm_invoice_drafts(
        time, exp or [], args["projects"], args["customers"], args["tax_codes"],  # type: ignore[arg-type]
        str(args.get("billing_period", "2026-03")), MAR,
        converter=args.get("converter"),  # type: ignore[arg-type]
        already_billed=args.get("already_billed", frozenset()),  # type: ignore[arg-type]
        issued_invoice_ids=args.get("issued_invoice_ids", frozenset()),  # type: ignore[arg-type]
    )


def rule_of(exc: pytest.ExceptionInfo[DomainError]) -> str:
    return exc.value.rule


# ------------------------------------------------------------------------------------------------ tax


@pytest.mark.parametrize(
    ("amount", "rate", "inclusive", "cur", "net", "tax"),
    [
        ("100.05", "0.20", False, "GBP", "100.05", "20.01"),  # 20.010
        ("0.03", "0.19", False, "EUR", "0.03", "0.01"),  # 0.0057 rounds up
        ("0.02", "0.19", False, "EUR", "0.02", "0.00"),  # 0.0038 rounds down
        ("1001", "0.10", False, "JPY", "1001", "100"),  # 100.1, no minor unit
        ("10.005", "0.05", False, "BHD", "10.005", "0.500"),  # 0.50025, three decimals
        ("120.00", "0.20", True, "GBP", "100.00", "20.00"),
        ("10.00", "0.19", True, "EUR", "8.40", "1.60"),  # 10 * 0.19 / 1.19 = 1.5966
        ("0.01", "0.20", True, "GBP", "0.01", "0.00"),  # 0.00167: the cent stays net
    ],
)
def test_compute_tax(amount: str, rate: str, inclusive: bool, cur: str, net: str, tax: str) -> None:
    code = TaxCode(code="T", name="T", jurisdiction="X", rate=D(rate), inclusive=inclusive, payable_account="2300")
    got = billing.compute_tax(D(amount), code, cur)
    assert got == (D(net), D(tax))
    if inclusive:
        assert got[0] + got[1] == D(amount)


def test_compute_tax_refuses_sub_minor_unit_amount() -> None:
    with pytest.raises(DomainError) as e:
        billing.compute_tax(D("10.005"), VAT20, "GBP")
    assert rule_of(e) == "billing.amount_precision"
    assert "0.01" in e.value.fix


# ------------------------------------------------------------------------------------------------ T&M


def test_tm_invoice_lines_per_resource_and_rate_with_expenses() -> None:
    time = [
        ct("T1", "8", "150", res="R1"),
        ct("T2", "4.5", "150", res="R1", day=dt.date(2026, 3, 11)),
        ct("T3", "2", "175", res="R1"),  # same resource, other rate: own line
        ct("T4", "6", "120", res="R2"),
        ct("T5", "3", "0", res="R2", billable=False),  # not billable: skipped
    ]
    exp = [cx("X1", "230.40"), cx("X2", "19.60"), cx("X3", "45.00", cat="meals"), cx("X4", "9", billable=False)]
    [inv] = drafts(time, exp)
    assert inv.id == "INV-P-TM-2026-03"
    assert (inv.customer_id, inv.legal_entity_id, inv.currency) == ("C-UK", "UK01", "GBP")
    assert inv.due_date == MAR + dt.timedelta(days=30)
    got = [(ln.description, ln.quantity, ln.unit_price, ln.net_amount, ln.tax_amount) for ln in inv.lines]
    assert got == [
        ("Time: R1, 12.5 h at 150 GBP/h", D("12.5"), D("150"), D("1875.00"), D("375.00")),
        ("Time: R1, 2 h at 175 GBP/h", D("2"), D("175"), D("350.00"), D("70.00")),
        ("Time: R2, 6 h at 120 GBP/h", D("6"), D("120"), D("720.00"), D("144.00")),
        ("Expenses: meals (1 items, at cost)", D(1), D("45.00"), D("45.00"), D("9.00")),
        ("Expenses: travel (2 items, at cost)", D(1), D("250.00"), D("250.00"), D("50.00")),
    ]
    assert [ln.line_no for ln in inv.lines] == [1, 2, 3, 4, 5]
    assert [ln.tax_code for ln in inv.lines] == ["UK-VAT20"] * 5
    assert [r.id for r in inv.lines[0].lineage] == ["T1", "T2"]
    assert [r.id for r in inv.lines[4].lineage] == ["X1", "X2"]
    assert (inv.net_total, inv.tax_total, inv.total) == (D("3240.00"), D("648.00"), D("3888.00"))


def test_tm_line_net_is_the_sum_of_billable_values_not_hours_times_rate() -> None:
    # three entries of 1.25 h at 133.33: each 166.6625 -> 166.66, so the accrual is 499.98; 3.75 h x 133.33 would
    # round to 499.99. The invoice must bill what was accrued.
    time = [ct(f"T{i}", "1.25", "133.33") for i in range(3)]
    [inv] = drafts(time)
    assert inv.lines[0].net_amount == D("499.98") == sum(t.billable_value for t in time)
    assert inv.lines[0].quantity * inv.lines[0].unit_price == D("499.9875")


def test_tm_window_is_everything_unbilled_up_to_period_end() -> None:
    late_feb = ct("T-FEB", "1", "100", day=dt.date(2026, 2, 27))  # approved late, never billed
    april = ct("T-APR", "1", "100", day=dt.date(2026, 4, 1))  # next run
    [inv] = drafts([late_feb, ct("T-MAR", "2", "100"), april], [cx("X-APR", "5", day=dt.date(2026, 4, 2))])
    assert {r.id for ln in inv.lines for r in ln.lineage} == {"T-FEB", "T-MAR"}
    assert inv.net_total == D("300.00")


def test_tm_bills_time_only_on_tm_projects_but_expenses_on_any() -> None:
    time = [ct("T-FF", "5", "100", pid="P-FF"), ct("T-MS", "5", "100", pid="P-MS")]
    out = drafts(time, [cx("X-FF", "80", pid="P-FF")])
    assert [(i.id, i.net_total) for i in out] == [("INV-P-FF-2026-03", D("80.00"))]


def test_tm_no_invoice_without_lines() -> None:
    assert drafts([ct("T1", "5", "100", billable=False)], [cx("X1", "3", billable=False)]) == []


def test_supplementary_run_bills_only_new_items_under_a_new_id() -> None:
    first = [ct("T1", "8", "100"), ct("T2", "8", "100")]
    [inv1] = drafts(first)
    billed = {r for ln in inv1.lines for r in ln.lineage}
    late = ct("T3", "2", "100", day=dt.date(2026, 3, 20))
    [inv2] = drafts([*first, late], already_billed=billed, issued_invoice_ids={inv1.id})
    assert inv2.id == "INV-P-TM-2026-03-S2"
    assert [r.id for ln in inv2.lines for r in ln.lineage] == ["T3"]
    assert inv2.net_total == D("200.00")
    [inv3] = drafts([ct("T4", "1", "100")], issued_invoice_ids={inv1.id, inv2.id})
    assert inv3.id == "INV-P-TM-2026-03-S3"
    assert drafts([*first, late], already_billed=billed | {late.ref}, issued_invoice_ids={inv1.id, inv2.id}) == []


def test_fx_expense_converted_per_expense_and_rounded() -> None:
    calls: list[tuple[D, str, str, dt.date]] = []

    def eur_to_gbp(amount: D, frm: str, to: str, on: dt.date) -> D:
        calls.append((amount, frm, to, on))
        return amount * D("0.8567")

    [inv] = drafts([], [cx("X1", "100.00", cur="EUR"), cx("X2", "0.99", cur="EUR"), cx("X3", "10", cur="GBP")],
                   converter=eur_to_gbp)
    # 85.67 + round(0.848133) = 0.85 -> 86.52, plus the GBP 10.00
    assert inv.lines[0].net_amount == D("96.52")
    assert calls == [(D("100.00"), "EUR", "GBP", dt.date(2026, 3, 12)), (D("0.99"), "EUR", "GBP", dt.date(2026, 3, 12))]


def test_us_customer_exempt_tax_is_zero() -> None:
    p_us = project("P-US", customer_id="C-US", legal_entity_id="US01", currency="USD", cost_center="CC-DEL-US")
    [inv] = drafts([ct("T1", "3", "210", pid="P-US", cur="USD")], projects=[p_us])
    assert (inv.net_total, inv.tax_total, inv.lines[0].tax_code) == (D("630.00"), D("0.00"), "US-EXEMPT")


# --------------------------------------------------------------------------- T&M errors (one per rule)


def _retire(code: TaxCode, **kw: object) -> list[TaxCode]:
    return [t.model_copy(update=kw) if t.code == code.code else t for t in TAX]


@pytest.mark.parametrize(
    ("kwargs", "time", "exp", "rule"),
    [
        ({}, [ct("T1", "1", "100", pid="P-NOPE")], [], "billing.unknown_project"),
        ({}, [], [cx("X1", "1", pid="P-NOPE")], "billing.unknown_project"),
        ({"customers": [C_US]}, [ct("T1", "1", "100")], [], "billing.unknown_customer"),
        ({"customers": [C_UK.model_copy(update={"active": False})]}, [ct("T1", "1", "100")], [],
         "billing.inactive_customer"),
        ({"tax_codes": [TAX[0]]}, [ct("T1", "1", "100")], [], "billing.unknown_tax_code"),
        ({"tax_codes": _retire(VAT20, active=False)}, [ct("T1", "1", "100")], [], "billing.inactive_tax_code"),
        ({"tax_codes": _retire(VAT20, jurisdiction="DE")}, [ct("T1", "1", "100")], [],
         "billing.tax_jurisdiction_mismatch"),
        ({"tax_codes": _retire(VAT20, inclusive=True)}, [ct("T1", "1", "100")], [],
         "billing.inclusive_tax_on_net_amounts"),
        ({}, [ct("T1", "1", "100", cur="USD")], [], "billing.bill_currency_mismatch"),
        ({}, [], [cx("X1", "10", cur="EUR")], "billing.fx_converter_missing"),
        ({"billing_period": "2026-3"}, [ct("T1", "1", "100")], [], "billing.bad_period"),
        ({"already_billed": {ct("T1", "1", "100").ref}}, [ct("T1", "1.5", "100", version=2)], [],
         "billing.billed_item_changed"),
    ],
)
def test_tm_errors(kwargs: dict[str, object], time: list[CostedTime], exp: list[CostedExpense], rule: str) -> None:
    with pytest.raises(DomainError) as e:
        drafts(time, exp, **kwargs)
    assert rule_of(e) == rule
    assert e.value.item and e.value.message and e.value.fix
    assert rule in str(e.value)


# ------------------------------------------------------------------------------------------------ milestones


def ms(status: MilestoneStatus = MilestoneStatus.COMPLETED, **kw: object) -> BillingMilestone:
    base: dict[str, object] = {
        "id": "M1", "project_id": "P-MS", "name": "Design signed off", "amount": D("2500.00"), "currency": "GBP",
        "due_date": dt.date(2026, 3, 15), "status": status, "completed_on": dt.date(2026, 3, 14),
    }
    base.update(kw)
    return BillingMilestone.model_validate(base)


def test_milestone_invoice() -> None:
    inv = billing.milestone_invoice(ms(), P_MS, C_UK, TAX, dt.date(2026, 3, 16))
    assert inv.id == "INV-P-MS-MS-M1"
    assert (inv.net_total, inv.tax_total, inv.total) == (D("2500.00"), D("500.00"), D("3000.00"))
    assert inv.lines[0].lineage == (SourceRef(system="psa", entity="billing_milestone", id="M1", version=1),)
    assert inv.due_date == dt.date(2026, 4, 15)


def test_milestone_invoice_allowed_on_fixed_fee_project() -> None:
    inv = billing.milestone_invoice(ms(project_id="P-FF"), P_FF, C_UK, TAX, MAR)
    assert inv.id == "INV-P-FF-MS-M1"


@pytest.mark.parametrize(
    ("milestone", "proj", "rule"),
    [
        (ms(MilestoneStatus.PLANNED, completed_on=None), P_MS, "billing.milestone_not_completed"),
        (ms(MilestoneStatus.CANCELLED), P_MS, "billing.milestone_not_completed"),
        (ms(MilestoneStatus.INVOICED), P_MS, "billing.milestone_not_completed"),
        (ms(), P_FF, "billing.milestone_project_mismatch"),
        (ms(currency="EUR"), P_MS, "billing.milestone_currency_mismatch"),
        (ms(amount=D("10.001")), P_MS, "billing.amount_precision"),
        (ms(project_id="P-TM"), P_TM, "billing.milestone_on_tm_project"),
    ],
)
def test_milestone_invoice_errors(milestone: BillingMilestone, proj: Project, rule: str) -> None:
    with pytest.raises(DomainError) as e:
        billing.milestone_invoice(milestone, proj, C_UK, TAX, MAR)
    assert rule_of(e) == rule


def test_milestone_invoice_errors_name_the_status_fix() -> None:
    with pytest.raises(DomainError) as e:
        billing.milestone_invoice(ms(MilestoneStatus.INVOICED), P_MS, C_UK, TAX, MAR)
    assert "already invoiced" in e.value.fix and "invoiced" in e.value.message


def test_milestone_invoice_customer_mismatch() -> None:
    with pytest.raises(DomainError) as e:
        billing.milestone_invoice(ms(), P_MS, C_US, TAX, MAR)
    assert rule_of(e) == "billing.customer_mismatch"


# ------------------------------------------------------------------------------------------------ fixed fee


def test_fixed_fee_schedule_monthly_remainder_on_last_and_month_end_clamp() -> None:
    p = project("P-F2", ContractType.FIXED_FEE, contract_value=D("1000.00"))
    items = billing.fixed_fee_schedule(p, dt.date(2026, 1, 31), dt.date(2026, 12, 31))
    assert len(items) == 12
    assert [i.amount for i in items] == [D("83.33")] * 11 + [D("83.37")]
    assert [i.date for i in items[:3]] == [dt.date(2026, 1, 31), dt.date(2026, 2, 28), dt.date(2026, 3, 31)]
    assert [i.seq for i in items] == list(range(1, 13))
    assert sum(i.amount for i in items) == D("1000.00")


def test_fixed_fee_schedule_quarterly() -> None:
    items = billing.fixed_fee_schedule(P_FF, dt.date(2026, 1, 1), dt.date(2026, 12, 31), "quarterly")
    assert [(i.date, i.amount) for i in items] == [
        (dt.date(2026, 1, 1), D("2500.00")), (dt.date(2026, 4, 1), D("2500.00")),
        (dt.date(2026, 7, 1), D("2500.00")), (dt.date(2026, 10, 1), D("2500.00")),
    ]


@pytest.mark.parametrize(
    ("proj", "start", "end", "freq", "rule"),
    [
        (P_TM, dt.date(2026, 1, 1), MAR, "monthly", "billing.not_fixed_fee"),
        (project("P-X", ContractType.FIXED_FEE), dt.date(2026, 1, 1), MAR, "monthly", "billing.no_contract_value"),
        (P_FF, dt.date(2026, 1, 1), MAR, "fortnightly", "billing.bad_frequency"),
        (P_FF, MAR, dt.date(2026, 1, 1), "monthly", "billing.bad_schedule_dates"),
        (project("P-X", ContractType.FIXED_FEE, contract_value=D("10.001")), dt.date(2026, 1, 1), MAR, "monthly",
         "billing.amount_precision"),
    ],
)
def test_fixed_fee_schedule_errors(proj: Project, start: dt.date, end: dt.date, freq: str, rule: str) -> None:
    with pytest.raises(DomainError) as e:
        billing.fixed_fee_schedule(proj, start, end, freq)
    assert rule_of(e) == rule


def test_fixed_fee_invoice() -> None:
    item = billing.fixed_fee_schedule(P_FF, dt.date(2026, 1, 1), dt.date(2026, 3, 1))[2]
    inv = billing.fixed_fee_invoice(P_FF, item, C_UK, TAX)
    assert inv.id == "INV-P-FF-FF-003"
    assert inv.invoice_date == dt.date(2026, 3, 1)
    assert (inv.net_total, inv.tax_total) == (D("3333.34"), D("666.67"))  # 3333.33 x 2 + 3333.34; 666.668
    assert billing.fixed_fee_invoice(P_FF, item, C_UK, TAX, MAR).invoice_date == MAR


def test_fixed_fee_invoice_currency_mismatch() -> None:
    item = billing.ScheduleItem(date=MAR, amount=D("10.00"), seq=1, currency="EUR")
    with pytest.raises(DomainError) as e:
        billing.fixed_fee_invoice(P_FF, item, C_UK, TAX)
    assert rule_of(e) == "billing.schedule_currency_mismatch"


# ------------------------------------------------------------------------------------------------ postings


def test_postings_for_tm_invoice_recognise_rebilled_expenses_then_relieve_unbilled() -> None:
    [inv] = drafts([ct("T1", "10", "100")], [cx("X1", "40.00"), cx("X2", "12.50", cat="meals")])
    [meals, travel, main] = billing.postings_for_invoice(inv, "UK01", cost_center="CC-DEL-UK")
    assert (main.txn_type, main.amount("net"), main.amount("tax")) == ("invoice", D("1052.50"), D("210.50"))
    assert main.dimensions == (("project", "P-TM"),)
    assert main.source == SourceRef(system="ledgerbridge", entity="invoice", id=inv.id, version=1)
    assert [(p.txn_type, p.amount("billable_value")) for p in (meals, travel)] == [
        ("expense_recovery", D("12.50")), ("expense_recovery", D("40.00"))
    ]
    assert meals.source == SourceRef(system="ledgerbridge", entity="invoice_line", id=f"{inv.id}:2", version=1)
    assert meals.dimensions == (("project", "P-TM"), ("cost_center", "CC-DEL-UK"))
    for p in (meals, travel, main):
        assert (p.legal_entity_id, p.date, p.currency, p.sign) == ("UK01", MAR, "GBP", 1)


def test_postings_for_invoice_rebill_type_is_configurable_and_time_only_invoice_has_one_posting() -> None:
    [inv] = drafts([], [cx("X1", "40.00")])
    [rebill, _] = billing.postings_for_invoice(inv, rebill_txn_type="expense_recovery", rebill_amount="amount")
    assert (rebill.txn_type, rebill.amount("amount")) == ("expense_recovery", D("40.00"))
    [inv] = drafts([ct("T1", "1", "100")])
    assert [p.txn_type for p in billing.postings_for_invoice(inv)] == ["invoice"]


def test_postings_for_milestone_invoice_and_reversal() -> None:
    inv = billing.milestone_invoice(ms(), P_MS, C_UK, TAX, MAR)
    [p] = billing.postings_for_invoice(inv, sign=-1)
    assert (p.txn_type, p.amount("net"), p.amount("tax"), p.sign) == ("invoice", D("2500.00"), D("500.00"), -1)


@pytest.mark.parametrize(
    ("entity", "sign", "rule"), [("US01", 1, "billing.entity_mismatch"), ("UK01", 2, "billing.bad_sign")]
)
def test_postings_for_invoice_errors(entity: str, sign: int, rule: str) -> None:
    inv = billing.milestone_invoice(ms(), P_MS, C_UK, TAX, MAR)
    with pytest.raises(DomainError) as e:
        billing.postings_for_invoice(inv, entity, sign)
    assert rule_of(e) == rule


# ------------------------------------------------------------------------------------------------ lenient run


def test_lenient_run_holds_back_bad_items_and_projects_and_bills_the_rest() -> None:
    p_us = project("P-US", customer_id="C-GONE", currency="USD")
    time = [
        ct("T1", "2", "100"),
        ct("T-USD", "1", "100", cur="USD"),  # wrong bill currency: this entry held back
        ct("T-NOPE", "1", "100", pid="P-NOPE"),  # unknown project: held back
        ct("T-US", "3", "100", pid="P-US", cur="USD"),  # customer unknown: the whole project held back
    ]
    run = billing.tm_billing_run(
        time, [cx("X-EUR", "10", cur="EUR")], [P_TM, p_us], [C_UK], TAX, "2026-03", MAR
    )
    assert [(i.id, i.net_total) for i in run.invoices] == [("INV-P-TM-2026-03", D("200.00"))]
    assert [r.id for i in run.invoices for ln in i.lines for r in ln.lineage] == ["T1"]
    assert sorted((v.rule, v.item) for v in run.violations) == [
        ("billing.bill_currency_mismatch", "time_entry psa:time_entry:T-USD@1"),
        ("billing.fx_converter_missing", "expense psa:expense:X-EUR@1"),
        ("billing.unknown_customer", "project P-US"),
        ("billing.unknown_project", "time_entry psa:time_entry:T-NOPE@1"),
    ]
    assert all(v.fix for v in run.violations)
    # strict mode raises the first of them
    with pytest.raises(DomainError):
        billing.tm_billing_run(time, [], [P_TM, p_us], [C_UK], TAX, "2026-03", MAR, strict=True)


# ------------------------------------------------------------------------------------------------ credit notes


def test_credit_note_void_negates_every_line_exactly() -> None:
    [inv] = drafts([ct("T1", "1.25", "133.33"), ct("T2", "3", "99.99")], [cx("X1", "40.01")])
    cn = billing.credit_note(inv, dt.date(2026, 4, 2), TAX)
    assert cn.id == f"CN-{inv.id}-1"
    assert (cn.net_total, cn.tax_total, cn.total) == (-inv.net_total, -inv.tax_total, -inv.total)
    assert [ln.lineage for ln in cn.lines] == [ln.lineage for ln in inv.lines]
    assert billing.credit_note(inv, dt.date(2026, 4, 2), TAX, issued_invoice_ids={cn.id}).id == f"CN-{inv.id}-2"


def test_credit_note_for_billed_versions_recomputes_their_amounts() -> None:
    t1, t2, t3 = ct("T1", "1.25", "133.33"), ct("T2", "1.25", "133.33"), ct("T3", "2", "100", res="R2")
    x1 = cx("X1", "100.00", cur="EUR")

    def conv(amount: D, frm: str, to: str, on: dt.date) -> D:
        return amount * D("0.8567")

    [inv] = drafts([t1, t2, t3], [x1], converter=conv)
    cn = billing.credit_note(inv, dt.date(2026, 4, 2), TAX, [t1, x1], converter=conv)
    got = [(ln.quantity, ln.unit_price, ln.net_amount, ln.tax_amount, [r.id for r in ln.lineage]) for ln in cn.lines]
    assert got == [
        (D("-1.25"), D("133.33"), D("-166.66"), D("-33.33"), ["T1"]),  # -33.332
        (D(-1), D("85.67"), D("-85.67"), D("-17.13"), ["X1"]),  # -17.134
    ]
    # crediting every item of a line gives back exactly that line's tax
    full = billing.credit_note(inv, dt.date(2026, 4, 2), TAX, [t1, t2])
    assert (full.lines[0].net_amount, full.lines[0].tax_amount) == (-inv.lines[0].net_amount, -inv.lines[0].tax_amount)


@pytest.mark.parametrize(
    ("items", "kwargs", "rule"),
    [
        ([ct("T1", "1", "100", version=2)], {}, "billing.not_on_invoice"),
        ([ct("T1", "1", "100")], {"tax_codes": [TAX[0]]}, "billing.unknown_tax_code"),
        ([cx("X1", "10", cur="EUR")], {"converter": None}, "billing.fx_converter_missing"),
    ],
)
def test_credit_note_errors(items: list[CostedTime | CostedExpense], kwargs: dict[str, object], rule: str) -> None:
    [inv] = drafts([ct("T1", "1", "100")], [cx("X1", "10", cur="EUR")], converter=lambda a, f, t, d: a)
    args: dict[str, object] = {"tax_codes": TAX, "converter": lambda a, f, t, d: a}
    args.update(kwargs)
    with pytest.raises(DomainError) as e:
        billing.credit_note(inv, MAR, args["tax_codes"], items, converter=args["converter"])  # type: ignore[arg-type]
    assert rule_of(e) == rule
