"""Validation before any write: one example per rule code (journal shape and balance, accounts, dimensions,
periods, currencies, FX fields, lineage; invoice tax), plus a clean pass of summarized journals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from ledgerbridge.domain.errors import DomainError
from ledgerbridge.domain.periods import PeriodBook, monthly_periods
from ledgerbridge.domain.posting import default_rules, summarize
from ledgerbridge.domain.types import Posting
from ledgerbridge.domain.validation import (
    ValidationContext,
    raise_for,
    validate_invoice_tax,
    validate_journal,
    validate_journals,
)
from ledgerbridge.model.base import SourceRef
from ledgerbridge.model.entities import (
    Account,
    AccountType,
    Customer,
    DimensionValue,
    Invoice,
    InvoiceLine,
    JournalEntry,
    JournalLine,
    JournalType,
    PeriodStatus,
    TaxCode,
)

D = Decimal
REF = SourceRef(system="psa", entity="time_entry", id="TE-1")
CHART = [("1100", AccountType.ASSET), ("1200", AccountType.ASSET), ("2100", AccountType.LIABILITY),
         ("2300", AccountType.LIABILITY), ("4000", AccountType.REVENUE), ("5000", AccountType.EXPENSE)]


def ctx(**over: Any) -> ValidationContext:
    accounts = [Account(code=c, name=f"acct {c}", type=t) for c, t in CHART]
    accounts.append(Account(code="5050", name="UK subcontractors", type=AccountType.EXPENSE, legal_entity_id="UK01"))
    accounts.append(Account(code="5900", name="old", type=AccountType.EXPENSE, active=False))
    accounts.append(Account(code="5100", name="Project expenses", type=AccountType.EXPENSE,
                            required_dimensions=("project",)))
    dims = [
        DimensionValue(dimension="cost_center", code="CC-DEL-US", name="Delivery US", legal_entity_ids=("US01",)),
        DimensionValue(dimension="cost_center", code="CC-ADV-US", name="Advisory US", legal_entity_ids=("US01",)),
        DimensionValue(dimension="cost_center", code="CC-OLD", name="Old", active=False),
        DimensionValue(dimension="cost_center", code="CC-DEL-UK", name="Delivery UK", legal_entity_ids=("UK01",)),
    ]
    periods = PeriodBook([*monthly_periods("US01", "2026-01", "2026-06"),
                          *monthly_periods("UK01", "2026-01", "2026-06")])
    periods.transition("US01", "2026-02", PeriodStatus.CLOSING)
    args: dict[str, Any] = dict(
        accounts=accounts, dimension_values=dims, periods=periods,
        currencies={"US01": ["USD", "EUR"], "UK01": ["GBP", "USD"]},
        functional_currencies={"US01": "USD", "UK01": "GBP"},
    )
    args.update(over)
    return ValidationContext.build(**args)


def line(n: int, account: str, dr: str = "0", cr: str = "0", **kw: Any) -> JournalLine:
    base: dict[str, Any] = dict(line_no=n, account=account, debit=D(dr), credit=D(cr), currency="USD",
                                dimensions={"cost_center": "CC-DEL-US", "project": "P-1"}, lineage=(REF,),
                                lineage_count=1)
    base.update(kw)
    return JournalLine(**base)


def journal(*lines: JournalLine, construct: bool = False, **kw: Any) -> JournalEntry:
    base: dict[str, Any] = dict(id="US01-2026-03-labor_cost-0001", legal_entity_id="US01", period="2026-03",
                                entry_date=dt.date(2026, 3, 31), journal_type=JournalType.LABOR_COST,
                                lines=lines or (line(1, "5000", dr="10.00"), line(2, "2100", cr="10.00")))
    base.update(kw)
    return JournalEntry.model_construct(**base) if construct else JournalEntry(**base)


def rules_of(entry: JournalEntry, c: ValidationContext | None = None) -> list[str]:
    return [v.rule for v in validate_journal(entry, c or ctx())]


def test_valid_journal_has_no_violations() -> None:
    assert validate_journal(journal(), ctx()) == []


def test_summarized_journals_validate_clean() -> None:
    ps = [Posting("labor_cost", "US01", dt.date(2026, 3, d), "USD", (("cost", D(f"{d}.25")),),
                  (("cost_center", "CC-DEL-US"), ("project", "P-1")), SourceRef(system="psa", entity="t", id=str(d)))
          for d in range(1, 20)]
    ps.append(Posting("invoice", "UK01", dt.date(2026, 4, 30), "GBP", (("net", D("100.00")), ("tax", D("20.00"))),
                      (("project", "P-1"),), SourceRef(system="lb", entity="invoice", id="I1")))
    s = summarize(ps, default_rules())
    assert len(s.journals) == 2
    assert validate_journals(s.journals, ctx()) == []


# --------------------------------------------------------------------------- shape and balance


def test_too_few_lines() -> None:
    assert rules_of(journal(line(1, "5000", dr="0.00", cr="0.00"), construct=True)) == [
        "journal.too_few_lines", "line.zero"]


def test_unbalanced() -> None:
    v = validate_journal(journal(line(1, "5000", dr="10.00"), line(2, "2100", cr="9.99"), construct=True), ctx())
    assert [x.rule for x in v] == ["journal.unbalanced"]
    assert "USD debits exceed credits by 0.01" in v[0].message and v[0].item == "journal US01-2026-03-labor_cost-0001"


def test_functional_unbalanced() -> None:
    fx: dict[str, Any] = dict(currency="EUR", fx_rate=D("1.1"), fx_rate_date=dt.date(2026, 3, 31),
                              functional_currency="USD")
    e = journal(line(1, "5000", dr="10.00", functional_debit=D("11.00"), **fx),
                line(2, "2100", cr="10.00", functional_credit=D("11.01"), **fx), construct=True)
    assert rules_of(e) == ["journal.functional_unbalanced"]


def test_duplicate_line_number() -> None:
    assert rules_of(journal(line(1, "5000", dr="1.00"), line(1, "2100", cr="1.00"))) == ["line.duplicate_number"]


def test_negative_and_both_sides() -> None:
    neg = JournalLine.model_construct(**{**dict(line(1, "5000")), "debit": D("-5.00")})
    both = JournalLine.model_construct(**{**dict(line(2, "2100")), "debit": D("6.00"), "credit": D("1.00")})
    assert rules_of(journal(neg, both, construct=True)) == ["line.negative", "line.both_sides"]


def test_zero_line() -> None:
    e = journal(line(1, "5000", dr="1.00"), line(2, "2100", cr="1.00"), line(3, "1100"))
    assert rules_of(e) == ["line.zero"]


def test_unrounded_amount() -> None:
    e = journal(line(1, "5000", dr="1.005"), line(2, "2100", cr="1.005"))
    assert rules_of(e) == ["line.unrounded", "line.unrounded"]


def test_no_lineage_and_opt_out() -> None:
    e = journal(line(1, "5000", dr="1.00", lineage=(), lineage_count=0), line(2, "2100", cr="1.00"))
    v = validate_journal(e, ctx())
    assert [(x.rule, x.item) for x in v] == [("line.no_lineage", "journal US01-2026-03-labor_cost-0001 line 1")]
    assert validate_journal(e, ctx(require_lineage=False)) == []


def test_lineage_count_below_refs() -> None:
    e = journal(line(1, "5000", dr="1.00", lineage=(REF, REF.model_copy(update={"version": 2})), lineage_count=1),
                line(2, "2100", cr="1.00"))
    assert rules_of(e) == ["line.lineage_count"]


# --------------------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("period", "day", "rule"),
    [("2026-02", dt.date(2026, 2, 27), "period.not_open"), ("2026-09", dt.date(2026, 9, 1), "period.unknown"),
     ("2026-03", dt.date(2026, 4, 1), "period.date_outside")],
)
def test_period_rules(period: str, day: dt.date, rule: str) -> None:
    assert rules_of(journal(period=period, entry_date=day)) == [rule]


def test_locked_period() -> None:
    c = ctx()
    assert c.periods is not None
    for s in (PeriodStatus.CLOSING, PeriodStatus.CLOSED, PeriodStatus.LOCKED):
        c.periods.transition("US01", "2026-03", s)
    v = validate_journal(journal(), c)
    assert [x.rule for x in v] == ["period.not_open"] and "locked" in v[0].message


# --------------------------------------------------------------------------- currencies and FX


def test_currency_not_allowed() -> None:
    e = journal(line(1, "5000", dr="1", currency="JPY"), line(2, "2100", cr="1", currency="JPY"))
    v = validate_journal(e, ctx(functional_currencies={}))
    assert [x.rule for x in v] == ["currency.not_allowed", "currency.not_allowed"]
    assert "allowed: EUR, USD" in v[0].message


def test_currency_unknown_entity() -> None:
    assert rules_of(journal(), ctx(currencies={"UK01": ["GBP"]})) == ["currency.unknown_entity"]


def test_foreign_line_without_functional_amounts() -> None:
    e = journal(line(1, "5000", dr="1.00", currency="EUR"), line(2, "2100", cr="1.00", currency="EUR"))
    assert rules_of(e) == ["fx.missing_functional", "fx.missing_functional"]


def _fx_pair(**kw: Any) -> JournalEntry:
    fx: dict[str, Any] = dict(currency="EUR", fx_rate=D("1.1"), fx_rate_date=dt.date(2026, 3, 31),
                              functional_currency="USD")
    fx.update(kw)
    dr = {"functional_debit": D("1.10")} if "functional_debit" not in kw else {}
    cr = {"functional_credit": D("1.10")} if "functional_credit" not in kw else {}
    return journal(line(1, "5000", dr="1.00", **{**fx, **dr}), line(2, "2100", cr="1.00", **{**fx, **cr}),
                   construct=True)


def test_fx_line_rules() -> None:
    assert rules_of(_fx_pair()) == []
    assert rules_of(_fx_pair(fx_rate=None)) == ["fx.missing_rate", "fx.missing_rate"]
    assert rules_of(_fx_pair(fx_rate_date=None)) == ["fx.missing_rate", "fx.missing_rate"]
    assert rules_of(_fx_pair(fx_rate=D(0))) == ["fx.bad_rate", "fx.bad_rate"]
    assert rules_of(_fx_pair(functional_currency="GBP")) == ["fx.wrong_functional_currency"] * 2
    assert rules_of(_fx_pair(functional_debit=D("1.101"), functional_credit=D("1.101"))) == ["fx.unrounded"] * 4
    assert rules_of(_fx_pair(functional_debit=None, functional_credit=None)) == ["fx.missing_functional"] * 2


# --------------------------------------------------------------------------- accounts and dimensions


def test_account_unknown() -> None:
    v = validate_journal(journal(line(1, "5000", dr="1.00"), line(2, "2999", cr="1.00")), ctx())
    assert [(x.rule, x.item) for x in v] == [("account.unknown", "journal US01-2026-03-labor_cost-0001 line 2")]
    assert "chart of accounts" in v[0].fix


def test_entity_specific_account() -> None:
    e = journal(line(1, "5050", dr="1.00"), line(2, "2100", cr="1.00"))
    v = validate_journal(e, ctx())
    assert [x.rule for x in v] == ["account.not_for_entity"] and "UK01" in v[0].message
    uk = journal(line(1, "5050", dr="1.00", currency="GBP", dimensions={"cost_center": "CC-DEL-UK"}),
                 line(2, "2100", cr="1.00", currency="GBP", dimensions={"cost_center": "CC-DEL-UK"}),
                 id="UK01-x", legal_entity_id="UK01")
    assert validate_journal(uk, ctx()) == []


def test_account_inactive() -> None:
    assert rules_of(journal(line(1, "5900", dr="1.00"), line(2, "2100", cr="1.00"))) == ["account.inactive"]


def test_required_dimension_missing() -> None:
    e = journal(line(1, "5100", dr="1.00", dimensions={"cost_center": "CC-DEL-US"}), line(2, "2100", cr="1.00"))
    v = validate_journal(e, ctx())
    assert [x.rule for x in v] == ["dimension.required_missing"] and "'project'" in v[0].message


@pytest.mark.parametrize(
    ("value", "rule"),
    [("CC-NOPE", "dimension.unknown_value"), ("CC-OLD", "dimension.inactive"),
     ("CC-DEL-UK", "dimension.not_for_entity")],
)
def test_dimension_value_rules(value: str, rule: str) -> None:
    dims = {"cost_center": value}
    assert rules_of(journal(line(1, "5000", dr="1.00", dimensions=dims), line(2, "2100", cr="1.00", dimensions=dims))
                    ) == [rule, rule]


def test_unmanaged_dimension_only_checked_against_known_names() -> None:
    dims = {"cost_center": "CC-ADV-US", "region": "West"}
    e = journal(line(1, "5000", dr="1.00", dimensions=dims), line(2, "2100", cr="1.00", dimensions=dims))
    assert rules_of(e) == []
    assert rules_of(e, ctx(known_dimensions=["cost_center", "project"])) == ["dimension.unknown"] * 2


def test_duplicate_journal_ids() -> None:
    v = validate_journals([journal(), journal()], ctx())
    assert [x.rule for x in v] == ["journal.duplicate_id"]


def test_raise_for() -> None:
    raise_for([])
    v = validate_journal(journal(line(1, "5000", dr="1.00"), line(2, "2999", cr="1.00"), line(3, "1100")), ctx())
    with pytest.raises(DomainError) as ei:
        raise_for(v)
    assert ei.value.rule == v[0].rule and "(+1 more)" in ei.value.message


# --------------------------------------------------------------------------- invoice tax

TAX = [
    TaxCode(code="US-EXEMPT", name="exempt", jurisdiction="US", rate=D("0"), payable_account="2300"),
    TaxCode(code="UK-VAT20", name="VAT 20", jurisdiction="GB", rate=D("0.20"), payable_account="2300"),
    TaxCode(code="DE-VAT19", name="USt 19", jurisdiction="DE", rate=D("0.19"), payable_account="2300"),
    TaxCode(code="UK-VAT20-INC", name="VAT 20 incl", jurisdiction="GB", rate=D("0.20"), inclusive=True,
            payable_account="2300"),
    TaxCode(code="UK-OLD", name="old", jurisdiction="GB", rate=D("0.175"), payable_account="2300", active=False),
]
CUSTOMER = Customer(id="C-UK", name="Acme UK", legal_entity_id="UK01", currency="GBP", tax_jurisdiction="GB",
                    tax_code="UK-VAT20")


def invoice(*lines: tuple[str, str, str], **kw: Any) -> Invoice:
    ils = tuple(InvoiceLine(line_no=n, description="work", quantity=D(1), unit_price=D(net), net_amount=D(net),
                            tax_code=code, tax_amount=D(tax)) for n, (code, net, tax) in enumerate(lines, start=1))
    net = sum((ln.net_amount for ln in ils), D(0))
    tax = sum((ln.tax_amount for ln in ils), D(0))
    base: dict[str, Any] = dict(id="INV-1", legal_entity_id="UK01", customer_id="C-UK", project_id="P-1",
                                invoice_date=dt.date(2026, 3, 31), currency="GBP", lines=ils, net_total=net,
                                tax_total=tax, total=net + tax)
    base.update(kw)
    return Invoice(**base)


def tax_rules(inv: Invoice, customer: Customer = CUSTOMER) -> list[str]:
    return [v.rule for v in validate_invoice_tax(inv, customer, TAX)]


def test_valid_invoice() -> None:
    # exclusive 20% on 333.33 = 66.666 -> 66.67; inclusive: gross 120.00 -> tax 20.00
    assert tax_rules(invoice(("UK-VAT20", "333.33", "66.67"), ("UK-VAT20-INC", "100.00", "20.00"))) == []
    by_code = {t.code: t for t in TAX}
    assert validate_invoice_tax(invoice(("UK-VAT20", "1.00", "0.20")), CUSTOMER, by_code) == []


def test_tax_code_rules() -> None:
    v = validate_invoice_tax(invoice(("UK-VAT21", "10.00", "2.10")), CUSTOMER, TAX)
    assert [(x.rule, x.item) for x in v] == [("tax.unknown_code", "invoice INV-1 line 1")]
    assert tax_rules(invoice(("UK-OLD", "10.00", "1.75"))) == ["tax.inactive"]
    assert tax_rules(invoice(("DE-VAT19", "10.00", "1.90"))) == ["tax.wrong_jurisdiction"]
    assert tax_rules(invoice(("UK-VAT20", "10.00", "2.01"))) == ["tax.amount_mismatch"]
    assert tax_rules(invoice(("UK-VAT20-INC", "100.00", "19.99"))) == ["tax.amount_mismatch"]


def test_customer_rules() -> None:
    inv = invoice(("UK-VAT20", "10.00", "2.00"))
    other = CUSTOMER.model_copy(update={"id": "C-2"})
    assert tax_rules(inv, other) == ["invoice.customer_mismatch"]
    assert tax_rules(inv, CUSTOMER.model_copy(update={"legal_entity_id": "US01"})) == ["invoice.entity_mismatch"]
    assert tax_rules(inv, CUSTOMER.model_copy(update={"active": False})) == ["invoice.customer_inactive"]
    us = CUSTOMER.model_copy(update={"tax_jurisdiction": "US"})
    v = validate_invoice_tax(inv, us, TAX)
    assert [x.rule for x in v] == ["tax.wrong_jurisdiction"] and "jurisdiction US" in v[0].fix
